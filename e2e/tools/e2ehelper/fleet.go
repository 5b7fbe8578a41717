// The fleet benchmark's measurements (make bench-fleet, bench/fleet/run.sh):
//
//	e2ehelper fleet-vms    -kubeconfig K -count N -namespaces M      # N realistic VMs over M namespaces
//	e2ehelper fleet-sync   -name A -ready URL [flags] -- CMD ARG...  # start an arm, time its initial sync
//	e2ehelper fleet-relist -name A -pid P -rv URL -marker RV         # resume a stopped arm, time its relist
//	e2ehelper fleet-churn  -kubeconfig K -rate R -seconds S [flags]  # status patches; CPU, RSS, lag per arm
//
// An "arm" is one cache under test: the webhook in one list mode, or an
// anchor (kube-runtime's reflector, controller-runtime's cache). Every arm
// serves Prometheus text with a gauge of the newest resourceVersion its
// cache holds (-rv-metric), so a write's resourceVersion tells when each
// cache has it. Figures come from /proc (utime+stime, VmRSS, VmHWM), read
// by this process, which runs as root in the same namespaces.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ---------------------------------------------------------------- /proc ---

var clockTicks = 100.0 // USER_HZ; Linux on amd64 and arm64

// procCPU is utime+stime of pid in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks, nil
}

// procMem is VmRSS and VmHWM of pid in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// resetPeak makes VmHWM equal to the current VmRSS (Linux clear_refs "5").
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// -------------------------------------------------------- the API server ---

// apiServer reads kube-apiserver's figures from /proc (CPU, RSS); its
// /debug/pprof (with --profiling) collects its garbage between arms.
type apiServer struct {
	pid  int
	url  string
	http *http.Client
}

func newAPIServer(kubeconfig string, pid int) (*apiServer, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &apiServer{pid: pid, url: strings.TrimRight(cfg.Host, "/"), http: hc}, nil
}

