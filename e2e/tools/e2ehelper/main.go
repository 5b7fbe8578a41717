// Command e2ehelper does the parts of make e2e that a shell loop around
// kubectl would do slowly or not at all:
//
//	e2ehelper latency  -kubeconfig K -n NS -count N [-as USER] [-owner VM]  # N sequential VMI creates, timed
//	e2ehelper vms      -kubeconfig K -n NS -count N -prefix P [-delete]     # many plain VMs at once
//	e2ehelper webhook  -listen ADDR -cert C -key K                          # a second mutating webhook
//	e2ehelper stream   -kubeconfig K -n NS -rate R -owners A,B [-prefix P]  # VMI creates at R/s until SIGTERM
//	e2ehelper certmanager -kubeconfig K -n NS issue [CERT...]              # cert-manager's and cainjector's writes
//	e2ehelper race     -kubeconfig K -n NS -count N -rounds R [-workers W]  # switch runStrategy, create the VMI at once
//	e2ehelper fleet-vms|fleet-sync|fleet-relist|fleet-churn ...           # make bench-fleet (fleet.go)
//
// Everything it prints on stdout is one JSON object, for run.sh to read.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	vmGVR  = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachines"}
	vmiGVR = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"}
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: e2ehelper latency|vms|webhook [flags]")
	}
	var err error
	switch os.Args[1] {
	case "latency":
		err = latency(os.Args[2:])
	case "vms":
		err = vms(os.Args[2:])
	case "webhook":
		err = webhook(os.Args[2:])
	case "stream":
		err = stream(os.Args[2:])
	case "certmanager":
		err = certmanager(os.Args[2:])
	case "race":
		err = race(os.Args[2:])
	case "fleet-vms":
		err = fleetVMs(os.Args[2:])
	case "fleet-sync":
		err = fleetSync(os.Args[2:])
	case "fleet-relist":
		err = fleetRelist(os.Args[2:])
	case "fleet-churn":
		err = fleetChurn(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "e2ehelper:", msg)
	os.Exit(1)
}

func client(kubeconfig, as string, qps float32) (dynamic.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = qps, int(qps)
	cfg.Timeout = 30 * time.Second
	if as != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: as}
	}
	return dynamic.NewForConfig(cfg)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(v)
}

