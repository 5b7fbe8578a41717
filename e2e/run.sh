#!/usr/bin/env bash
# make e2e: the webhook against a real kube-apiserver, etcd and kubectl.
#
# Outside: builds the control plane (e2e/build.sh) and the webhook, then runs
# itself again in a new network namespace (unshare --net), so every address
# it uses is private to this run and nothing is left behind when it ends.
# Inside that namespace (the "control-plane host"): etcd and kube-apiserver
# on their own certificates; the webhook runs in a second namespace joined
# by a veth pair, reached by the API server through its Service and
# Endpoints, exactly as in a cluster. See e2e/README.md.
#
# E2E_SCENARIOS="gate compat" runs only those scenarios (setup always runs);
# E2E_KEEP=1 keeps the work directory.
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$E2E")
source "$E2E/lib.sh"

if [ -z "${KRW_E2E_INSIDE:-}" ]; then
  [ "$(id -u)" = 0 ] || die "make e2e needs root (network namespaces)"
  for tool in go openssl curl python3 ip unshare; do
    command -v "$tool" >/dev/null || die "make e2e needs $tool"
  done
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
  log "control plane: kube-apiserver $K8S_VERSION, etcd $("$ETCD" --version | awk '/etcd Version/ { print $3 }'), kubectl $("$KUBECTL" version --client -o json | awk -F'"' '$2 == "gitVersion" { print $4 }') ($KUBECTL)"
  log "build and checks took $((SECONDS - started)) s"
  exec env KRW_E2E_INSIDE=1 unshare --net bash "$0" "$@"
fi

# ---------------------------------------------------------------- set-up ---
W=$(mktemp -d /tmp/krw-e2e.XXXXXX)
mkdir -p "$W/logs" "$W/pids" "$W/pki" "$W/webhook-tls" "$W/etcd"
WNS=krw-e2e-webhook-$$       # the webhook's network namespace
CP_IP=198.18.0.1             # control-plane host side of the veth pair
WH_IP=198.18.0.2             # the webhook's address (its "pod IP")
API=https://127.0.0.1:6443
WH_METRICS=http://$WH_IP:8080/metrics
passed=0
ran=
failed_scenario=

on_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "failed${failed_scenario:+ in scenario '$failed_scenario'}; logs in $W/logs"
    for f in kube-apiserver webhook etcd; do
      [ -s "$W/logs/$f.log" ] || continue
      echo "----- last 40 lines of $f.log -----" >&2
      tail -n 40 "$W/logs/$f.log" >&2
    done
  fi
  stop_all
  ip netns del "$WNS" 2>/dev/null || true
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
in_webhook_ns() { ip netns exec "$WNS" "$@"; }

log "network: control plane on $CP_IP, webhook in namespace $WNS on $WH_IP"
ip link set lo up
ip netns add "$WNS"
ip link add krw-cp type veth peer name krw-wh netns "$WNS"
ip addr add "$CP_IP/30" dev krw-cp
ip link set krw-cp up
in_webhook_ns ip addr add "$WH_IP/30" dev krw-wh
in_webhook_ns ip link set krw-wh up
in_webhook_ns ip link set lo up

log "certificates"
P=$W/pki
pki_ca "$P" ca "e2e cluster CA"
pki_cert "$P" apiserver ca "/CN=kube-apiserver" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost,IP:127.0.0.1,IP:$CP_IP,IP:198.19.0.1" serverAuth
pki_cert "$P" admin ca "/O=system:masters/CN=e2e-admin" "" clientAuth
pki_ca "$P" etcd-ca "e2e etcd CA"
pki_cert "$P" etcd etcd-ca "/CN=etcd" "DNS:localhost,IP:127.0.0.1" both
pki_cert "$P" apiserver-etcd-client etcd-ca "/CN=kube-apiserver" "" clientAuth
openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
# The webhook's serving certificate, for its Service name, from its own CA.
pki_ca "$P" webhook-ca "kubevirt-reboot-webhook e2e CA"
WH_SVC=kubevirt-reboot-webhook.kubevirt-reboot-webhook.svc
pki_cert "$P" webhook-serving webhook-ca "/CN=$WH_SVC" "DNS:$WH_SVC,DNS:$WH_SVC.cluster.local" serverAuth
cp "$P/webhook-serving.crt" "$W/webhook-tls/tls.crt"
cp "$P/webhook-serving.key" "$W/webhook-tls/tls.key"
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

start_etcd() {
  start_bg etcd "$ETCD" --name e2e --data-dir "$W/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster e2e=http://127.0.0.1:2380 \
    --cert-file "$P/etcd.crt" --key-file "$P/etcd.key" --client-cert-auth --trusted-ca-file "$P/etcd-ca.crt" \
    --log-level warn
  wait_until 30 "etcd healthy" etcd_call /health
}

# etcd_call PATH [JSON]: etcd's HTTP gateway with the API server's client certificate.
etcd_call() {
  curl -fsS --max-time 5 --cacert "$P/etcd-ca.crt" --cert "$P/apiserver-etcd-client.crt" --key "$P/apiserver-etcd-client.key" \
    ${2:+-X POST -d "$2"} "https://127.0.0.1:2379$1"
}