// settle collects the API server's garbage (pprof's heap profile runs a GC
// first, with --profiling) and waits a moment, so the arm measured next does
// not pay for the one before.
func (a *apiServer) settle(wait time.Duration) {
	if resp, err := a.http.Get(a.url + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(wait)
}

// apiWindow is what the API server spent between begin and end.
type apiWindow struct {
	a    *apiServer
	cpu0 float64
	rss0 int64
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func (a *apiServer) begin() (*apiWindow, error) {
	w := &apiWindow{a: a, stop: make(chan struct{}), done: make(chan struct{})}
	// go_memstats_alloc_bytes_total from /metrics is not used: in runs of
	// 2026-12-03 it grew by 428-433 MiB over every arm's sync window, each
	// arm and list mode alike, so it measured something other than the list.
	err := resetPeak(a.pid)
	if err != nil {
		return nil, err
	}
	if w.rss0, _, err = procMem(a.pid); err != nil {
		return nil, err
	}
	if w.cpu0, err = procCPU(a.pid); err != nil {
		return nil, err
	}
	go func() { // VmHWM is the peak; sampling also catches a restart's lower one
		defer close(w.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if _, hwm, err := procMem(a.pid); err == nil && hwm > w.peak.Load() {
				w.peak.Store(hwm)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w, nil
}

func (w *apiWindow) end() map[string]any {
	close(w.stop)
	<-w.done
	cpu, _ := procCPU(w.a.pid)
	_, hwm, _ := procMem(w.a.pid)
	if hwm < w.peak.Load() {
		hwm = w.peak.Load()
	}
	return map[string]any{
		"apiserver_rss_before_mib": mib(w.rss0),
		"apiserver_peak_rss_mib":   mib(hwm),
		"apiserver_growth_mib":     mib(hwm - w.rss0),
		"apiserver_cpu_s":          round3(cpu - w.cpu0),
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// scrape reads one sample (summed over its label sets) from Prometheus text.
func scrape(hc *http.Client, url, name string) (float64, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(name)) {
			continue
		}
		rest := line[len(name):]
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(string(line))
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s has no %s", url, name)
	}
	return sum, sc.Err()
}

var plainHTTP = &http.Client{Timeout: 2 * time.Second}

// ------------------------------------------------------------ fleet-vms ---

// fleetVM is a VirtualMachine as a real cluster holds one (the JSON of
// tests/support/fake_api.rs realistic_vm without its status, which the
// status subresource drops on create; the churn writes one): labels,
// kubectl's last-applied annotation, a template with disks, interfaces,
// networks, cloud-init userData and a DataVolume template. The API server
// adds managedFields.
func fleetVM(ns, name, runStrategy string) []byte {
	userData := fmt.Sprintf("#cloud-config\nhostname: %s\nuser: fedora\npassword: changeme\nchpasswd: { expire: False }\n"+
		"ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2b3Zxd1pTa0l4bUZ4R2ZkV3Y0 ops@example.com\n"+
		"packages:\n  - qemu-guest-agent\n  - cloud-utils-growpart\nruncmd:\n  - [ systemctl, enable, --now, qemu-guest-agent ]\n", name)
	labels := map[string]any{"app": name, "app.kubernetes.io/part-of": "fleet", "tier": "backend", "team": "platform", "kubevirt.io/os": "fedora"}
	applied, _ := json.Marshal(map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
		"spec": map[string]any{"runStrategy": runStrategy, "template": map[string]any{"spec": map[string]any{
			"domain": map[string]any{"cpu": map[string]any{"cores": 2}, "memory": map[string]any{"guest": "4Gi"}}}}},
	})
	vm := map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{
			"name": name, "namespace": ns, "labels": labels,
			"annotations": map[string]any{
				"kubectl.kubernetes.io/last-applied-configuration": string(applied),
				"kubevirt.io/latest-observed-api-version":          "v1",
				"kubevirt.io/storage-observed-api-version":         "v1",
				"description": "fleet worker",
			},
			"finalizers": []any{"kubevirt.io/virtualMachineControllerFinalize"},
		},
		"spec": map[string]any{
			"runStrategy": runStrategy,
			"dataVolumeTemplates": []any{map[string]any{
				"metadata": map[string]any{"name": name + "-root"},
				"spec": map[string]any{
					"sourceRef": map[string]any{"kind": "DataSource", "name": "fedora", "namespace": "kubevirt-os-images"},
					"storage":   map[string]any{"resources": map[string]any{"requests": map[string]any{"storage": "30Gi"}}},
				},
			}},
			"template": map[string]any{
				"metadata": map[string]any{
					"labels":      map[string]any{"kubevirt.io/vm": name, "kubevirt.io/domain": name},
					"annotations": map[string]any{"vm.kubevirt.io/flavor": "small", "vm.kubevirt.io/os": "fedora"},
				},
				"spec": map[string]any{
					"domain": map[string]any{
						"cpu":      map[string]any{"cores": 2, "sockets": 1, "threads": 1},
						"memory":   map[string]any{"guest": "4Gi"},
						"machine":  map[string]any{"type": "q35"},
						"features": map[string]any{"acpi": map[string]any{}, "smm": map[string]any{"enabled": true}},
						"firmware": map[string]any{"bootloader": map[string]any{"efi": map[string]any{"secureBoot": false}}},
						"devices": map[string]any{
							"disks": []any{
								map[string]any{"name": "rootdisk", "disk": map[string]any{"bus": "virtio"}, "bootOrder": 1},
								map[string]any{"name": "datadisk", "disk": map[string]any{"bus": "virtio"}},
								map[string]any{"name": "cloudinitdisk", "disk": map[string]any{"bus": "virtio"}},
							},
							"interfaces": []any{map[string]any{"name": "default", "masquerade": map[string]any{}, "model": "virtio"}},
							"rng":        map[string]any{},
						},
						"resources": map[string]any{"requests": map[string]any{"memory": "4Gi", "cpu": "500m"}, "limits": map[string]any{"memory": "4Gi"}},
					},
					"networks":                      []any{map[string]any{"name": "default", "pod": map[string]any{}}},
					"terminationGracePeriodSeconds": 180,
					"evictionStrategy":              "LiveMigrate",
					"volumes": []any{
						map[string]any{"name": "rootdisk", "dataVolume": map[string]any{"name": name + "-root"}},
						map[string]any{"name": "datadisk", "persistentVolumeClaim": map[string]any{"claimName": name + "-data"}},
						map[string]any{"name": "cloudinitdisk", "cloudInitNoCloud": map[string]any{"userData": userData}},
					},
				},
			},
		},
	}
	b, _ := json.Marshal(vm)
	return b
}

// vmStatus is the status virt-controller writes for a VM (about 900 bytes);
// seq changes every write, as a VMI's phases do.
func vmStatus(seq int64) []byte {
	phase := [...]string{"Running", "Migrating", "Running", "Stopping", "Stopped", "Starting"}[seq%6]
	ready := phase == "Running"
	now := time.Now().UTC().Format(time.RFC3339)
	b, _ := json.Marshal(map[string]any{"status": map[string]any{
		"created": true, "ready": ready, "printableStatus": phase,
		"desiredGeneration": 3, "observedGeneration": 3, "runStrategy": "Always",
		"conditions": []any{
			map[string]any{"type": "Ready", "status": map[bool]string{true: "True", false: "False"}[ready], "lastProbeTime": nil, "lastTransitionTime": now},
			map[string]any{"type": "LiveMigratable", "status": "True", "lastProbeTime": nil, "lastTransitionTime": nil},
			map[string]any{"type": "AgentConnected", "status": "True", "lastProbeTime": nil, "lastTransitionTime": now},
		},
		"volumeSnapshotStatuses": []any{
			map[string]any{"name": "rootdisk", "enabled": true},
			map[string]any{"name": "datadisk", "enabled": true},
			map[string]any{"name": "cloudinitdisk", "enabled": false, "reason": "Snapshot is not supported for this volumeSource type [cloudinitdisk]"},
		},
		"printableStatusSeq": seq,
	}})
	return b
}

// fleetNamespace and fleetName place VM i: the namespaces in turn.
func fleetNamespace(i, namespaces int) string { return fmt.Sprintf("fleet-%03d", i%namespaces) }
func fleetName(i int) string                  { return fmt.Sprintf("vm-%06d", i) }

// restFor is an HTTP client that authenticates as the kubeconfig says, with
// the API server's base URL.
func restFor(kubeconfig string) (*http.Client, string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, "", err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, "", err
	}
	hc.Timeout = 60 * time.Second
	return hc, strings.TrimRight(cfg.Host, "/"), nil
}

// send makes one request and reads the whole answer; a status other than
// 2xx is an error with the answer's message.
func send(hc *http.Client, method, url, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		msg := string(out)
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, msg)
	}
	return out, nil
}

