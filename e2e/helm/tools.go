//go:build tools

// Package tools pins the Helm release that the chart tests and make e2e run,
// built from its published module (see Makefile target `helm`).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
