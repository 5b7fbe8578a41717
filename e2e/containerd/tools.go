//go:build tools

// Package tools pins containerd 2.x for make e2e's E2E_CONTAINERD=module:
// the daemon, its runc shim and ctr, built by e2e/build.sh from this
// module instead of Debian's containerd 1.6 (e2e/README.md).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