// latency creates -count VMIs one after another and reports client-side
// create latencies. With -owner, each VMI is controlled by that VM (so the
// mutating webhook has an owner to look up) and is created as -as (by
// default KubeVirt's controller, as virt-controller would).
func latency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("n", "default", "namespace")
	count := fs.Int("count", 500, "creates to time")
	warmup := fs.Int("warmup", 20, "creates before timing")
	owner := fs.String("owner", "", "VirtualMachine that controls the VMIs")
	as := fs.String("as", "system:serviceaccount:kubevirt:kubevirt-controller", "user to create as")
	prefix := fs.String("prefix", "lat", "VMI name prefix")
	samplesFile := fs.String("samples", "", "append each timed create's milliseconds to this file")
	_ = fs.Parse(args)
	ctx := context.Background()
	admin, err := client(*kubeconfig, "", 1000)
	if err != nil {
		return err
	}
	dyn, err := client(*kubeconfig, *as, 1000)
	if err != nil {
		return err
	}
	var ref []any
	if *owner != "" {
		vm, err := admin.Resource(vmGVR).Namespace(*ns).Get(ctx, *owner, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ref = []any{map[string]any{
			"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm.GetName(),
			"uid": string(vm.GetUID()), "controller": true, "blockOwnerDeletion": true,
		}}
	}
	var samples []time.Duration
	var patched int
	for i := 0; i < *warmup+*count; i++ {
		meta := map[string]any{"name": fmt.Sprintf("%s-%d", *prefix, i)}
		if ref != nil {
			meta["ownerReferences"] = ref
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta,
			"spec": map[string]any{"domain": map[string]any{"devices": map[string]any{}}},
		}}
		start := time.Now()
		got, err := dyn.Resource(vmiGVR).Namespace(*ns).Create(ctx, obj, metav1.CreateOptions{})
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("create %d: %w", i, err)
		}
		if i >= *warmup {
			samples = append(samples, took)
			if got.GetAnnotations()["runstrategy.kubevirt.io"] == "BootOnce" {
				patched++
			}
		}
	}
	if *samplesFile != "" {
		f, err := os.OpenFile(*samplesFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		for _, s := range samples {
			fmt.Fprintf(f, "%.3f\n", float64(s.Microseconds())/1000)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
	q := func(p float64) float64 {
		i := int(p*float64(len(samples))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(samples) {
			i = len(samples) - 1
		}
		return float64(samples[i].Microseconds()) / 1000
	}
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return printJSON(map[string]any{
		"count": len(samples), "stamped": patched,
		"p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": q(1.0),
		"mean_ms": float64(sum.Microseconds()) / 1000 / float64(len(samples)),
	})
}

// vms creates (or deletes) -count plain VirtualMachines named PREFIX-i,
// 16 at a time.
func vms(args []string) error {
	fs := flag.NewFlagSet("vms", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("n", "default", "namespace")
	count := fs.Int("count", 1000, "VMs")
	first := fs.Int("first", 0, "index of the first VM")
	prefix := fs.String("prefix", "vm", "name prefix")
	strategy := fs.String("run-strategy", "Always", "spec.runStrategy")
	del := fs.Bool("delete", false, "delete instead of create")
	update := fs.Bool("update", false, "update (add a label) instead of create")
	_ = fs.Parse(args)
	ctx := context.Background()
	dyn, err := client(*kubeconfig, "", 500)
	if err != nil {
		return err
	}
	res := dyn.Resource(vmGVR).Namespace(*ns)
	var failed atomic.Int64
	var firstErr atomic.Value
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("%s-%d", *prefix, i)
				var err error
				switch {
				case *del:
					err = res.Delete(ctx, name, metav1.DeleteOptions{})
				case *update:
					var vm *unstructured.Unstructured
					if vm, err = res.Get(ctx, name, metav1.GetOptions{}); err == nil {
						labels := vm.GetLabels()
						if labels == nil {
							labels = map[string]string{}
						}
						labels["e2e-touched"] = "true"
						vm.SetLabels(labels)
						_, err = res.Update(ctx, vm, metav1.UpdateOptions{})
					}
				default:
					_, err = res.Create(ctx, plainVM(name, *strategy), metav1.CreateOptions{})
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	start := time.Now()
	for i := *first; i < *first+*count; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	out := map[string]any{"count": *count, "failed": failed.Load(), "seconds": time.Since(start).Seconds()}
	if e := firstErr.Load(); e != nil {
		out["first_error"] = e
	}
	return printJSON(out)
}

func plainVM(name, strategy string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"runStrategy": strategy,
			"template": map[string]any{"spec": map[string]any{
				"domain": map[string]any{"devices": map[string]any{}, "resources": map[string]any{"requests": map[string]any{"memory": "64Mi"}}},
			}},
		},
	}}
}

// webhook serves a mutating webhook that, for VMIs labelled
// e2e.reboot.kubevirt.io/strip=true, removes the reserved annotation that
// kubevirt-reboot-webhook stamped and adds a label. Registered after ours
// with reinvocationPolicy Never, it makes the API server reinvoke ours
// (IfNeeded), which must stamp again.
func webhook(args []string) error {
	fs := flag.NewFlagSet("webhook", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9443", "address")
	cert := fs.String("cert", "", "serving certificate")
	key := fs.String("key", "", "serving key")
	_ = fs.Parse(args)
	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/calls", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]int64{"calls": calls.Load()})
	})
	mux.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		var obj struct {
			Metadata struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(review.Request.Object.Raw, &obj)
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if obj.Metadata.Labels["e2e.reboot.kubevirt.io/strip"] == "true" {
			var ops []map[string]any
			if _, ok := obj.Metadata.Annotations["runstrategy.kubevirt.io"]; ok {
				ops = append(ops, map[string]any{"op": "remove", "path": "/metadata/annotations/runstrategy.kubevirt.io"})
			}
			ops = append(ops, map[string]any{"op": "add", "path": "/metadata/labels/e2e.reboot.kubevirt.io~1touched", "value": "true"})
			patch, _ := json.Marshal(ops)
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		}
		review.Response, review.Request = resp, nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "e2ehelper webhook on https://%s\n", *listen)
	return srv.ListenAndServeTLS(*cert, *key)
}

// stream creates VMIs at -rate per second, as virt-controller would (as its
// service account, each controlled by one of -owners in turn), until SIGTERM
// or SIGINT, then waits for the creates in flight and prints what happened:
// creates, failures (with the first few errors, as the API server gave
// them), and whether each VMI was stamped as its owner's runStrategy says
// (an owner whose runStrategy is BootOnce must come back stamped, any other
// not). Scenarios run it while they roll out, delete or re-certify the
// webhook's Pods.
func stream(args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("n", "default", "namespace")
	rate := fs.Float64("rate", 50, "creates per second")
	owners := fs.String("owners", "", "comma-separated VirtualMachines that control the VMIs, in turn")
	as := fs.String("as", "system:serviceaccount:kubevirt:kubevirt-controller", "user to create as")
	prefix := fs.String("prefix", "stream", "VMI name prefix")
	_ = fs.Parse(args)
	if *rate <= 0 || *owners == "" {
		return fmt.Errorf("stream needs -rate > 0 and -owners")
	}
	ctx := context.Background()
	admin, err := client(*kubeconfig, "", 1000)
	if err != nil {
		return err
	}
	dyn, err := client(*kubeconfig, *as, 10000)
	if err != nil {
		return err
	}
	type owner struct {
		ref      []any
		bootOnce bool
	}
	var vms []owner
	for _, name := range strings.Split(*owners, ",") {
		vm, err := admin.Resource(vmGVR).Namespace(*ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		strategy, _, _ := unstructured.NestedString(vm.Object, "spec", "runStrategy")
		vms = append(vms, owner{ref: []any{map[string]any{
			"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm.GetName(),
			"uid": string(vm.GetUID()), "controller": true, "blockOwnerDeletion": true,
		}}, bootOnce: strategy == "BootOnce"})
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var (
		mu                sync.Mutex
		samples           []time.Duration
		errs              []string
		created, failed   int
		unstamped, forged int
		wg                sync.WaitGroup
	)
	one := func(i int) {
		defer wg.Done()
		o := vms[i%len(vms)]
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
			"metadata": map[string]any{"name": fmt.Sprintf("%s-%d", *prefix, i), "ownerReferences": o.ref,
				"labels": map[string]any{"e2e.reboot.kubevirt.io/stream": *prefix}},
			"spec": map[string]any{"domain": map[string]any{"devices": map[string]any{}}},
		}}
		start := time.Now()
		got, err := dyn.Resource(vmiGVR).Namespace(*ns).Create(ctx, obj, metav1.CreateOptions{})
		took := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if len(errs) < 5 {
				errs = append(errs, fmt.Sprintf("%s after %s: %v", time.Now().Format("15:04:05.000"), took.Round(time.Millisecond), err))
			}
			return
		}
		created++
		samples = append(samples, took)
		stamped := got.GetAnnotations()["runstrategy.kubevirt.io"] == "BootOnce"
		switch {
		case o.bootOnce && !stamped:
			unstamped++
		case !o.bootOnce && stamped:
			forged++
		}
	}
	began := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			wg.Wait()
			sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
			q := func(p float64) float64 {
				if len(samples) == 0 {
					return 0
				}
				k := int(p*float64(len(samples))+0.5) - 1
				k = max(0, min(k, len(samples)-1))
				return float64(samples[k].Microseconds()) / 1000
			}
			secs := time.Since(began).Seconds()
			return printJSON(map[string]any{
				"created": created, "failed": failed, "errors": errs,
				"unstamped": unstamped, "wrongly_stamped": forged,
				"seconds": secs, "rate": float64(created+failed) / secs,
				"p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": q(1.0),
			})
		case <-tick.C:
			wg.Add(1)
			go one(i)
		}
	}
}

