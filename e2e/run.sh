#!/usr/bin/env bash
# make e2e: the webhook as an administrator installs it, on a real
# one-node cluster: kube-apiserver, etcd, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, containerd and runc, driven by the
# real kubectl and Helm.
#
# Outside: builds the cluster's binaries (e2e/build.sh), the webhook and its
# image (make image), then runs itself again in new network and mount
# namespaces (unshare --net --mount), so every address and mount it uses is
# private to this run and nothing is left behind when it ends. Inside (the
# "node"): the control plane, the node (e2e/node.sh), and the webhook as the
# Pods of the Deployment that manifests/ and the chart ship. See
# e2e/README.md.
#
# E2E_SCENARIOS="gate compat" runs only those scenarios (setup always runs;
# an unknown name is refused);
# E2E_KEEP=1 keeps the work directory; E2E_CONTAINERD=module runs the node on
# containerd 2.x built from e2e/containerd instead of the machine's.
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$E2E")
source "$E2E/lib.sh"
source "$E2E/controlplane.sh"

# Every scenario, in the order they run (helm last: it replaces the
# kustomize install; audit reads what all wrote). A name in E2E_SCENARIOS
# that is none of these is refused before anything is built or started.
E2E_ALL_SCENARIOS="watches dryrun stamp race reinvocation gate ratchet compat failure_policy blast_radius pod_security rotation pod_loss mtls cert_manager latency fleet helm helm_cert_manager audit"
for s in ${E2E_SCENARIOS:-}; do
  [[ " $E2E_ALL_SCENARIOS " == *" $s "* ]] ||
    die "E2E_SCENARIOS: no scenario named '$s'; the scenarios are: $E2E_ALL_SCENARIOS"
done
[ -z "${E2E_SCENARIOS:-}" ] || [ -n "${E2E_SCENARIOS//[[:space:]]/}" ] ||
  die "E2E_SCENARIOS names no scenario; the scenarios are: $E2E_ALL_SCENARIOS"

if [ -z "${KRW_E2E_INSIDE:-}" ]; then
  [ "$(id -u)" = 0 ] || die "make e2e needs root (network namespaces)"
  case ${E2E_CONTAINERD:=debian} in
    debian) node_tools="containerd containerd-shim-runc-v2 ctr" ;;
    module) node_tools= ;;   # built by e2e/build.sh
    *) die "E2E_CONTAINERD=$E2E_CONTAINERD: debian (the machine's containerd) or module (containerd 2.x from e2e/containerd)" ;;
  esac
  export E2E_CONTAINERD
  for tool in go gcc openssl curl python3 ip unshare $node_tools runc iptables umoci; do
    command -v "$tool" >/dev/null || die "make e2e needs $tool (.ci/run installs what is missing)"
  done
  [ -x "$CNI_BIN_DIR/bridge" ] || die "make e2e needs the CNI plugins in $CNI_BIN_DIR (Debian: containernetworking-plugins)"
  started=$SECONDS
  source "$E2E/build.sh"
  log "building helm"
  HELM=$(cd "$ROOT" && make -s --no-print-directory helm)
  export HELM
  if [ -z "${WEBHOOK_BIN:-}" ]; then   # WEBHOOK_BIN: a binary built elsewhere
    log "building the webhook (release)"
    (cd "$ROOT" && cargo build --locked --release --quiet --bin kubevirt-reboot-webhook)
    WEBHOOK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubevirt-reboot-webhook
  fi
  export WEBHOOK_BIN
  log "building the image (make image)"
  IMAGE_ARCHIVE=$(cd "$ROOT" && make -s --no-print-directory image-archive-path)
  IMAGE_REF=$(cd "$ROOT" && make -s --no-print-directory image-ref)
  (cd "$ROOT" && make -s --no-print-directory image BINARY="$WEBHOOK_BIN")
  export IMAGE_ARCHIVE IMAGE_REF
  log "control plane: kube-apiserver $K8S_VERSION, etcd $("$ETCD" --version | awk '/etcd Version/ { print $3 }'), kubectl $("$KUBECTL" version --client -o json | awk -F'"' '$2 == "gitVersion" { print $4 }') ($KUBECTL)"
  log "build and checks took $((SECONDS - started)) s"
  # A mount namespace of its own too: what containerd, the CNI plugins and
  # the kubelet mount (overlays, Secret volumes, pod network namespaces)
  # vanishes with the run.
  exec env KRW_E2E_INSIDE=1 unshare --net --mount --propagation private bash "$0" "$@"