# start_apiserver [NAME PORT]: the real kube-apiserver; RBAC, the default
# admission plugins (MutatingAdmissionWebhook and ValidatingAdmissionWebhook
# among them) and Service routing to endpoints, as the webhook needs.
start_apiserver() {
  local name=${1:-kube-apiserver} port=${2:-6443}
  start_bg "$name" "$KUBE_APISERVER" \
    --bind-address=0.0.0.0 --secure-port="$port" --advertise-address="$CP_IP" \
    --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$P/etcd-ca.crt" \
    --etcd-certfile="$P/apiserver-etcd-client.crt" --etcd-keyfile="$P/apiserver-etcd-client.key" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" --api-audiences=https://kubernetes.default.svc \
    --service-cluster-ip-range=198.19.0.0/24 --authorization-mode=RBAC \
    --enable-aggregator-routing=true --admission-control-config-file="$W/admission.yaml" \
    --audit-policy-file="$W/audit-policy.yaml" --audit-log-path="$W/audit.log" \
    --profiling=false --v=1
  wait_until 90 "$name ready" curl -fsS --max-time 2 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
    "https://127.0.0.1:$port/readyz"
}

started=$SECONDS
log "starting etcd and kube-apiserver"
start_etcd
start_apiserver
log "control plane ready in $((SECONDS - started)) s"
server_version=$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
expect_eq "$server_version" "$K8S_VERSION" "the API server's version"

log "installing KubeVirt's API surface"
k apply -f "$E2E/cluster/kubevirt-crds.yaml" >/dev/null
k wait --for condition=established --timeout=60s crd --all >/dev/null
k apply -f "$E2E/cluster/kubevirt.yaml" >/dev/null
k create namespace e2e >/dev/null
# A plain user who may manage KubeVirt objects in namespace e2e, and is not trusted.
k create role kubevirt-editor -n e2e --verb='*' --resource=virtualmachines.kubevirt.io,virtualmachineinstances.kubevirt.io,virtualmachineinstancereplicasets.kubevirt.io,virtualmachinepools.pool.kubevirt.io >/dev/null
k create rolebinding jane -n e2e --role=kubevirt-editor --user=jane >/dev/null

# ------------------------------------------------------------- webhook -----
# The webhook installed from the project's own manifests. What differs from
# a cluster: the process runs here, in its network namespace, instead of in
# a Pod (so Endpoints are written by hand, as the endpoints controller would),
# with the TLS files under $W instead of the Secret volume, and with a token
# of the manifests' ServiceAccount from the TokenRequest API.
install_manifests() {   # install_manifests KUSTOMIZE_DIR
  "$KUBECTL" kustomize "$1" \
    | sed "s|caBundle: \"\"|caBundle: $(base64 -w0 <"$P/webhook-ca.crt")|" \
    | k apply -f - >/dev/null
  write_endpoints kubevirt-reboot-webhook
}

# write_endpoints NAMESPACE: what the endpoints controller would write for the
# webhook's Service there, pointing at this run's webhook process.
write_endpoints() {
  k apply -f - >/dev/null 2> >(grep -v 'v1 Endpoints is deprecated' >&2) <<EP
apiVersion: v1
kind: Endpoints
metadata:
  name: kubevirt-reboot-webhook
  namespace: $1
subsets:
- addresses: [{ip: $WH_IP}]
  ports: [{name: https, port: 8443}, {name: metrics, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubevirt-reboot-webhook-e2e
  namespace: $1
  labels: {kubernetes.io/service-name: kubevirt-reboot-webhook}
addressType: IPv4
endpoints:
- addresses: [$WH_IP]
  conditions: {ready: true}
ports:
- {name: https, port: 8443, protocol: TCP}
- {name: metrics, port: 8080, protocol: TCP}
EP
}

# The container's args from the installed Deployment, with the Secret
# volume's path replaced by ours.
deployment_args() {
  k -n "${WH_NAMESPACE:-kubevirt-reboot-webhook}" get deployment kubevirt-reboot-webhook \
    -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}' \
    | sed "s|/etc/webhook/tls/|$W/webhook-tls/|"
}

# start_webhook [EXTRA ARGS...]
start_webhook() {
  local args
  mapfile -t args < <(deployment_args)
  in_webhook_ns true   # the namespace exists
  start_bg webhook ip netns exec "$WNS" "$WEBHOOK_BIN" "${args[@]}" --kubeconfig "$W/webhook.kubeconfig" "$@"
  wait_until 60 "webhook ready" curl -fsS --max-time 2 "http://$WH_IP:8080/readyz"
}

restart_webhook() { stop webhook; start_webhook "$@"; }

# 1,000 VMs (and 10 BootOnce ones) exist before the webhook is installed and
# starts (scenario watches).
k create namespace fleet >/dev/null
for batch in "-prefix fleet -count 1000" "-prefix fleet-bo -count 10 -run-strategy BootOnce"; do
  # shellcheck disable=SC2086
  out=$("$E2EHELPER" vms -kubeconfig "$W/admin.kubeconfig" -n fleet $batch)
  expect_contains "$out" '"failed":0' "creating the fleet of VMs"
done

install_manifests "$ROOT/manifests"
token=$(k -n kubevirt-reboot-webhook create token kubevirt-reboot-webhook --duration=6h)
kubeconfig "$W/webhook.kubeconfig" "https://$CP_IP:6443" "$P/ca.crt" token "$token"

log "starting the webhook (cluster mode, as ServiceAccount kubevirt-reboot-webhook)"
start_webhook

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

# helm last: it replaces the kustomize install; audit reads what all wrote.
for s in watches dryrun stamp race reinvocation gate ratchet compat failure_policy blast_radius rotation mtls latency helm audit; do
  scenario "$s"
done
echo "e2e: $passed passed, 0 failed"