// fleetVMs creates -count VMs (vm-NNNNNN, from -first) over -namespaces
// namespaces (fleet-NNN, created when missing), -workers at a time over
// HTTP/2, every tenth with runStrategy BootOnce.
func fleetVMs(args []string) error {
	fs := flag.NewFlagSet("fleet-vms", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	count := fs.Int("count", 100000, "VMs")
	first := fs.Int("first", 0, "index of the first VM")
	namespaces := fs.Int("namespaces", 100, "namespaces")
	workers := fs.Int("workers", 48, "creates in flight")
	_ = fs.Parse(args)
	hc, base, err := restFor(*kubeconfig)
	if err != nil {
		return err
	}
	for n := 0; n < *namespaces; n++ {
		body, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": fleetNamespace(n, *namespaces)}})
		if _, err := send(hc, "POST", base+"/api/v1/namespaces", "application/json", body); err != nil && !strings.Contains(err.Error(), "409") {
			return err
		}
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	var bytesSent atomic.Int64
	work := make(chan int, *workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ns := fleetNamespace(i, *namespaces)
				strategy := "Always"
				if i%10 == 0 {
					strategy = "BootOnce"
				}
				body := fleetVM(ns, fleetName(i), strategy)
				bytesSent.Add(int64(len(body)))
				url := fmt.Sprintf("%s/apis/kubevirt.io/v1/namespaces/%s/virtualmachines", base, ns)
				var err error
				for try := 0; try < 5; try++ { // 429s while the API server is busy
					if _, err = send(hc, "POST", url, "application/json", body); err == nil || !strings.Contains(err.Error(), "429") {
						break
					}
					time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
				}
				if err != nil && !strings.Contains(err.Error(), "409") {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	for i := *first; i < *first+*count; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	secs := time.Since(start).Seconds()
	out := map[string]any{
		"count": *count, "failed": failed.Load(), "seconds": round3(secs),
		"per_second": math.Round(float64(*count) / secs), "bytes_each": bytesSent.Load() / int64(max(*count, 1)),
	}
	if e := firstErr.Load(); e != nil {
		out["first_error"] = e
	}
	return printJSON(out)
}

// ----------------------------------------------------------- fleet-sync ---

// fleetSync starts an arm (the command after --) in the background, with
// its pid in -pidfile (so the caller's clean-up stops it) and its output in
// -log, and reports how long until -ready answers 200, its peak RSS while
// syncing and its RSS -settle later, and what the API server spent
// meanwhile. The arm keeps running.
func fleetSync(args []string) error {
	fs := flag.NewFlagSet("fleet-sync", flag.ExitOnError)
	name := fs.String("name", "", "arm")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig (the API server's /metrics)")
	apiPid := fs.Int("apiserver-pid", 0, "kube-apiserver's pid")
	ready := fs.String("ready", "", "URL that answers 200 once the arm's cache is synced")
	pidfile := fs.String("pidfile", "", "where to write the arm's pid")
	logfile := fs.String("log", "", "the arm's output")
	settle := fs.Duration("settle", 10*time.Second, "how long after ready the settled RSS is read")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	_ = fs.Parse(args)
	cmdline := fs.Args()
	if len(cmdline) == 0 || *ready == "" || *apiPid == 0 {
		return errors.New("fleet-sync needs -ready, -apiserver-pid and a command after --")
	}
	api, err := newAPIServer(*kubeconfig, *apiPid)
	if err != nil {
		return err
	}
	api.settle(3 * time.Second)
	win, err := api.begin()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(*logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(cmdline[0], cmdline[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(*timeout)
	for {
		if resp, err := plainHTTP.Get(*ready); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited before it was ready: %v (see %s)", *name, err, *logfile)
		case <-deadline:
			return fmt.Errorf("%s not ready after %s", *name, *timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Since(started)
	apiFigures := win.end()
	cpu, _ := procCPU(pid)
	_, peak, _ := procMem(pid)
	time.Sleep(*settle)
	settled, hwm, _ := procMem(pid)
	out := map[string]any{
		"arm": *name, "ready_s": round3(took.Seconds()), "cpu_s": round3(cpu),
		"peak_rss_mib": mib(max(peak, 0)), "peak_rss_after_settle_mib": mib(hwm), "settled_rss_mib": mib(settled), "pid": pid,
	}
	for k, v := range apiFigures {
		out[k] = v
	}
	return printJSON(out)
}

// --------------------------------------------------------- fleet-relist ---

// fleetRelist resumes a stopped arm (SIGCONT) whose watch the API server's
// restart over a compacted etcd has broken, and reports how long until its
// cache holds -marker (the resourceVersion of a write made before the
// compaction, which only a relist brings), its peak RSS meanwhile and what
// the API server spent.
func fleetRelist(args []string) error {
	fs := flag.NewFlagSet("fleet-relist", flag.ExitOnError)
	name := fs.String("name", "", "arm")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	apiPid := fs.Int("apiserver-pid", 0, "kube-apiserver's pid")
	pid := fs.Int("pid", 0, "the arm's pid")
	rvURL := fs.String("rv", "", "the arm's metrics URL")
	rvMetric := fs.String("rv-metric", "", "its gauge of the newest resourceVersion held")
	marker := fs.Float64("marker", 0, "resourceVersion the relist must bring")
	settle := fs.Duration("settle", 10*time.Second, "how long after the relist the settled RSS is read")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	_ = fs.Parse(args)
	api, err := newAPIServer(*kubeconfig, *apiPid)
	if err != nil {
		return err
	}
	api.settle(3 * time.Second)
	if err := resetPeak(*pid); err != nil {
		return err
	}
	rss0, _, _ := procMem(*pid)
	cpu0, _ := procCPU(*pid)
	win, err := api.begin()
	if err != nil {
		return err
	}
	started := time.Now()
	if err := syscall.Kill(*pid, syscall.SIGCONT); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for {
		if v, err := scrape(plainHTTP, *rvURL, *rvMetric); err == nil && v >= *marker {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no relist to resourceVersion %.0f after %s", *name, *marker, *timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(started)
	apiFigures := win.end()
	cpu, _ := procCPU(*pid)
	_, peak, _ := procMem(*pid)
	time.Sleep(*settle)
	settled, _, _ := procMem(*pid)
	out := map[string]any{
		"arm": *name, "relisted_s": round3(took.Seconds()), "cpu_s": round3(cpu - cpu0),
		"rss_before_mib": mib(rss0), "peak_rss_mib": mib(peak), "settled_rss_mib": mib(settled),
	}
	for k, v := range apiFigures {
		out[k] = v
	}
	return printJSON(out)
}

// ---------------------------------------------------------- fleet-churn ---

// arm is one cache under churn: its pid and where its resourceVersion is read.
type arm struct {
	name, url, metric string
	pid               int
}

// parseArms reads NAME=PID=URL=METRIC,...
func parseArms(s string) ([]arm, error) {
	var arms []arm
	for _, a := range strings.Split(s, ",") {
		f := strings.SplitN(a, "=", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("arm %q: want NAME=PID=URL=METRIC", a)
		}
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, err
		}
		arms = append(arms, arm{name: f[0], pid: pid, url: f[2], metric: f[3]})
	}
	return arms, nil
}

func quantile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(sorted)))) - 1
	k = max(0, min(k, len(sorted)-1))
	return sorted[k]
}

// fleetChurn patches the status of the fleet's VMs (-rate per second, 0 =
// as fast as -workers in flight get answers) for -seconds, and reads each
// arm's RSS every second. The window has two parts:
//   - the first (-cpu-part of it) has nothing but the patches: each arm's
//     CPU (utime+stime) over it per patch accepted is its cost per event;
//   - in the second, every -probe, the newest patch's resourceVersion is
//     taken and each arm polled every 5 ms until its cache holds it (the
//     watch lag); VMIs are created at -vmi-rate through the API server
//     (owned by the BootOnce VM -vmi-owner, as virt-controller does), which
//     our webhook mutates, each timed and its stamp checked; and, with
//     -mutate, the same VMI's AdmissionReview is posted straight to our
//     webhook and its answer timed. Those cost our webhook CPU the anchors
//     do not spend, hence apart.
//
// With -seconds 0 nothing is patched: the VMI figures at rest.
func fleetChurn(args []string) error {
	fs := flag.NewFlagSet("fleet-churn", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	rate := fs.Float64("rate", 100, "status patches per second; 0: as many as the API server takes")
	seconds := fs.Float64("seconds", 60, "how long")
	workers := fs.Int("workers", 64, "patches in flight at most")
	count := fs.Int("count", 100000, "VMs in the fleet")
	namespaces := fs.Int("namespaces", 100, "their namespaces")
	armsFlag := fs.String("arms", "", "NAME=PID=URL=METRIC,...")
	probe := fs.Duration("probe", 250*time.Millisecond, "how often the watch lag is probed")
	vmiRate := fs.Float64("vmi-rate", 10, "VMI creates per second through the API server")
	vmiOwner := fs.String("vmi-owner", "", "NAMESPACE/NAME of the BootOnce VM that owns them")
	vmiAs := fs.String("as", "system:serviceaccount:kubevirt:kubevirt-controller", "VMI creates as")
	vmiPrefix := fs.String("vmi-prefix", "churn", "VMI name prefix")
	mutateURL := fs.String("mutate", "", "our webhook's /mutate URL (HTTPS, its CA in -mutate-ca)")
	mutateCA := fs.String("mutate-ca", "", "CA of our webhook's serving certificate")
	vmiSeconds := fs.Float64("vmi-seconds", 0, "with -seconds 0: how long the VMI creates run")
	cpuPart := fs.Float64("cpu-part", 0.5, "the share of the window that measures CPU per event, with patches only")
	others := fs.String("pids", "", "NAME=PID,... of other processes whose CPU to report (the API server, etcd)")
	_ = fs.Parse(args)
	arms, err := parseArms(*armsFlag)
	if err != nil && *armsFlag != "" {
		return err
	}
	hc, base, err := restFor(*kubeconfig)
	if err != nil {
		return err
	}
	window := time.Duration(*seconds * float64(time.Second))
	if window == 0 {
		window = time.Duration(*vmiSeconds * float64(time.Second))
	}
	patching := *seconds > 0
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()

	type armStats struct {
		cpu0    float64
		rss     []float64
		lags    []float64
		missed  int
		lastRV  float64
		rvError string
	}
	stats := make([]*armStats, len(arms))
	for i, a := range arms {
		cpu, err := procCPU(a.pid)
		if err != nil {
			return fmt.Errorf("arm %s: %w", a.name, err)
		}
		rss, _, _ := procMem(a.pid)
		stats[i] = &armStats{cpu0: cpu, rss: []float64{mib(rss)}}
	}
	otherCPU := map[string]float64{}
	otherPid := map[string]int{}
	if *others != "" {
		for _, o := range strings.Split(*others, ",") {
			name, pid, _ := strings.Cut(o, "=")
			n, err := strconv.Atoi(pid)
			if err != nil {
				return fmt.Errorf("-pids %q: %w", o, err)
			}
			otherPid[name] = n
			otherCPU[name], _ = procCPU(n)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	// Closed when the second part begins; cpuMid and patchedMid are read then.
	second := make(chan struct{})
	cpuMid := make([]float64, len(arms))
	var patchedMid int64

	// The patches.
	var patched, patchFailed atomic.Int64
	var newestRV atomic.Int64 // newest patch's resourceVersion
	var newestAt atomic.Int64 // and when its answer came (unix ns)
	var firstPatchErr atomic.Value
	started := time.Now()
	if patching {
		work := make(chan int64, *workers)
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := range work {
					i := int(seq % int64(*count))
					url := fmt.Sprintf("%s/apis/kubevirt.io/v1/namespaces/%s/virtualmachines/%s/status", base, fleetNamespace(i, *namespaces), fleetName(i))
					out, err := send(hc, "PATCH", url, "application/merge-patch+json", vmStatus(seq))
					if err != nil {
						if ctx.Err() == nil {
							patchFailed.Add(1)
							firstPatchErr.CompareAndSwap(nil, err.Error())
						}
						continue
					}
					patched.Add(1)
					var meta struct {
						Metadata struct {
							ResourceVersion string `json:"resourceVersion"`
						} `json:"metadata"`
					}
					if json.Unmarshal(out, &meta) == nil {
						if rv, err := strconv.ParseInt(meta.Metadata.ResourceVersion, 10, 64); err == nil {
							for {
								old := newestRV.Load()
								if rv <= old || newestRV.CompareAndSwap(old, rv) {
									if rv > old {
										newestAt.Store(time.Now().UnixNano())
									}
									break
								}
							}
						}
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(work)
			var seq int64 = time.Now().UnixNano() % 1000
			if *rate <= 0 {
				for ctx.Err() == nil {
					select {
					case work <- seq:
						seq++
					case <-ctx.Done():
					}
				}
				return
			}
			interval := time.Duration(float64(time.Second) / *rate)
			next := time.Now()
			for ctx.Err() == nil {
				select {
				case work <- seq: // waits when -workers are all busy: the rate is then what the API server takes
					seq++
				case <-ctx.Done():
					return
				}
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
					}
				}
			}
		}()
	}

	split := time.Duration(float64(window) * *cpuPart)
	if !patching {
		split = 0
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-time.After(split):
		case <-ctx.Done():
		}
		for i, a := range arms {
			cpuMid[i], _ = procCPU(a.pid)
		}
		patchedMid = patched.Load()
		close(second)
	}()

	// RSS every second.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				mu.Lock()
				for i, a := range arms {
					if rss, _, err := procMem(a.pid); err == nil {
						stats[i].rss = append(stats[i].rss, mib(rss))
					}
				}
				mu.Unlock()
			}
		}
	}()

	// Watch lag probes.
	if patching && len(arms) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-second
			t := time.NewTicker(*probe)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				target, at := float64(newestRV.Load()), newestAt.Load()
				if target == 0 {
					continue
				}
				var pw sync.WaitGroup
				for i, a := range arms {
					pw.Add(1)
					go func(i int, a arm) {
						defer pw.Done()
						limit := time.Now().Add(5 * time.Second)
						for time.Now().Before(limit) {
							v, err := scrape(plainHTTP, a.url, a.metric)
							if err == nil && v >= target {
								lag := float64(time.Now().UnixNano()-at) / 1e6
								mu.Lock()
								stats[i].lags = append(stats[i].lags, lag)
								stats[i].lastRV = v
								mu.Unlock()
								return
							}
							if err != nil {
								mu.Lock()
								stats[i].rvError = err.Error()
								mu.Unlock()
							}
							time.Sleep(5 * time.Millisecond)
						}
						mu.Lock()
						stats[i].missed++
						mu.Unlock()
					}(i, a)
				}
				pw.Wait()
			}
		}()
	}

	// VMI creates through the API server, and straight to /mutate.
	var creates, mutates latencies
	if *vmiOwner != "" && *vmiRate > 0 {
		ns, owner, ok := strings.Cut(*vmiOwner, "/")
		if !ok {
			return fmt.Errorf("-vmi-owner wants NAMESPACE/NAME")
		}
		ownerJSON, err := send(hc, "GET", fmt.Sprintf("%s/apis/kubevirt.io/v1/namespaces/%s/virtualmachines/%s", base, ns, owner), "", nil)
		if err != nil {
			return err
		}
		var ownerVM struct {
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(ownerJSON, &ownerVM)
		asClient, err := impersonating(*kubeconfig, *vmiAs)
		if err != nil {
			return err
		}
		var mutateClient *http.Client
		if *mutateURL != "" {
			mutateClient, err = tlsClient(*mutateCA)
			if err != nil {
				return err
			}
		}
		interval := time.Duration(float64(time.Second) / *vmiRate)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-second
			t := time.NewTicker(interval)
			defer t.Stop()
			var inflight sync.WaitGroup
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					inflight.Wait()
					return
				case <-t.C:
				}
				inflight.Add(1)
				go func(n int) {
					defer inflight.Done()
					name := fmt.Sprintf("%s-%d-%d", *vmiPrefix, time.Now().Unix()%100000, n)
					vmi := vmiJSON(ns, name, owner, ownerVM.Metadata.UID)
					t0 := time.Now()
					out, err := send(asClient, "POST", fmt.Sprintf("%s/apis/kubevirt.io/v1/namespaces/%s/virtualmachineinstances", base, ns), "application/json", vmi)
					creates.add(time.Since(t0), err, err == nil && bytes.Contains(out, []byte(`"runstrategy.kubevirt.io":"BootOnce"`)))
					if mutateClient != nil {
						review := reviewJSON(ns, name, owner, ownerVM.Metadata.UID, n)
						t0 := time.Now()
						out, err := send(mutateClient, "POST", *mutateURL, "application/json", review)
						mutates.add(time.Since(t0), err, err == nil && bytes.Contains(out, []byte(`"patch"`)))
					}
				}(n)
			}
		}()
	}

	<-ctx.Done()
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	out := map[string]any{
		"rate_asked": *rate, "seconds": round3(elapsed),
		"patched": patched.Load(), "patch_failed": patchFailed.Load(),
		"patches_per_second": math.Round(float64(patched.Load()) / elapsed),
		"patched_first_part": patchedMid, "first_part_s": round3(split.Seconds()),
	}
	if e := firstPatchErr.Load(); e != nil {
		out["first_patch_error"] = e
	}
	for name, pid := range otherPid {
		cpu, _ := procCPU(pid)
		out[name+"_cpu_s"] = round3(cpu - otherCPU[name])
	}
	armOut := map[string]any{}
	for i, a := range arms {
		s := stats[i]
		cpu, _ := procCPU(a.pid)
		rss, _, _ := procMem(a.pid)
		s.rss = append(s.rss, mib(rss))
		sort.Float64s(s.lags)
		lo, hi := s.rss[0], s.rss[0]
		for _, r := range s.rss {
			lo, hi = math.Min(lo, r), math.Max(hi, r)
		}
		o := map[string]any{
			"cpu_s": round3(cpuMid[i] - s.cpu0), "cpu_s_second_part": round3(cpu - cpuMid[i]),
			"rss_first_mib": s.rss[0], "rss_last_mib": s.rss[len(s.rss)-1],
			"rss_min_mib": lo, "rss_max_mib": hi, "rss_mib": s.rss,
			"lag_probes": len(s.lags), "lag_missed": s.missed,
			"lag_p50_ms": round3(quantile(s.lags, 0.5)), "lag_p99_ms": round3(quantile(s.lags, 0.99)), "lag_max_ms": round3(quantile(s.lags, 1)),
		}
		if patchedMid > 0 {
			o["cpu_ms_per_1000_events"] = round3((cpuMid[i] - s.cpu0) * 1e6 / float64(patchedMid))
		}
		if s.rvError != "" && len(s.lags) == 0 {
			o["rv_error"] = s.rvError
		}
		armOut[a.name] = o
	}
	out["arms"] = armOut
	if creates.n() > 0 {
		out["vmi_create"] = creates.summary()
	}
	if mutates.n() > 0 {
		out["mutate"] = mutates.summary()
	}
	return printJSON(out)
}