fi

# ---------------------------------------------------------------- set-up ---
W=$(mktemp -d /tmp/krw-e2e.XXXXXX)
mkdir -p "$W/logs" "$W/pids" "$W/pki" "$W/etcd"
CP_IP=198.18.0.1             # the node's address: API server, kubelet
API=https://127.0.0.1:6443
WH_NS=kubevirt-reboot-webhook
WH_METRICS=webhooks          # `metric webhooks NAME`: the sum over the webhook's ready Pods
passed=0
ran=
failed_scenario=

on_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "failed${failed_scenario:+ in scenario '$failed_scenario'}; logs in $W/logs"
    for f in kube-apiserver kube-controller-manager kubelet containerd etcd; do
      [ -s "$W/logs/$f.log" ] || continue
      echo "----- last 30 lines of $f.log -----" >&2
      tail -n 30 "$W/logs/$f.log" >&2
    done
    for f in "$W"/node/pod-logs/*/webhook/*.log; do
      [ -s "$f" ] || continue
      echo "----- last 20 lines of ${f#"$W/node/pod-logs/"} -----" >&2
      tail -n 20 "$f" >&2
    done
  fi
  node_teardown 2>/dev/null || true
  stop_all
  if [ $rc -ne 0 ] || [ -n "${E2E_KEEP:-}" ]; then
    log "work directory kept: $W"
  else
    rm -rf "$W"
  fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

k() { "$KUBECTL" --kubeconfig "$W/admin.kubeconfig" --request-timeout=30s "$@"; }
source "$E2E/node.sh"

# The node's address on the loopback device of the run's own namespace
# (this kernel has no dummy interfaces); Pods reach it through the bridge.
log "network: the node on $CP_IP, Pods on $POD_CIDR, Services on 198.19.0.0/24"
ip link set lo up
ip addr add "$CP_IP/32" dev lo
# A route for the Service range, so that a connection the node itself makes
# to a Service's cluster IP (the API server's calls to the webhook) gets past
# the routing decision to kube-proxy's DNAT, as a host's default route does.
ip route add 198.19.0.0/24 dev lo

log "certificates"
P=$W/pki
controlplane_pki
node_pki
# The webhook's serving certificate, for its Service name, from its own CA.
pki_ca "$P" webhook-ca "kubevirt-reboot-webhook e2e CA"
WH_SVC=kubevirt-reboot-webhook.kubevirt-reboot-webhook.svc
# Also the name of the latency scenario's floor Service, whose Pods mount the same Secret.
WH_SANS="DNS:$WH_SVC,DNS:$WH_SVC.cluster.local,DNS:kubevirt-reboot-webhook-noop.kubevirt-reboot-webhook.svc"
pki_cert "$P" webhook-serving webhook-ca "/CN=$WH_SVC" "$WH_SANS" serverAuth
# The client certificate kube-apiserver presents to webhooks (mTLS scenario).
pki_ca "$P" webhook-client-ca "kube-apiserver webhook client CA"
pki_cert "$P" apiserver-webhook-client webhook-client-ca "/CN=kube-apiserver-webhook-client" "" clientAuth
pki_cert "$P" stranger ca "/CN=kube-apiserver-webhook-client" "" clientAuth
kubeconfig "$W/admin.kubeconfig" "$API" "$P/ca.crt" client-cert "$P/admin.crt" "$P/admin.key"

# kube-apiserver's client identity towards webhooks whose Service name matches.
cat >"$W/webhook-client.kubeconfig" <<KCFG
apiVersion: v1
kind: Config
users:
- name: '$WH_SVC'
  user:
    client-certificate: $P/apiserver-webhook-client.crt
    client-key: $P/apiserver-webhook-client.key
KCFG
cat >"$W/admission.yaml" <<ADM
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $W/webhook-client.kubeconfig
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $W/webhook-client.kubeconfig
ADM
cat >"$W/audit-policy.yaml" <<AUD
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: kubevirt.io
  - group: pool.kubevirt.io
- level: None
AUD

# start_apiserver [NAME PORT]: the real kube-apiserver; the Node authorizer
# and RBAC, the default admission plugins (MutatingAdmissionWebhook and
# ValidatingAdmissionWebhook among them) and NodeRestriction. Webhooks are
# called through their Service's cluster IP, which kube-proxy routes to a
# ready Pod, as in a kubeadm cluster.
start_apiserver() {
  local node_flags
  mapfile -t node_flags < <(node_apiserver_flags)
  start_kube_apiserver "${1:-kube-apiserver}" "${2:-6443}" "${node_flags[@]}" \
    --admission-control-config-file="$W/admission.yaml" \
    --audit-policy-file="$W/audit-policy.yaml" --audit-log-path="$W/audit.log"
}

started=$SECONDS
log "starting etcd and kube-apiserver"
start_etcd
start_apiserver
log "control plane ready in $((SECONDS - started)) s"
server_version=$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
expect_eq "$server_version" "$K8S_VERSION" "the API server's version"

log "starting the node"
start_node

log "installing KubeVirt's API surface"
k apply -f "$E2E/cluster/kubevirt-crds.yaml" >/dev/null
k wait --for condition=established --timeout=60s crd --all >/dev/null
k apply -f "$E2E/cluster/kubevirt.yaml" >/dev/null
k create namespace e2e >/dev/null
# A plain user who may manage KubeVirt objects in namespace e2e, and is not trusted.
k create role kubevirt-editor -n e2e --verb='*' --resource=virtualmachines.kubevirt.io,virtualmachineinstances.kubevirt.io,virtualmachineinstancereplicasets.kubevirt.io,virtualmachinepools.pool.kubevirt.io >/dev/null
k create rolebinding jane -n e2e --role=kubevirt-editor --user=jane >/dev/null

# ------------------------------------------------------------- webhook -----
# The webhook installed from the project's own manifests, as the README says:
# the Secret with the serving certificate, then `kubectl apply` of the
# rendered kustomization with the caBundle filled in. Its Pods run the image
# of make image on the node.
source "$E2E/webhook.sh"

# 1,000 VMs (and 10 BootOnce ones) exist before the webhook is installed and
# starts (scenario watches).
k create namespace fleet >/dev/null
for batch in "-prefix fleet -count 1000" "-prefix fleet-bo -count 10 -run-strategy BootOnce"; do
  # shellcheck disable=SC2086
  out=$("$E2EHELPER" vms -kubeconfig "$W/admin.kubeconfig" -n fleet $batch)
  expect_contains "$out" '"failed":0' "creating the fleet of VMs"
done

log "installing the webhook from manifests/ (a Deployment of 2 Pods, image $IMAGE_REF)"
started=$SECONDS
webhook_secret "$WH_NS" "$P/webhook-serving.crt" "$P/webhook-serving.key"
install_manifests "$ROOT/manifests"
log "webhook Pods ready in $((SECONDS - started)) s"

# ------------------------------------------------------------- scenarios ---
scenario() {   # scenario NAME: runs scenario_NAME unless E2E_SCENARIOS excludes it
  local name=$1
  if [ -n "${E2E_SCENARIOS:-}" ] && [[ " $E2E_SCENARIOS " != *" $name "* ]]; then return 0; fi
  failed_scenario=$name
  local t=$SECONDS
  log "scenario $name"
  "scenario_$name"
  ran="$ran $name"
  passed=$((passed + 1))
  log "scenario $name passed ($((SECONDS - t)) s)"
  failed_scenario=
}

source "$E2E/scenarios.sh"

for s in $E2E_ALL_SCENARIOS; do
  scenario "$s"
done
log "containerd $(containerd --version | awk '{ print $3 }'): peak RSS $(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$(pid_of containerd)/status") MiB, CPU $(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$(pid_of containerd)/stat") s"
echo "e2e: $passed passed, 0 failed"
