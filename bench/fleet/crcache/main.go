// Command crcache is make bench-fleet's second anchor: controller-runtime's
// cache of VirtualMachines with a transform that keeps only what the webhook
// keeps (namespace, name, uid, resourceVersion, spec.runStrategy and the
// reserved annotation), as a Go webhook would cache them. The informer lists
// and watches as client-go's reflector does by default.
//
// It serves on -listen (plain HTTP) /readyz (200 once the cache synced) and
// /metrics with fleet_anchor_resource_version (the newest resourceVersion of
// an object its event handler has seen: the store has it then) and
// fleet_anchor_objects.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const reserved = "runstrategy.kubevirt.io"

var vmGVK = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachine"}

// keep is the transform: a new object with only what the webhook decides on.
func keep(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	meta := map[string]any{
		"name":            u.GetName(),
		"namespace":       u.GetNamespace(),
		"uid":             string(u.GetUID()),
		"resourceVersion": u.GetResourceVersion(),
	}
	if v, ok := u.GetAnnotations()[reserved]; ok {
		meta["annotations"] = map[string]any{reserved: v}
	}
	lean := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "metadata": meta}
	if rs, ok, _ := unstructured.NestedString(u.Object, "spec", "runStrategy"); ok {
		lean["spec"] = map[string]any{"runStrategy": rs}
	}
	return &unstructured.Unstructured{Object: lean}, nil
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig")
	listen := flag.String("listen", "127.0.0.1:9091", "address for /readyz and /metrics")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	vm := &unstructured.Unstructured{}
	vm.SetGroupVersionKind(vmGVK)
	c, err := cache.New(cfg, cache.Options{
		Scheme:   runtime.NewScheme(),
		ByObject: map[client.Object]cache.ByObject{vm: {Transform: keep}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	informer, err := c.GetInformer(ctx, vm)
	if err != nil {
		log.Fatal(err)
	}
	var version, objects atomic.Int64
	seen := func(obj any, delta int64) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			if v, err := strconv.ParseInt(u.GetResourceVersion(), 10, 64); err == nil {
				for old := version.Load(); v > old && !version.CompareAndSwap(old, v); old = version.Load() {
				}
			}
		}
		objects.Add(delta)
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { seen(obj, 1) },
		UpdateFunc: func(_, obj any) { seen(obj, 0) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			seen(obj, -1)
		},
	}); err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			log.Fatal(err)
		}
	}()
	var synced atomic.Bool
	go func() {
		if c.WaitForCacheSync(ctx) {
			synced.Store(true)
		}
	}()
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !synced.Load() {
			http.Error(w, "syncing", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "fleet_anchor_resource_version %d\nfleet_anchor_objects %d\n", version.Load(), objects.Load())
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