// latencies collects timings and failures, safe for concurrent use.
type latencies struct {
	mu       sync.Mutex
	ms       []float64
	failed   int
	unstamp  int
	firstErr string
}

func (l *latencies) add(d time.Duration, err error, stamped bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed++
		if l.firstErr == "" {
			l.firstErr = err.Error()
		}
		return
	}
	l.ms = append(l.ms, float64(d.Microseconds())/1000)
	if !stamped {
		l.unstamp++
	}
}

func (l *latencies) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ms) + l.failed
}

func (l *latencies) summary() map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Float64s(l.ms)
	out := map[string]any{
		"count": len(l.ms), "failed": l.failed, "unstamped": l.unstamp,
		"p50_ms": round3(quantile(l.ms, 0.5)), "p99_ms": round3(quantile(l.ms, 0.99)), "max_ms": round3(quantile(l.ms, 1)),
	}
	if l.firstErr != "" {
		out["first_error"] = l.firstErr
	}
	return out
}

func impersonating(kubeconfig, as string) (*http.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: as}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 30 * time.Second
	return hc, nil
}

func tlsClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
	}}, nil
}

// vmiJSON is the VMI virt-controller creates for VM owner.
func vmiJSON(ns, name, owner, ownerUID string) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
		"metadata": map[string]any{
			"name": name, "namespace": ns, "labels": map[string]any{"kubevirt.io/vm": owner},
			"ownerReferences": []any{map[string]any{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
				"name": owner, "uid": ownerUID, "controller": true, "blockOwnerDeletion": true}},
		},
		"spec": map[string]any{
			"domain": map[string]any{"devices": map[string]any{"disks": []any{map[string]any{"name": "root", "disk": map[string]any{"bus": "virtio"}}}},
				"resources": map[string]any{"requests": map[string]any{"memory": "1Gi"}}},
			"volumes": []any{map[string]any{"name": "root", "containerDisk": map[string]any{"image": "quay.io/containerdisks/fedora:latest"}}},
		},
	})
	return b
}

// reviewJSON is the AdmissionReview the API server sends our webhook for
// that create.
func reviewJSON(ns, name, owner, ownerUID string, n int) []byte {
	var obj map[string]any
	_ = json.Unmarshal(vmiJSON(ns, name, owner, ownerUID), &obj)
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid":      fmt.Sprintf("fleet-%012d", n),
			"kind":     map[string]any{"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachineInstance"},
			"resource": map[string]any{"group": "kubevirt.io", "version": "v1", "resource": "virtualmachineinstances"},
			"name":     name, "namespace": ns, "operation": "CREATE",
			"userInfo": map[string]any{"username": "system:serviceaccount:kubevirt:kubevirt-controller", "groups": []any{"system:serviceaccounts", "system:authenticated"}},
			"object":   obj,
		},
	})
	return b
}
