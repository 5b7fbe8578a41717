#!/usr/bin/env bash
# make bench-fleet: the VM cache at fleet scale on the real kube-apiserver
# and etcd of make e2e (see bench/README.md, "Fleet"):
#
#   1. FLEET_VMS (100,000) realistic VirtualMachines created through the API
#      server: how long, and etcd's size;
#   2. initial sync of each arm, one at a time: the webhook listing with a
#      streaming list (its default), in pages and unpaginated, kube-runtime's
#      reflector of full objects and controller-runtime's cache with a
#      transform: time to ready, the arm's CPU and peak and settled RSS, the
#      API server's CPU and peak RSS growth meanwhile; our three modes
#      FLEET_SYNC_ROUNDS (3) times, in rotated order;
#   3. with FLEET_RELIST=1 (default), the API server restarted over a
#      compacted etcd while every arm is stopped (SIGSTOP); then each arm
#      resumed alone must relist: the same figures;
#   4. churn: VM status patches at each rate of FLEET_RATES ("100 1000 0";
#      0 = as fast as the API server takes), FLEET_CHURN_SECONDS (60) each
#      after FLEET_REST_SECONDS (15) at rest, all three caches watching the
#      same stream: CPU per 1,000 events, RSS every second, watch lag, and
#      VMI create latency through the API server and straight to /mutate
#      against the rest window before.
#
# bench/fleet/report.py prints the tables and the verdicts; the exit status
# is 1 when a target is missed. Outside: builds (e2e/build.sh with
# KRW_BUILD_NODE=0, one cargo build, the Go anchor), then runs itself in new
# network and mount namespaces like make e2e. More knobs: FLEET_NAMESPACES
# (100), FLEET_SETTLE (10s: settled RSS read that long after ready),
# FLEET_KEEP=1 (keep the work directory), FLEET_OUT (where results go;
# target/fleet), FLEET_FORCE=1 (run a fleet larger than the memory check
# allows).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
E2E=$ROOT/e2e
source "$E2E/lib.sh"
source "$E2E/controlplane.sh"
log() { printf '\033[1m[fleet]\033[0m %s\n' "$*" >&2; }

