// Command etcd is the etcd server built from its published Go module, so
// that `make e2e` needs no download other than Go modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
