# The webhook as the Pods of its Deployment, for e2e/run.sh and the
# scenarios: install, arguments, scale, the Pods' addresses, metrics and logs.
#
# WH_NAMESPACE (default kubevirt-reboot-webhook) picks the install the helpers
# act on (the helm scenario installs into another namespace).

WH_DEPLOY=deployment/kubevirt-reboot-webhook
WH_SELECTOR=app.kubernetes.io/name=kubevirt-reboot-webhook

wh_ns() { echo "${WH_NAMESPACE:-$WH_NS}"; }

# webhook_secret NS CERT KEY [CA]: the Secret the Pods mount (type
# kubernetes.io/tls, as cert-manager writes it), created or updated in place.
webhook_secret() {
  k create namespace "$1" --dry-run=client -o yaml | k apply -f - >/dev/null
  k apply -f - >/dev/null <<SECRET
apiVersion: v1
kind: Secret
metadata: {name: kubevirt-reboot-webhook-tls, namespace: $1}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 <"$2")
  tls.key: $(base64 -w0 <"$3")
${4:+  ca.crt: $(base64 -w0 <"$4")}
SECRET
}

# install_manifests KUSTOMIZE_DIR: `kubectl apply` of the rendered
# kustomization with the caBundle filled in, then the rollout.
install_manifests() {
  "$KUBECTL" kustomize "$1" \
    | sed "s|caBundle: \"\"|caBundle: $(base64 -w0 <"$P/webhook-ca.crt")|" \
    | k apply -f - >/dev/null
  webhook_installed
}

# webhook_installed: what was just installed (by kubectl or Helm) rolled
# out; its arguments and replicas recorded as the shipped ones.
webhook_installed() {
  wait_rollout
  deployment_args >"$W/shipped-args.$(wh_ns)"
  k -n "$(wh_ns)" get "$WH_DEPLOY" -o jsonpath='{.spec.replicas}' >"$W/shipped-replicas.$(wh_ns)"
}

# The container's args of the installed Deployment, one per line.
deployment_args() {
  k -n "$(wh_ns)" get "$WH_DEPLOY" -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}'
}

# wait_rollout: the Deployment rolled out, its Service's endpoints are
# exactly its ready Pods (the endpoints controller has caught up), and the
# old Pods are gone: until then they still answer, for their shutdown delay,
# on connections the API server has open to them.
wait_rollout() {
  local out
  out=$(k -n "$(wh_ns)" rollout status "$WH_DEPLOY" --timeout=180s 2>&1) || die "rollout of the webhook: $out"
  wait_until 60 "the webhook's endpoints to list its ready Pods" endpoints_match_pods
  wait_until 90 "the webhook's old Pods to be gone" no_terminating_pods
}
no_terminating_pods() {
  [ -z "$(k -n "$(wh_ns)" get pods -l "$WH_SELECTOR" -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name}{"\n"}{end}')" ]
}

endpoints_match_pods() {
  local want have
  want=$(webhook_pod_ips | sort | tr '\n' ' ')
  have=$(k -n "$(wh_ns)" get endpointslices -l kubernetes.io/service-name=kubevirt-reboot-webhook \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | sort | tr '\n' ' ')
  [ -n "$want" ] && [ "$want" = "$have" ] &&
    [ "$(echo "$want" | wc -w)" = "$(k -n "$(wh_ns)" get "$WH_DEPLOY" -o jsonpath='{.spec.replicas}')" ]
}

# webhook_pod_ips: the addresses of the Pods that are ready and not
# terminating, one per line.
webhook_pod_ips() {
  k -n "$(wh_ns)" get pods -l "$WH_SELECTOR" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    if ready and not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP"):
        print(p["status"]["podIP"])'
}
# (awk reads to the end: head would break the pipe, and pipefail the caller.)
webhook_pod_ip() { webhook_pod_ips | awk 'NR == 1'; }
webhook_pods() { k -n "$(wh_ns)" get pods -l "$WH_SELECTOR" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }

# start_webhook [EXTRA ARGS...]: the Deployment with its shipped args plus
# these, at its shipped replicas, rolled out (a restart when nothing changed).
start_webhook() {
  local ns; ns=$(wh_ns)
  local want; want=$(cat "$W/shipped-args.$ns"; [ $# -eq 0 ] || printf '%s\n' "$@")
  if [ "$(deployment_args)" != "$want" ]; then
    k -n "$ns" patch "$WH_DEPLOY" --type=json -p "$(python3 -c '
import json, sys
print(json.dumps([{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": sys.stdin.read().splitlines()}]))' <<<"$want")" >/dev/null
  elif [ "$(k -n "$ns" get "$WH_DEPLOY" -o jsonpath='{.spec.replicas}')" != 0 ]; then
    k -n "$ns" rollout restart "$WH_DEPLOY" >/dev/null
  fi
  k -n "$ns" scale "$WH_DEPLOY" --replicas="$(cat "$W/shipped-replicas.$ns")" >/dev/null
  wait_rollout
}
restart_webhook() { start_webhook "$@"; }

# stop_webhook: no Pod left (scaled to 0 and every Pod gone).
stop_webhook() {
  k -n "$(wh_ns)" scale "$WH_DEPLOY" --replicas=0 >/dev/null
  wait_until 90 "the webhook's Pods to be gone" no_webhook_pods
}
no_webhook_pods() { [ -z "$(webhook_pods)" ]; }

# webhook_logs: every line the webhook's containers logged in this run, as
# the kubelet keeps them (readable while the API server is away).
webhook_logs() { cat "$N"/pod-logs/"$(wh_ns)"_*/webhook/*.log 2>/dev/null || true; }

# wh_curl ARGS...: curl to the first ready Pod, by its Service's name (the
# certificate's), over the Pod network.
wh_curl() {
  curl -sS --max-time 10 --resolve "$WH_SVC:8443:${WH_POD_IP:-$(webhook_pod_ip)}" --cacert "$P/webhook-ca.crt" "$@"
}

# webhook_container_pids: the host PIDs of the webhook containers of the
# ready, not terminating Pods, as containerd runs them.
webhook_container_pids() {
  local id
  for id in $(k -n "$(wh_ns)" get pods -l "$WH_SELECTOR" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    if ready and not p["metadata"].get("deletionTimestamp"):
        print(p["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://"))'); do
    ctr_ tasks ls | awk -v id="$id" '$1 == id { print $2 }'
  done
}

# webhook_metrics_sum: the webhook's /metrics summed over its ready Pods,
# one "series value" line per series.
webhook_metrics_sum() {
  local ip
  for ip in $(webhook_pod_ips); do curl -fsS --max-time 5 "http://$ip:8080/metrics"; done | python3 -c '
import sys
sums = {}
for line in sys.stdin:
    series, _, value = line.strip().rpartition(" ")
    if series and not line.startswith("#"):
        try:
            sums[series] = sums.get(series, 0.0) + float(value)
        except ValueError:
            pass
for series, value in sums.items():
    print(f"{series} {value:g}")'
}

# cgroup_file PID CONTROLLER FILE: a file of the process's cgroup (v1).
cgroup_file() {
  echo "/sys/fs/cgroup/$2$(awk -F: -v c="$2" '$2 == c { print $3 }' "/proc/$1/cgroup")/$3"
}

# expect_memory_under_limit WHEN: each webhook container's peak memory (the
# kernel's high-water mark of its cgroup since it started) is under half of
# its limit; logs the figures.
expect_memory_under_limit() { report_memory "$1" check; }

# report_memory WHEN [check]: logs each webhook container's peak memory
# (with check: fails unless it is under half of its limit).
report_memory() {
  local pid peak limit
  for pid in $(webhook_container_pids); do
    peak=$(cat "$(cgroup_file "$pid" memory memory.max_usage_in_bytes)")
    limit=$(cat "$(cgroup_file "$pid" memory memory.limit_in_bytes)")
    log "  peak memory of a webhook container $1: $((peak / 1048576)) MiB charged to its cgroup (what the limit counts) of its $((limit / 1048576)) MiB limit; peak RSS $(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$pid/status") MiB, now $(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status") MiB"
    [ -z "${2:-}" ] || [ "$((peak * 2))" -lt "$limit" ] || die "a webhook container's peak memory $1 is $peak bytes, not well under its limit $limit"
  done
}