FLEET_VMS=${FLEET_VMS:-100000}
FLEET_NAMESPACES=${FLEET_NAMESPACES:-100}
FLEET_CHURN_SECONDS=${FLEET_CHURN_SECONDS:-60}
FLEET_RATES=${FLEET_RATES:-100 1000 0}
FLEET_REST_SECONDS=${FLEET_REST_SECONDS:-15}
FLEET_SETTLE=${FLEET_SETTLE:-10s}
FLEET_RELIST=${FLEET_RELIST:-1}
FLEET_SYNC_ROUNDS=${FLEET_SYNC_ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLEET_OUT=${FLEET_OUT:-$TARGET_DIR/fleet}
export FLEET_VMS FLEET_NAMESPACES FLEET_CHURN_SECONDS FLEET_RATES FLEET_REST_SECONDS FLEET_SETTLE FLEET_RELIST FLEET_SYNC_ROUNDS FLEET_OUT

if [ -z "${KRW_FLEET_INSIDE:-}" ]; then
  [ "$(id -u)" = 0 ] || die "make bench-fleet needs root (network namespaces, /proc of every process)"
  for tool in go openssl curl python3 ip unshare; do
    command -v "$tool" >/dev/null || die "make bench-fleet needs $tool"
  done
  # At 30,000 VMs (2026-12-03) the API server, the anchors' caches, our
  # unpaginated arm and etcd's tmpfs peaked at some 10 GiB together: about
  # 350 KiB per VM. Refuse a fleet this machine's memory cannot hold.
  need_mib=$((FLEET_VMS * 350 / 1024)) avail_mib=$(awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
  [ "$avail_mib" -ge "$need_mib" ] || [ -n "${FLEET_FORCE:-}" ] ||
    die "FLEET_VMS=$FLEET_VMS needs about $need_mib MiB (350 KiB per VM, measured at 30,000); $avail_mib MiB available. Set FLEET_VMS lower, or FLEET_FORCE=1"
  began=$SECONDS
  KRW_BUILD_NODE=0 source "$E2E/build.sh"
  log "building the webhook and kube-runtime's reflector (release, one cargo build)"
  (cd "$ROOT" && cargo build --locked --release --quiet -p kubevirt-reboot-webhook -p kubevirt-reboot-webhook-bench \
    --bin kubevirt-reboot-webhook --bin fleet-reflector)
  WEBHOOK_BIN=$TARGET_DIR/release/kubevirt-reboot-webhook
  REFLECTOR_BIN=$TARGET_DIR/release/fleet-reflector
  log "building controller-runtime's cache (bench/fleet/crcache)"
  mkdir -p "$FLEET_OUT"
  (cd "$HERE/crcache" && go build -mod=readonly -trimpath -o "$FLEET_OUT/crcache" .)
  CRCACHE_BIN=$FLEET_OUT/crcache
  export WEBHOOK_BIN REFLECTOR_BIN CRCACHE_BIN
  log "build took $((SECONDS - began)) s"
  exec env KRW_FLEET_INSIDE=1 FLEET_BUILD_SECONDS=$((SECONDS - began)) unshare --net --mount --propagation private bash "$0" "$@"
fi

# ---------------------------------------------------------------- set-up ---
W=$(mktemp -d /tmp/krw-fleet.XXXXXX)
mkdir -p "$W/logs" "$W/pids" "$W/pki" "$W/etcd" "$FLEET_OUT"
R=$FLEET_OUT/results.jsonl
: >"$R"
CP_IP=198.18.0.1
API=https://127.0.0.1:6443
on_exit() {
  local rc=$?
  # A missed target (the report's exit status) is not a broken run.
  if [ $rc -ne 0 ] && [ -z "${REPORTED:-}" ]; then
    log "failed; logs in $W/logs"
    for f in kube-apiserver etcd; do
      [ -s "$W/logs/$f.log" ] && { echo "----- last 20 lines of $f.log -----" >&2; tail -n 20 "$W/logs/$f.log" >&2; }
    done
  fi
  # Stopped arms get SIGTERM only once resumed.
  local f; for f in "$W"/pids/*; do [ -e "$f" ] && kill -CONT "$(cat "$f")" 2>/dev/null; done
  stop_all
  umount "$W/etcd" 2>/dev/null || true
  if { [ $rc -ne 0 ] && [ -z "${REPORTED:-}" ]; } || [ -n "${FLEET_KEEP:-}" ]; then log "work directory kept: $W"; else rm -rf "$W"; fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP
k() { "$KUBECTL" --kubeconfig "$W/admin.kubeconfig" --request-timeout=60s "$@"; }
record() { printf '{"phase":"%s",%s\n' "$1" "${2#\{}" >>"$R"; }  # record PHASE JSON
conditions() {
  printf '{"load_average":"%s","nproc":%s,"mem_available_mib":%s}' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)" \
    "$(awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)"
}

ip link set lo up
ip addr add "$CP_IP/32" dev lo
# etcd in memory (a tmpfs of this run's mount namespace, gone with it): on
# this machine's shared virtual disk, fsyncs of 100-300 ms held the API
# server to some 100 writes a second, and the figures would be the disk's.
mount -t tmpfs -o size=$((12 << 30)) krw-fleet-etcd "$W/etcd"
P=$W/pki
controlplane_pki
pki_ca "$P" webhook-ca "fleet webhook CA"
pki_cert "$P" webhook webhook-ca "/CN=127.0.0.1" "IP:127.0.0.1" serverAuth
kubeconfig "$W/admin.kubeconfig" "$API" "$P/ca.crt" client-cert "$P/admin.crt" "$P/admin.key"

# etcd with room for the fleet and a few minutes of churn; the API server
# compacts its history every minute (5 by default) so the churn's revisions
# do not pile up.
APISERVER_FLAGS=(--authorization-mode=RBAC --profiling=true --etcd-compaction-interval=1m)
start_etcd --quota-backend-bytes=$((8 << 30))
start_kube_apiserver kube-apiserver 6443 "${APISERVER_FLAGS[@]}"
record conditions "$(conditions)"
log "kube-apiserver $K8S_VERSION and etcd up; conditions: $(conditions)"
k apply -f "$E2E/cluster/kubevirt-crds.yaml" >/dev/null
k wait --for condition=established --timeout=60s crd --all >/dev/null
k apply -f "$E2E/cluster/kubevirt.yaml" >/dev/null
k create clusterrolebinding fleet-controller --clusterrole=e2e-kubevirt-controller \
  --user=system:serviceaccount:kubevirt:kubevirt-controller >/dev/null 2>&1 || true

# -------------------------------------------------------------- the fleet --
etcd_db_mib() { etcd_call /v3/maintenance/status '{}' | python3 -c 'import json,sys; print(round(int(json.load(sys.stdin)["dbSize"]) / 1048576, 1))'; }
log "creating $FLEET_VMS VirtualMachines in $FLEET_NAMESPACES namespaces"
out=$("$E2EHELPER" fleet-vms -kubeconfig "$W/admin.kubeconfig" -count "$FLEET_VMS" -namespaces "$FLEET_NAMESPACES")
expect_contains "$out" '"failed":0' "creating the fleet"
record create "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["etcd_db_mib"]=float(sys.argv[2]); print(json.dumps(d))' "$out" "$(etcd_db_mib)")"
log "created: $out; etcd $(etcd_db_mib) MiB"
# The owner of the VMI creates, and the last object in list order: a relist
# reaches it last.
k create namespace zzz-fleet >/dev/null
k -n zzz-fleet apply -f - >/dev/null <<VM
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: owner}
spec: {runStrategy: BootOnce, template: {spec: {domain: {devices: {}}}}}
VM

# ---------------------------------------------------------------- arms -----
# name -> command, readiness URL, metrics URL and resourceVersion gauge.
declare -A CMD READY METRICS GAUGE
ours() {  # ours NAME MODE PORT
  local port=$3 mport=$((8080 + $3 - 8443))
  CMD[$1]="$WEBHOOK_BIN serve --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport --tls-cert $P/webhook.crt --tls-key $P/webhook.key --kubeconfig $W/admin.kubeconfig --feature-gates RecreateVMIOnReboot --shutdown-delay 0s --vm-list-mode $2"
  READY[$1]=http://127.0.0.1:$mport/readyz
  METRICS[$1]=http://127.0.0.1:$mport/metrics
  GAUGE[$1]=kubevirt_reboot_webhook_vm_cache_resource_version
}
ours ours auto 8443
ours ours-paginated paginated 8444
ours ours-unpaginated unpaginated 8445
CMD[kube-runtime]="$REFLECTOR_BIN --kubeconfig $W/admin.kubeconfig --listen 127.0.0.1:9090"
READY[kube-runtime]=http://127.0.0.1:9090/readyz; METRICS[kube-runtime]=http://127.0.0.1:9090/metrics
CMD[controller-runtime]="$CRCACHE_BIN -kubeconfig $W/admin.kubeconfig -listen 127.0.0.1:9091"
READY[controller-runtime]=http://127.0.0.1:9091/readyz; METRICS[controller-runtime]=http://127.0.0.1:9091/metrics
GAUGE[kube-runtime]=fleet_anchor_resource_version; GAUGE[controller-runtime]=fleet_anchor_resource_version
ARMS=(ours ours-paginated ours-unpaginated kube-runtime controller-runtime)

# ------------------------------------------------------------ initial sync --
sync_arm() {  # sync_arm NAME COMMAND-OF
  local out
  # shellcheck disable=SC2086
  out=$("$E2EHELPER" fleet-sync -name "$1" -kubeconfig "$W/admin.kubeconfig" -apiserver-pid "$(pid_of kube-apiserver)" \
    -ready "${READY[$2]}" -pidfile "$W/pids/$1" -log "$W/logs/$1.log" -settle "$FLEET_SETTLE" -- ${CMD[$2]})
  record sync "$out"
  log "  $out"
}
for a in "${ARMS[@]}"; do
  log "initial sync: $a"
  sync_arm "$a" "$a"
  kill -STOP "$(pid_of "$a")"   # kept, stopped, for the relist
done
# More rounds of our three list modes, each in another order (the first
# arm after the fleet's creation met a busier API server), each started
# fresh on ports of its own and stopped after its sync.
modes=(ours ours-paginated ours-unpaginated)
declare -A mode_flag
mode_flag=([ours]=auto [ours-paginated]=paginated [ours-unpaginated]=unpaginated)
for round in $(seq 2 "$FLEET_SYNC_ROUNDS"); do
  for i in 0 1 2; do
    m=${modes[$(((i + round - 1) % 3))]}
    a=$m.r$round
    ours "$a" "${mode_flag[$m]}" $((8446 + i))
    log "initial sync, round $round: $a"
    sync_arm "$a" "$a"
    stop "$a"
  done
done
if grep -q 'does not serve streaming lists\|ended a streaming list' "$W/logs/ours.log"; then
  die "the webhook fell back from streaming lists: $(grep -m1 'streaming' "$W/logs/ours.log")"
fi

# ------------------------------------------------------------------ relist --
# Every arm is stopped. The API server goes away, etcd is compacted, and the
# API server comes back: no watch can resume from before. Then a write the
# arms can only see by relisting (the last object in list order, so a
# relist reaches it last), and each arm is resumed alone.
if [ "$FLEET_RELIST" = 1 ]; then
log "API server restart over a compacted etcd"
stop kube-apiserver
rev=$(etcd_compact)
etcd_call /v3/maintenance/defragment '{}' >/dev/null
began=$SECONDS
start_kube_apiserver kube-apiserver 6443 "${APISERVER_FLAGS[@]}"
# Ready once its watch cache of VMs serves: a list of one VM was then
# answered from it (a consistent read without fallback to etcd).
# (Read whole: grep -q ending the pipe early failed it under pipefail.)
watch_cache_ready() {
  local m
  k get --raw "/apis/kubevirt.io/v1/virtualmachines?limit=1" >/dev/null && m=$(k get --raw /metrics) &&
    grep -q '^apiserver_watch_cache_consistent_read_total{fallback="false",group="kubevirt.io",resource="virtualmachines",success="true"}' <<<"$m"
}
wait_until 300 "the VM watch cache" watch_cache_ready
record restart "{\"compacted_at\":$rev,\"ready_s\":$((SECONDS - began)),\"etcd_db_mib\":$(etcd_db_mib),\"apiserver_rss_mib\":$(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$(pid_of kube-apiserver)/status")}"
k -n zzz-fleet label vm owner fleet/relist=1 --overwrite >/dev/null
marker=$(k -n zzz-fleet get vm owner -o jsonpath='{.metadata.resourceVersion}')
log "marker resourceVersion $marker"
for a in "${ARMS[@]}"; do
  log "relist: $a"
  out=$("$E2EHELPER" fleet-relist -name "$a" -kubeconfig "$W/admin.kubeconfig" -apiserver-pid "$(pid_of kube-apiserver)" \
    -pid "$(pid_of "$a")" -rv "${METRICS[$a]}" -rv-metric "${GAUGE[$a]}" -marker "$marker")
  record relist "$out"
  log "  $out"
  case $a in ours|kube-runtime|controller-runtime) kill -STOP "$(pid_of "$a")" ;; *) stop "$a" ;; esac
done
else
  for a in ours-paginated ours-unpaginated; do kill -CONT "$(pid_of "$a")"; stop "$a"; done
fi
for a in ours kube-runtime controller-runtime; do kill -CONT "$(pid_of "$a")"; done

# ------------------------------------------------------------------- churn --
# Ours mutates the VMI creates: registered by URL on loopback.
k apply -f - >/dev/null <<WH
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: fleet-bench}
webhooks:
- name: mutate.reboot.kubevirt.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:8443/mutate
    caBundle: $(base64 -w0 <"$P/webhook-ca.crt")
  rules:
  - {apiGroups: [kubevirt.io], apiVersions: [v1], operations: [CREATE], resources: [virtualmachineinstances]}
WH
sleep 2
arms=ours=$(pid_of ours)=${METRICS[ours]}=${GAUGE[ours]}
for a in kube-runtime controller-runtime; do arms+=,$a=$(pid_of "$a")=${METRICS[$a]}=${GAUGE[$a]}; done
churn() {  # churn PHASE FLAGS...
  local out phase=$1; shift
  out=$("$E2EHELPER" fleet-churn -kubeconfig "$W/admin.kubeconfig" -count "$FLEET_VMS" -namespaces "$FLEET_NAMESPACES" \
    -arms "$arms" -pids "apiserver=$(pid_of kube-apiserver),etcd=$(pid_of etcd)" -vmi-owner zzz-fleet/owner -mutate https://127.0.0.1:8443/mutate -mutate-ca "$P/webhook-ca.crt" "$@")
  record "$phase" "$out"
  log "  $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.get("arms",{}) and [a.pop("rss_mib",None) for a in d["arms"].values()]; print(json.dumps(d))' "$out")"
}
n=0
for rate in $FLEET_RATES; do
  n=$((n + 1))
  log "at rest ($FLEET_REST_SECONDS s of VMI creates)"
  churn rest -seconds 0 -vmi-seconds "$FLEET_REST_SECONDS" -vmi-prefix "rest$n"
  log "churn at ${rate/#0/the most the API server takes} patches/s for $FLEET_CHURN_SECONDS s"
  churn churn -rate "$rate" -seconds "$FLEET_CHURN_SECONDS" -vmi-prefix "churn$n"
done
record conditions "$(conditions)"
record etcd "{\"etcd_db_mib\":$(etcd_db_mib)}"

REPORTED=1
python3 "$HERE/report.py" "$R" | tee "$FLEET_OUT/results.md"