// race does what virt-controller does when a user switches a VM's
// runStrategy and starts it: the VMI is created right after the VM update,
// from the VM as the update left it, carrying kubevirt.io/vm-generation (the
// generation of that VM) and an owner reference with its uid. Each of
// -count VMs (PREFIX-i, created as Always if missing) is switched -rounds
// times, alternately to BootOnce and back to Always, by -workers at once;
// the mutating webhook must stamp exactly the VMIs of the BootOnce switches,
// whatever its watch has delivered by then. Reports the verdicts.
func race(args []string) error {
	fs := flag.NewFlagSet("race", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	ns := fs.String("n", "default", "namespace")
	count := fs.Int("count", 50, "VMs")
	rounds := fs.Int("rounds", 4, "switches per VM (BootOnce, Always, BootOnce, ...)")
	workers := fs.Int("workers", 25, "VMs switched at once")
	prefix := fs.String("prefix", "race", "VM name prefix")
	as := fs.String("as", "system:serviceaccount:kubevirt:kubevirt-controller", "user creating the VMIs")
	_ = fs.Parse(args)
	ctx := context.Background()
	admin, err := client(*kubeconfig, "", 1000)
	if err != nil {
		return err
	}
	controller, err := client(*kubeconfig, *as, 1000)
	if err != nil {
		return err
	}
	vms := admin.Resource(vmGVR).Namespace(*ns)
	vmis := controller.Resource(vmiGVR).Namespace(*ns)
	for i := 0; i < *count; i++ {
		name := fmt.Sprintf("%s-%d", *prefix, i)
		if _, err := vms.Create(ctx, plainVM(name, "Always"), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create VM %s: %w", name, err)
		}
	}
	var mu sync.Mutex
	out := map[string]int{"creates": 0, "stamped": 0, "wrong_unstamped": 0, "wrong_stamped": 0}
	var firstErr error
	start := time.Now()
	for r := 0; r < *rounds; r++ {
		strategy := "BootOnce"
		if r%2 == 1 {
			strategy = "Always"
		}
		work := make(chan int)
		var wg sync.WaitGroup
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					stamped, err := switchAndStart(ctx, vms, vmis, fmt.Sprintf("%s-%d", *prefix, i), r, strategy)
					mu.Lock()
					switch {
					case err != nil:
						if firstErr == nil {
							firstErr = err
						}
					case stamped && strategy != "BootOnce":
						out["wrong_stamped"]++
					case !stamped && strategy == "BootOnce":
						out["wrong_unstamped"]++
					}
					if err == nil {
						out["creates"]++
						if stamped {
							out["stamped"]++
						}
					}
					mu.Unlock()
				}
			}()
		}
		for i := 0; i < *count; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
	}
	return printJSON(map[string]any{
		"creates": out["creates"], "stamped": out["stamped"],
		"wrong":           out["wrong_unstamped"] + out["wrong_stamped"],
		"wrong_unstamped": out["wrong_unstamped"], "wrong_stamped": out["wrong_stamped"],
		"seconds": time.Since(start).Seconds(),
	})
}

