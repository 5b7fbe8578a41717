// Command noopwebhook is the latency floor of make e2e: an admission webhook
// that decides nothing. /mutate answers every review with the same constant
// patch our webhook gives a BootOnce VMI (the reserved annotation and
// rebootPolicy, two "add" operations, and an audit annotation of the same
// length), /validate allows. Its cost is what the API server's webhook
// machinery costs for a pair configured like ours, with nothing of ours in it.
//
// It takes the webhook's own command line, so it runs wherever and however
// the webhook runs (a process in the webhook's network namespace today, the
// Deployment's container args in a Pod later):
//
//	noopwebhook [serve] --listen ADDR --metrics-listen ADDR --tls-cert F --tls-key F [other flags ignored]
//
// Only the standard library: no module beyond Go's own is needed to build it
// into a small static binary or image.
package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The patch our webhook sends for a VMI of a BootOnce VM that has no
// annotations yet (tests/fixtures/gate-on/08-vmi-create-bootonce-owner).
var patch = []byte(`[{"op":"add","path":"/metadata/annotations","value":{"runstrategy.kubevirt.io":"BootOnce"}},{"op":"add","path":"/spec/domain/rebootPolicy","value":"Terminate"}]`)

const stamped = "metadata.annotations[runstrategy.kubevirt.io]=BootOnce, spec.domain.rebootPolicy=Terminate"

type review struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Request    *request  `json:"request,omitempty"`
	Response   *response `json:"response,omitempty"`
}

// request is the one field of the request the answer needs.
type request struct {
	UID string `json:"uid"`
}

type response struct {
	UID              string            `json:"uid"`
	Allowed          bool              `json:"allowed"`
	Patch            []byte            `json:"patch,omitempty"`
	PatchType        string            `json:"patchType,omitempty"`
	AuditAnnotations map[string]string `json:"auditAnnotations,omitempty"`
}

// flags reads the flags it needs from the webhook's command line
// (--flag VALUE or --flag=VALUE) and ignores the rest.
func flags(args []string) map[string]string {
	want := map[string]bool{"--listen": true, "--metrics-listen": true, "--tls-cert": true, "--tls-key": true}
	out := map[string]string{"--listen": "0.0.0.0:8443", "--metrics-listen": "0.0.0.0:8080"}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !want[name] {
			continue
		}
		if !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		out[name] = value
	}
	return out
}

func main() {
	f := flags(os.Args[1:])
	if f["--tls-cert"] == "" || f["--tls-key"] == "" {
		fmt.Fprintln(os.Stderr, "usage: noopwebhook [serve] --listen ADDR --metrics-listen ADDR --tls-cert F --tls-key F")
		os.Exit(2)
	}
	cert, err := tls.LoadX509KeyPair(f["--tls-cert"], f["--tls-key"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopwebhook:", err)
		os.Exit(1)
	}
	var calls, nanos atomic.Int64
	answer := func(mutate bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			began := time.Now()
			defer func() { calls.Add(1); nanos.Add(int64(time.Since(began))) }()
			body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
			var in review
			if err != nil || json.Unmarshal(body, &in) != nil || in.Request == nil {
				http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
				return
			}
			out := review{APIVersion: in.APIVersion, Kind: "AdmissionReview",
				Response: &response{UID: in.Request.UID, Allowed: true}}
			if mutate {
				out.Response.Patch, out.Response.PatchType = patch, "JSONPatch"
				out.Response.AuditAnnotations = map[string]string{"stamped": stamped}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(out)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", answer(true))
	mux.HandleFunc("POST /validate", answer(false))
	health := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }
	health.HandleFunc("/healthz", ok)
	health.HandleFunc("/readyz", ok)
	// Its own handling time, beside the webhook's own latency histogram.
	health.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "noop_webhook_requests_total %d\nnoop_webhook_handling_seconds_sum %g\n",
			calls.Load(), float64(nanos.Load())/1e9)
	})
	srv := &http.Server{Addr: f["--listen"], Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	metrics := &http.Server{Addr: f["--metrics-listen"], Handler: health, ReadHeaderTimeout: 10 * time.Second}
	admission, err := net.Listen("tcp", f["--listen"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopwebhook:", err)
		os.Exit(1)
	}
	plain, err := net.Listen("tcp", f["--metrics-listen"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopwebhook:", err)
		os.Exit(1)
	}
	// The webhook's own first line, so tools that read it find the address.
	fmt.Printf("listening admission=https://%s metrics=http://%s\n", admission.Addr(), plain.Addr())
	go func() { _ = metrics.Serve(plain) }()
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
		_ = srv.Close()
		_ = metrics.Close()
	}()
	if err := srv.ServeTLS(admission, "", ""); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "noopwebhook:", err)
		os.Exit(1)
	}
}