// switchAndStart sets VM name's runStrategy and at once creates its VMI
// NAME-ROUND as virt-controller would; whether the stored VMI is stamped.
func switchAndStart(ctx context.Context, vms, vmis dynamic.ResourceInterface, name string, round int, strategy string) (bool, error) {
	patch := fmt.Sprintf(`{"spec":{"runStrategy":%q}}`, strategy)
	vm, err := vms.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return false, fmt.Errorf("switch %s to %s: %w", name, strategy, err)
	}
	vmi := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
		"metadata": map[string]any{
			"name":        fmt.Sprintf("%s-%d", name, round),
			"labels":      map[string]any{"e2e.reboot.kubevirt.io/test": "race"},
			"annotations": map[string]any{"kubevirt.io/vm-generation": strconv.FormatInt(vm.GetGeneration(), 10)},
			"ownerReferences": []any{map[string]any{
				"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
				"uid": string(vm.GetUID()), "controller": true, "blockOwnerDeletion": true,
			}},
		},
		"spec": map[string]any{"domain": map[string]any{"devices": map[string]any{}}},
	}}
	got, err := vmis.Create(ctx, vmi, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create the VMI of %s: %w", name, err)
	}
	return got.GetAnnotations()["runstrategy.kubevirt.io"] == "BootOnce", nil
}
