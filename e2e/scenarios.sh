# The scenarios of make e2e, sourced by e2e/run.sh after set-up. Each is an
# assertion on what the real kubectl prints or the real API server stores.

M=kubevirt_reboot_webhook
GATE=RecreateVMIOnReboot
KV=(-n kubevirt)
CONTROLLER=system:serviceaccount:kubevirt:kubevirt-controller

# gate_spec JSON: replaces the KubeVirt resource's developerConfiguration.
gate_spec() {
  k "${KV[@]}" patch kubevirt kubevirt --type=merge \
    -p "{\"spec\":{\"configuration\":{\"developerConfiguration\":$1}}}" >/dev/null
}
gate_version() {
  k "${KV[@]}" patch kubevirt kubevirt --subresource=status --type=merge \
    -p "{\"status\":{\"observedKubeVirtVersion\":$1}}" >/dev/null
}

# more_log_lines N PATTERN: the webhook's Pods logged more than N lines matching PATTERN.
more_log_lines() {
  [ "$(webhook_logs | grep -c "$2" || true)" -gt "$1" ]
}

# Whether the API server, through the webhook, admits a VM with rebootPolicy.
rebootpolicy_allowed() {
  k apply --dry-run=server -n e2e -f - >/dev/null 2>&1 <<VM
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: gate-probe}
spec:
  runStrategy: Always
  template: {spec: {domain: {rebootPolicy: Terminate, devices: {}}}}
VM
}
rebootpolicy_denied() { ! rebootpolicy_allowed; }

# expect_gate on|off: the verdict follows within 10 s; prints the seconds taken.
expect_gate() {
  local t0=$SECONDS
  if [ "$1" = on ]; then
    wait_until 10 "the webhook to see the gate on" rebootpolicy_allowed
  else
    wait_until 10 "the webhook to see the gate off" rebootpolicy_denied
  fi
  echo $((SECONDS - t0))
}

# vm NS NAME RUNSTRATEGY [REBOOTPOLICY]: a VirtualMachine manifest.
vm() {
  cat <<VM
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: $2, namespace: $1}
spec:
  runStrategy: $3
  template:
    spec:
      domain:
        ${4:+rebootPolicy: $4}
        devices: {}
        resources: {requests: {memory: 64Mi}}
VM
}

# vmi NS NAME OWNER [UID] [LABELS]: a VMI controlled by VM OWNER (its live
# uid unless UID is given), as virt-controller writes it.
vmi() {
  local uid=${4:-$(k -n "$1" get vm "$3" -o jsonpath='{.metadata.uid}')}
  cat <<VMI
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: $2
  namespace: $1
  labels: {${5:-e2e.reboot.kubevirt.io/test: vmi}}
  ownerReferences:
  - {apiVersion: kubevirt.io/v1, kind: VirtualMachine, name: $3, uid: $uid, controller: true, blockOwnerDeletion: true}
spec:
  domain: {devices: {}, resources: {requests: {memory: 64Mi}}}
VMI
}

# stream_owners: the two VMs whose VMIs the streams create, one BootOnce
# (must come back stamped) and one Always (must not).
stream_owners() {
  k -n e2e get vm stream-bootonce >/dev/null 2>&1 || vm e2e stream-bootonce BootOnce | k create -f - >/dev/null
  k -n e2e get vm stream-always >/dev/null 2>&1 || vm e2e stream-always Always | k create -f - >/dev/null
}

# start_stream NAME: VMI creates in namespace e2e at E2E_STREAM_RATE per
# second (default 50), as virt-controller would, alternating between the two
# owners of stream_owners, until stop_stream NAME.
start_stream() {
  start_bg "stream-$1" "$E2EHELPER" stream -kubeconfig "$W/admin.kubeconfig" -n e2e -rate "${E2E_STREAM_RATE:-50}" \
    -owners stream-bootonce,stream-always -prefix "$1"
  wait_until 30 "the stream $1 to start" k -n e2e get vmi "$1-10"
}

# stop_stream NAME: stops it and prints its summary (JSON, see e2ehelper
# stream); its VMIs are deleted.
stop_stream() {
  stop "stream-$1"
  tail -n 1 "$W/logs/stream-$1.log"
  k -n e2e delete vmi -l "e2e.reboot.kubevirt.io/stream=$1" --wait=false >/dev/null 2>&1 || true
}

# expect_clean_stream SUMMARY WHAT: no create failed, every VMI of the
# BootOnce VM was stamped and no other; logs the figures.
expect_clean_stream() {
  python3 - "$1" "$2" <<'PY' >&2 || die "$2: $1"
import json, sys
s, what = json.loads(sys.argv[1]), sys.argv[2]
print(f"  {what}: {s['created']} created in {s['seconds']:.1f} s ({s['rate']:.0f}/s), {s['failed']} failed, "
      f"{s['unstamped']} BootOnce VMIs unstamped, {s['wrongly_stamped']} others stamped; "
      f"create p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.0f} ms")
for e in s["errors"] or []:
    print(f"    error: {e}")
ok = s["failed"] == 0 and s["unstamped"] == 0 and s["wrongly_stamped"] == 0 and s["created"] > 0
sys.exit(0 if ok else 1)
PY
}

# stored_vmi NS NAME: "<annotation>|<rebootPolicy>" of the stored VMI.
stored_vmi() {
  k -n "$1" get vmi "$2" -o jsonpath='{.metadata.annotations.runstrategy\.kubevirt\.io}|{.spec.domain.rebootPolicy}'
}

# review_for_vmi NS NAME OWNER UID: an AdmissionReview of that VMI's CREATE,
# to ask the webhook directly (while the API server is away).
review_for_vmi() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
ns, name, owner, uid = sys.argv[1:]
obj = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
       "metadata": {"name": name, "namespace": ns, "ownerReferences": [{"apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine", "name": owner, "uid": uid, "controller": True}]},
       "spec": {"domain": {"devices": {}}}}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "e2e-direct", "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachineInstance"},
    "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachineinstances"},
    "name": name, "namespace": ns, "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kubevirt:kubevirt-controller"}, "object": obj}}))
PY
}

# ---------------------------------------------------------------------------
# Watches for real: VMs that exist before the webhook starts are served from
# its cache (zero GETs); across an API server restart with a compacted etcd
# (history it could resume a watch from is gone) it keeps answering, and
# then honours what changed while it was away, the gate included.
scenario_watches() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  wait_until 20 "webhook ready" endpoints_match_pods
  local cached
  for cached in $(metric_each "${M}_vm_cache_objects"); do
    [ "$cached" -ge 1010 ] || die "a replica's VM cache holds $cached objects, expected the 1,010 created before start"
  done
  local api0 cache0; api0=$(metric "$WH_METRICS" "${M}_owner_lookups_total{result=\"api\"}")
  cache0=$(metric "$WH_METRICS" "${M}_owner_lookups_total{result=\"cache\"}")
  for i in 0 1 2 3 4; do
    vmi fleet "fleet-bo-$i" "fleet-bo-$i" | k create --as="$CONTROLLER" -f - >/dev/null
    vmi fleet "fleet-$i" "fleet-$i" | k create --as="$CONTROLLER" -f - >/dev/null
    expect_eq "$(stored_vmi fleet "fleet-bo-$i")" "BootOnce|Terminate" "VMI of BootOnce VM fleet-bo-$i"
    expect_eq "$(stored_vmi fleet "fleet-$i")" "|" "VMI of Always VM fleet-$i"
  done
  expect_eq "$(metric "$WH_METRICS" "${M}_owner_lookups_total{result=\"api\"}")" "$api0" "owner GETs while stamping from the cache"
  expect_eq "$(metric "$WH_METRICS" "${M}_owner_lookups_total{result=\"cache\"}")" "$((cache0 + 10))" "owner lookups served from the cache"

  local gone_uid bo8_uid; gone_uid=$(k -n fleet get vm fleet-bo-9 -o jsonpath='{.metadata.uid}')
  bo8_uid=$(k -n fleet get vm fleet-bo-8 -o jsonpath='{.metadata.uid}')
  log "  kube-apiserver away: the webhook answers from its cache"
  local WH_POD_IP; WH_POD_IP=$(webhook_pod_ip)
  stop kube-apiserver
  local answer
  answer=$(wh_curl -H 'Content-Type: application/json' --data-binary @<(review_for_vmi fleet direct fleet-bo-8 "$bo8_uid") \
    "https://$WH_SVC:8443/mutate")
  expect_contains "$answer" '"allowed":true' "webhook answer while the API server is down"
  expect_contains "$answer" '"patch":' "webhook stamps from its cache while the API server is down"

  log "  a second kube-apiserver (the webhook cannot reach it) changes VMs and turns the gate off; etcd is compacted"
  start_apiserver kube-apiserver-b 6444
  local kb=("$KUBECTL" --kubeconfig "$W/admin.kubeconfig" --server https://127.0.0.1:6444 --request-timeout=30s)
  vm fleet outage-new BootOnce | "${kb[@]}" create -f - >/dev/null
  "${kb[@]}" -n fleet delete vm fleet-bo-9 >/dev/null
  "${kb[@]}" -n fleet patch vm fleet-7 --type=merge -p '{"spec":{"runStrategy":"BootOnce"}}' >/dev/null
  "${kb[@]}" "${KV[@]}" patch kubevirt kubevirt --type=merge \
    -p '{"spec":{"configuration":{"developerConfiguration":{"featureGates":[]}}}}' >/dev/null
  stop kube-apiserver-b
  local rev
  rev=$(etcd_call /v3/kv/range '{"key":"AA=="}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
  etcd_call /v3/kv/compaction "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
  log "  etcd compacted at revision $rev; kube-apiserver back"
  # Lines logged from here on: the count of each before the restart.
  local kv_live vm_live replicas
  kv_live=$(webhook_logs | grep -c 'KubeVirt watch live again' || true)
  vm_live=$(webhook_logs | grep -c 'VirtualMachine cache live again' || true)
  replicas=$(cat "$W/shipped-replicas.$WH_NS")
  start_apiserver
  # Both watches of every replica relist after any failure (neither trusts a
  # resumed watch, whose history the compaction removed) and say when they
  # are live again.
  wait_until 90 "the KubeVirt watches to be live again after the restart" \
    more_log_lines "$((kv_live + replicas - 1))" 'KubeVirt watch live again'
  wait_until 90 "the VM caches to be live again after the restart" \
    more_log_lines "$((vm_live + replicas - 1))" 'VirtualMachine cache live again'
  wait_until 60 "the webhook's Pods ready again" endpoints_match_pods
  expect_eq "$(metric "$WH_METRICS" "${M}_feature_gate_enabled")" 0 "gate turned off while the webhook could not see it"
  expect_gate off >/dev/null
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null

  vmi fleet outage-new outage-new | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi fleet outage-new)" "BootOnce|Terminate" "VMI of a BootOnce VM created during the outage"
  # As stored by the create (the garbage collector deletes it right after:
  # its owner is gone).
  expect_eq "$(vmi fleet fleet-bo-9 fleet-bo-9 "$gone_uid" | k create --as="$CONTROLLER" -f - \
      -o jsonpath='{.metadata.annotations.runstrategy\.kubevirt\.io}|{.spec.domain.rebootPolicy}')" \
    "|" "VMI of a VM deleted during the outage (owner gone: unchanged)"
  vmi fleet fleet-7 fleet-7 | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi fleet fleet-7)" "BootOnce|Terminate" "VMI of a VM switched to BootOnce during the outage"
}

# ---------------------------------------------------------------------------
# The owner cache's freshness fence (README, "What the owner cache
# guarantees") against the real API server: e2ehelper race switches VMs
# between BootOnce and Always and creates each one's VMI right after the
# switch, as virt-controller does, carrying kubevirt.io/vm-generation. Every
# VMI must get the verdict of its VM as switched, whether or not the
# webhook's watch had delivered the switch by then; the fence reads say how
# often it had not (each one a wrong verdict without the fence).
# E2E_RACE_UNFENCED=1 also runs the race against the webhook started with
# the hidden --e2e-skip-owner-fence (the cache as before the fence) and
# requires wrong verdicts there: the race the fence closes, lost.
# E2E_RACE_VMS (50) VMs, E2E_RACE_ROUNDS (8) switches each.
scenario_race() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  k create namespace race >/dev/null
  local race=("$E2EHELPER" race -kubeconfig "$W/admin.kubeconfig" -n race
    -count "${E2E_RACE_VMS:-50}" -rounds "${E2E_RACE_ROUNDS:-8}")
  local fences=("$WH_METRICS" "${M}_owner_fence_reads_total{reason=\"generation\"}")
  local f0 out
  f0=$(metric "${fences[@]}")
  out=$("${race[@]}" -prefix fenced)
  log "  with the fence: $out; the watch was behind for $(($(metric "${fences[@]}") - f0)) of them"
  expect_contains "$out" '"wrong":0,' "VMIs created right after their VM's switch"
  if [ -n "${E2E_RACE_UNFENCED:-}" ]; then
    restart_webhook --e2e-skip-owner-fence
    out=$("${race[@]}" -prefix unfenced)
    log "  without the fence: $out"
    restart_webhook
    expect_not_contains "$out" '"wrong":0,' "without the fence, VMIs created right after their VM's switch"
  fi
}

# ---------------------------------------------------------------------------
# kubectl apply --dry-run=server of each file in examples/invalid: kubectl
# prints exactly the expected lines (e2e/expected/dryrun/), nothing is stored.
scenario_dryrun() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  local f name out
  for f in "$ROOT"/examples/invalid/*.yaml; do
    name=$(basename "$f" .yaml)
    if out=$(k apply --dry-run=server -f "$f" 2>&1); then
      die "$name: kubectl apply --dry-run=server succeeded: $out"
    fi
    if [ -n "${E2E_UPDATE_EXPECTED:-}" ]; then
      printf '%s\n' "$out" >"$E2E/expected/dryrun/$name.txt"
    fi
    expect_eq "$out" "$(cat "$E2E/expected/dryrun/$name.txt")" "kubectl's output for examples/invalid/$name.yaml"
    local kind objname
    kind=$(awk '/^kind:/ { print $2; exit }' "$f"); objname=$(awk '/^  name:/ { print $2; exit }' "$f")
    if k -n default get "$kind" "$objname" >/dev/null 2>&1; then die "$name: $kind/$objname was stored"; fi
  done
}

# ---------------------------------------------------------------------------
# The VMI of a BootOnce VM, created by KubeVirt's controller, is stored
# stamped; a plain user cannot forge the annotation; an Always VM's VMI is
# left alone.
scenario_stamp() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  vm e2e installer BootOnce | k create -f - >/dev/null
  vm e2e always Always | k create -f - >/dev/null
  vmi e2e installer installer | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi e2e installer)" "BootOnce|Terminate" "stored VMI of the BootOnce VM"
  local out
  # A plain user forges the annotation: on a VMI of a VM that is not BootOnce
  # the mutating webhook removes it; on a VMI without a VM owner (which
  # only the validating webhook sees) it is denied.
  local forge='s|^  labels:.*|  annotations: {runstrategy.kubevirt.io: BootOnce}|'
  out=$(vmi e2e forged always | sed "$forge" | k create --as=jane -f - 2>&1) || die "jane's VMI of the Always VM: $out"
  expect_eq "$(stored_vmi e2e forged)" "|" "a forged annotation on the VMI of an Always VM"
  if out=$(vmi e2e forged-orphan none 00000000-0000-0000-0000-000000000000 | sed "$forge; /ownerReferences/,+1d" \
      | k create --as=jane -f - 2>&1); then
    die "a plain user's VMI with a forged annotation and no owner was admitted: $out"
  fi
  expect_eq "$out" "$(cat "$E2E/expected/dryrun/forged-annotation-vmi.txt")" "kubectl's output for a forged annotation"
  vmi e2e always always | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi e2e always)" "|" "stored VMI of the Always VM"
}

# ---------------------------------------------------------------------------
# Reinvocation: a second mutating webhook, called after ours, removes the
# annotation; the API server calls ours again (reinvocationPolicy IfNeeded)
# and the stored VMI is stamped, once, and valid.
scenario_reinvocation() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  pki_cert "$P" reinvoke webhook-ca "/CN=127.0.0.1" "IP:127.0.0.1" serverAuth
  start_bg reinvoke-webhook "$E2EHELPER" webhook -listen 127.0.0.1:9443 -cert "$P/reinvoke.crt" -key "$P/reinvoke.key"
  wait_until 10 "second webhook up" curl -fsS --cacert "$P/webhook-ca.crt" https://127.0.0.1:9443/calls
  k apply -f - >/dev/null <<WH
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: zz-e2e-strip-annotation}
webhooks:
- name: strip.e2e.reboot.kubevirt.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: Never
  clientConfig:
    url: https://127.0.0.1:9443/mutate
    caBundle: $(base64 -w0 <"$P/webhook-ca.crt")
  objectSelector: {matchLabels: {e2e.reboot.kubevirt.io/strip: "true"}}
  rules:
  - {apiGroups: [kubevirt.io], apiVersions: [v1], operations: [CREATE], resources: [virtualmachineinstances]}
WH
  k get vm -n e2e installer >/dev/null 2>&1 || vm e2e installer BootOnce | k create -f - >/dev/null
  local before; before=$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"mutate\"")
  vmi e2e reinvoked installer "" 'e2e.reboot.kubevirt.io/strip: "true"' | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi e2e reinvoked)" "BootOnce|Terminate" "stored VMI after reinvocation"
  expect_eq "$(k -n e2e get vmi reinvoked -o jsonpath='{.metadata.labels.e2e\.reboot\.kubevirt\.io/touched}')" "true" \
    "the second webhook changed the VMI"
  expect_eq "$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"mutate\"")" "$((before + 2))" \
    "calls to /mutate for one VMI (first call and reinvocation)"
  k delete mutatingwebhookconfiguration zz-e2e-strip-annotation >/dev/null
  stop reinvoke-webhook
}

# ---------------------------------------------------------------------------
# The gate follows the KubeVirt resource without a restart: either name,
# disabledFeatureGates, and the version default (on from v1.9.0).
scenario_gate() {
  local s
  gate_spec '{"featureGates":[],"disabledFeatureGates":[]}'; gate_version '"v1.8.2"'
  s=$(expect_gate off); log "  no gate, KubeVirt v1.8.2: off (${s}s)"
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  s=$(expect_gate on); log "  featureGates [$GATE]: on (${s}s)"
  gate_spec '{"featureGates":[]}'
  s=$(expect_gate off); log "  gate removed: off (${s}s)"
  gate_spec '{"featureGates":["RebootPolicy"]}'
  s=$(expect_gate on); log "  featureGates [RebootPolicy] (upstream name): on (${s}s)"
  gate_spec '{"featureGates":[]}'; gate_version '"v1.9.0"'
  s=$(expect_gate on); log "  no gate, KubeVirt v1.9.0: on by default (${s}s)"
  gate_spec '{"disabledFeatureGates":["RebootPolicy"]}'
  s=$(expect_gate off); log "  v1.9.0 with disabledFeatureGates [RebootPolicy]: off (${s}s)"
  gate_spec '{"featureGates":["RecreateVMIOnReboot"],"disabledFeatureGates":["RebootPolicy"]}'
  s=$(expect_gate on); log "  enabled wins over disabled: on (${s}s)"
  gate_spec '{"featureGates":[],"disabledFeatureGates":[]}'; gate_version 'null'
  s=$(expect_gate off); log "  no gate, no version: off (${s}s)"
}

# ---------------------------------------------------------------------------
# Ratcheting: a VM stored with rebootPolicy stays editable after the gate is
# turned off, and kubectl prints the webhook's warning.
scenario_ratchet() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  vm e2e ratchet Always Terminate | k create -f - >/dev/null
  gate_spec '{"featureGates":[]}'
  expect_gate off >/dev/null
  local out
  out=$(k -n e2e label vm ratchet edited=yes 2>&1) || die "editing a stored VM with rebootPolicy after the gate went off failed: $out"
  expect_eq "$out" "Warning: spec.template.spec.domain.rebootPolicy: rebootPolicy is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it
virtualmachine.kubevirt.io/ratchet labeled" "kubectl's output for an unrelated edit"
  if out=$(k -n e2e patch vm ratchet --type=merge -p '{"spec":{"template":{"spec":{"domain":{"rebootPolicy":"Reboot"}}}}}' 2>&1); then
    die "changing rebootPolicy with the gate off was admitted: $out"
  fi
  expect_contains "$out" "requires the feature gate RecreateVMIOnReboot" "changing rebootPolicy with the gate off"
}

# ---------------------------------------------------------------------------
# Compat mode (the compat overlay, --bootonce=compat): BootOnce is stored as
# Once + Terminate + annotation; re-applying client-side and server-side
# succeeds without conflicts and kubectl diff shows nothing.
scenario_compat() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  install_manifests "$ROOT/manifests/overlays/compat"
  expect_gate on >/dev/null
  local f=$ROOT/examples/bootonce-vm.yaml out
  out=$(k apply -f "$f" 2>&1) || die "kubectl apply of examples/bootonce-vm.yaml: $out"
  expect_eq "$(k -n default get vm installer -o jsonpath='{.spec.runStrategy}|{.spec.template.spec.domain.rebootPolicy}|{.metadata.annotations.runstrategy\.kubevirt\.io}|{.spec.template.metadata.annotations.runstrategy\.kubevirt\.io}')" \
    "Once|Terminate|BootOnce|BootOnce" "stored compat VM"
  # Re-applied, kubectl sends runStrategy BootOnce again (it differs from the
  # stored Once); the webhook rewrites it to the same object, so the API
  # server stores nothing new: the resourceVersion stays.
  local stored; stored=$(k -n default get vm installer -o jsonpath='{.metadata.resourceVersion}')
  out=$(k apply -f "$f" 2>&1) || die "client-side re-apply: $out"
  expect_eq "$out" "virtualmachine.kubevirt.io/installer configured" "client-side re-apply"
  expect_eq "$(k -n default get vm installer -o jsonpath='{.metadata.resourceVersion}')" "$stored" \
    "resourceVersion after a client-side re-apply"
  out=$(k diff -f "$f" 2>&1) || die "kubectl diff shows a difference: $out"
  expect_eq "$out" "" "kubectl diff"
  # Server-side apply from the start: the same, with kubectl diff --server-side.
  local g=$W/bootonce-ssa.yaml
  sed 's/name: installer$/name: installer-ssa/' "$f" >"$g"
  out=$(k apply --server-side -f "$g" 2>&1) || die "server-side apply: $out"
  expect_eq "$(k -n default get vm installer-ssa -o jsonpath='{.spec.runStrategy}|{.spec.template.spec.domain.rebootPolicy}|{.metadata.annotations.runstrategy\.kubevirt\.io}')" \
    "Once|Terminate|BootOnce" "stored compat VM (server-side apply)"
  stored=$(k -n default get vm installer-ssa -o jsonpath='{.metadata.resourceVersion}')
  out=$(k apply --server-side -f "$g" 2>&1) || die "server-side re-apply: $out"
  expect_eq "$out" "virtualmachine.kubevirt.io/installer-ssa serverside-applied" "server-side re-apply"
  expect_eq "$(k -n default get vm installer-ssa -o jsonpath='{.metadata.resourceVersion}')" "$stored" \
    "resourceVersion after a server-side re-apply"
  out=$(k diff --server-side -f "$g" 2>&1) || die "kubectl diff --server-side shows a difference: $out"
  expect_eq "$out" "" "kubectl diff --server-side"
  # Switching a client-side-applied compat VM to server-side apply: the
  # stored runStrategy (Once) differs from the applied one (BootOnce) and is
  # owned by kubectl-client-side-apply, so the API server reports a conflict
  # once; --force-conflicts takes the field over (README, compat mode).
  if out=$(k apply --server-side -f "$f" 2>&1); then die "expected the documented one-time conflict: $out"; fi
  expect_contains "$out" 'conflict with "kubectl-client-side-apply" using kubevirt.io/v1: .spec.runStrategy' "switch to server-side apply"
  out=$(k apply --server-side --force-conflicts -f "$f" 2>&1) || die "server-side apply --force-conflicts: $out"
  out=$(k apply --server-side -f "$f" 2>&1) || die "server-side apply after taking the field over: $out"
  k -n default delete vm installer-ssa >/dev/null
  vmi default installer installer | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi default installer)" "BootOnce|Terminate" "VMI of the compat VM"
  k -n default delete vmi installer >/dev/null
  k -n default delete vm installer >/dev/null
  install_manifests "$ROOT/manifests"
}

# ---------------------------------------------------------------------------
# failurePolicy Fail: with the webhook stopped, VM writes fail with the API
# server's message; kube-system (exempt by namespaceSelector) still writes.
scenario_failure_policy() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  stop_webhook
  local out
  if out=$(vm e2e fp-terminate Always Terminate | k create -f - 2>&1); then
    die "a VM with rebootPolicy was admitted while the webhook was down"
  fi
  expect_contains "$out" "failed calling webhook \"validate.reboot.kubevirt.io\"" "VM write with the webhook down"
  # matchConditions: writes that do not use the feature never reach the
  # webhook, so an outage does not block them ...
  out=$(vm e2e fp-plain Always | k create -f - 2>&1) || die "plain VM create with the webhook down: $out"
  out=$(k -n e2e patch vm fp-plain --type=merge -p '{"spec":{"runStrategy":"Halted"}}' 2>&1) || die "plain VM update with the webhook down: $out"
  out=$(k -n e2e label vm fp-plain edited=yes 2>&1) || die "plain VM label with the webhook down: $out"
  out=$(k -n e2e delete vm fp-plain 2>&1) || die "plain VM delete with the webhook down: $out"
  out=$(vmi e2e fp-orphan fp-none 00000000-0000-0000-0000-000000000000 | sed '/ownerReferences/,+1d' | k create -f - 2>&1) \
    || die "VMI without a VirtualMachine owner with the webhook down: $out"
  # ... while every write that uses it is refused: BootOnce in any spelling,
  # the reserved annotation, and a VMI of a VM (only the owner tells whether
  # it must be stamped).
  local refused
  for refused in "$(vm e2e fp-bootonce BootOnce)" "$(vm e2e fp-misspelled bootonce)" \
      "$(vmi e2e fp-forged fp-none 00000000-0000-0000-0000-000000000000 | sed '/ownerReferences/,+1d; s|^  labels:.*|  annotations: {runstrategy.kubevirt.io: BootOnce}|')" \
      "$(vm e2e fp-owner Always | k create -f - >/dev/null; vmi e2e fp-owned fp-owner)"; do
    if out=$(printf '%s\n' "$refused" | k create -f - 2>&1); then
      die "a write that uses the feature was admitted while the webhook was down: $out"
    fi
    expect_contains "$out" "failed calling webhook" "feature write with the webhook down"
  done
  out=$(vm kube-system fp-terminate Always Terminate | k create -f - 2>&1) || die "kube-system write with the webhook down: $out"
  k -n kube-system delete vm fp-terminate >/dev/null
  start_webhook
  out=$(vm e2e fp-terminate Always Terminate | k create -f - 2>&1) || die "VM write after the webhook came back: $out"
}

# ---------------------------------------------------------------------------
# The serving certificate is re-issued from the same CA into the Secret while
# VMI creates stream through the webhook: the kubelet updates every Pod's
# Secret volume, each Pod serves the new certificate, no create fails.
scenario_rotation() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  stream_owners
  local ip expiry0
  expiry0=$(metric_each "${M}_certificate_expiry_timestamp_seconds" | sort -n | tail -n 1)
  start_stream rot
  pki_cert "$P" rotated webhook-ca "/CN=$WH_SVC" "$WH_SANS" serverAuth 30
  webhook_secret "$WH_NS" "$P/rotated.crt" "$P/rotated.key"
  local t0=$SECONDS
  wait_until 120 "every Pod to load the new certificate" every_pod_expiry_after "$((expiry0 + 86400))"
  log "  the Pods served the new certificate $((SECONDS - t0)) s after the Secret changed"
  for ip in $(webhook_pod_ips); do
    expect_eq "$(openssl s_client -connect "$ip:8443" -servername "$WH_SVC" </dev/null 2>/dev/null | openssl x509 -noout -serial)" \
      "$(openssl x509 -noout -serial -in "$P/rotated.crt")" "certificate served by the Pod at $ip after rotation"
  done
  sleep 3
  expect_clean_stream "$(stop_stream rot)" "VMI creates across the rotation"
}
every_pod_expiry_after() {
  local e
  for e in $(metric_each "${M}_certificate_expiry_timestamp_seconds"); do [ "$e" -gt "$1" ] || return 1; done
}

# ---------------------------------------------------------------------------
# mTLS: kube-apiserver presents the client certificate of its
# --admission-control-config-file; the webhook, installed with
# components/mtls and a --client-name of the overlay's own, requires it; a
# client without it is refused.
scenario_mtls() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  k -n "$WH_NS" create configmap kubevirt-reboot-webhook-client-ca --from-file=ca.crt="$P/webhook-client-ca.crt" >/dev/null
  local overlay=$W/mtls-overlay
  mkdir -p "$overlay"
  cat >"$overlay/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(realpath --relative-to="$overlay" "$ROOT/manifests")]
components: [$(realpath --relative-to="$overlay" "$ROOT/manifests/components/mtls")]
patches:
- target: {kind: Deployment, name: kubevirt-reboot-webhook}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --client-name=kube-apiserver-webhook-client}
KUST
  install_manifests "$overlay"
  expect_gate on >/dev/null
  local out
  if out=$(k apply --dry-run=server -f "$ROOT/examples/invalid/lowercase-reboot-policy.yaml" 2>&1); then
    die "the invalid VM was admitted under mTLS"
  fi
  expect_contains "$out" 'Unsupported value: "terminate"' "a denial through mTLS"
  vm e2e mtls Always Terminate | k create -f - >/dev/null
  local review='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"kubevirt.io","version":"v1","kind":"VirtualMachine"},"resource":{"group":"kubevirt.io","version":"v1","resource":"virtualmachines"},"operation":"CREATE","userInfo":{"username":"x"},"object":{}}}'
  if wh_curl -H 'Content-Type: application/json' -d "$review" "https://$WH_SVC:8443/validate" >/dev/null 2>&1; then
    die "a client without a certificate was served"
  fi
  if wh_curl --cert "$P/stranger.crt" --key "$P/stranger.key" -H 'Content-Type: application/json' -d "$review" \
      "https://$WH_SVC:8443/validate" >/dev/null 2>&1; then
    die "a client with a certificate from another CA was served"
  fi
  out=$(wh_curl --cert "$P/apiserver-webhook-client.crt" --key "$P/apiserver-webhook-client.key" \
    -H 'Content-Type: application/json' -d "$review" "https://$WH_SVC:8443/validate") || die "the API server's certificate was refused"
  expect_contains "$out" '"allowed":true' "a review with the API server's client certificate"
  install_manifests "$ROOT/manifests"
  k -n "$WH_NS" delete configmap kubevirt-reboot-webhook-client-ca >/dev/null
}

# ---------------------------------------------------------------------------
# The Pods as the kubelet runs them, read from the running containers, not
# from the manifests: the image's user 65532, a read-only root, no
# capabilities, no privilege escalation, seccomp, no shell in the image, the
# Deployment's resource limits on the cgroup, the serving certificate from
# the Secret volume; and the API server reached with the projected
# ServiceAccount token through the kubernetes Service (its audit log names
# the Pod the token was bound to).
scenario_pod_security() {
  local pid n=0 status root sh image
  image=$(k -n "$WH_NS" get pods -l "$WH_SELECTOR" -o jsonpath='{.items[0].status.containerStatuses[0].image}')
  expect_eq "$image" "docker.io/library/$IMAGE_REF" "the Pods' image"
  for pid in $(webhook_container_pids); do
    status=$(cat "/proc/$pid/status")
    expect_contains "$status" $'Uid:\t65532\t65532\t65532\t65532' "the webhook process's user ids"
    expect_contains "$status" $'Gid:\t65532\t65532\t65532\t65532' "the webhook process's group ids"
    local cap
    for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
      expect_contains "$status" $'\n'"$cap:"$'\t0000000000000000' "the webhook process's $cap"
    done
    expect_contains "$status" $'NoNewPrivs:\t1' "no privilege escalation"
    expect_contains "$status" $'Seccomp:\t2' "a seccomp filter (RuntimeDefault)"
    root=$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo")
    [[ $root == ro,* || $root == ro ]] || die "the container's root filesystem is mounted $root, not read-only"
    for sh in bin/sh bin/bash usr/bin/sh usr/bin/bash bin/busybox; do
      [ ! -e "/proc/$pid/root/$sh" ] || die "the image has a shell: /$sh"
    done
    expect_eq "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -d' ' -f1-2)" "/usr/local/bin/kubevirt-reboot-webhook serve" "the entrypoint"
    expect_eq "$(cat "$(cgroup_file "$pid" memory memory.limit_in_bytes)")" 268435456 "the memory limit on the cgroup"
    expect_eq "$(cat "$(cgroup_file "$pid" cpu cpu.cfs_quota_us)")/$(cat "$(cgroup_file "$pid" cpu cpu.cfs_period_us)")" \
      50000/100000 "the CPU limit on the cgroup (500m)"
    cmp -s "/proc/$pid/root/etc/webhook/tls/tls.crt" <(k -n "$WH_NS" get secret kubevirt-reboot-webhook-tls -o jsonpath='{.data.tls\.crt}' | base64 -d) \
      || die "the Pod's /etc/webhook/tls/tls.crt is not the Secret's"
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'KUBERNETES_SERVICE_HOST=198.19.0.1' \
      || die "the Pod was not given the kubernetes Service's address"
    # serve executed itself once with glibc's top_pad (src/allocator.rs):
    # in the image too, read-only root and user 65532.
    tr '\0' '\n' <"/proc/$pid/environ" | grep -q '^GLIBC_TUNABLES=.*glibc.malloc.top_pad=' \
      || die "the webhook process runs without glibc.malloc.top_pad"
    n=$((n + 1))
  done
  expect_eq "$n" "$(cat "$W/shipped-replicas.$WH_NS")" "webhook containers inspected"
  python3 - "$W/audit.log" "$POD_CIDR" <<'PY' >&2 || die "the audit log shows no list of VirtualMachines by the webhook's Pods"
import ipaddress, json, sys
cidr = ipaddress.ip_network(sys.argv[2])
sa = "system:serviceaccount:kubevirt-reboot-webhook:kubevirt-reboot-webhook"
for line in open(sys.argv[1]):
    e = json.loads(line)
    u, o = e.get("user", {}), e.get("objectRef", {})
    if u.get("username") == sa and o.get("resource") == "virtualmachines" and e.get("verb") in ("list", "watch") \
            and any(ipaddress.ip_address(ip) in cidr for ip in e.get("sourceIPs", [])) \
            and u.get("extra", {}).get("authentication.kubernetes.io/pod-name"):
        print(f"  audit: {e['verb']} virtualmachines by {sa} from {e['sourceIPs'][0]}, token bound to Pod "
              f"{u['extra']['authentication.kubernetes.io/pod-name'][0]}")
        sys.exit(0)
sys.exit(1)
PY
}

# ---------------------------------------------------------------------------
# A replica's Pod is evicted, as a node drain does, while VMI creates stream
# in: the PodDisruptionBudget refuses a second eviction until the
# replacement is ready, the evicted Pod turns unready and drains; then the
# other Pod is deleted outright. No create fails. Peak memory under the
# stream stays well under the limit.
scenario_pod_loss() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  stream_owners
  local pods out
  mapfile -t pods < <(webhook_pods)
  [ "${#pods[@]}" -ge 2 ] || die "expected 2 webhook Pods, found: ${pods[*]}"
  start_stream loss
  out=$(evict "${pods[0]}" 2>&1) || die "evicting ${pods[0]}: $out"
  if out=$(evict "${pods[1]}" 2>&1); then
    die "a second Pod was evicted while the first one's replacement was not ready"
  fi
  expect_contains "$out" "disruption budget" "the second eviction"
  local t0=$SECONDS
  wait_until 120 "${pods[0]} gone and its replacement ready" pod_replaced "${pods[0]}"
  log "  ${pods[0]} replaced in $((SECONDS - t0)) s; the second eviction was refused by the PodDisruptionBudget"
  # Then the other Pod deleted outright (kubectl delete pod, or a drain that
  # does not evict): no budget is asked, the Pod gets the same SIGTERM.
  t0=$SECONDS
  k -n "$WH_NS" delete pod "${pods[1]}" --wait=false >/dev/null
  wait_until 120 "${pods[1]} gone and its replacement ready" pod_replaced "${pods[1]}"
  log "  ${pods[1]} deleted and replaced in $((SECONDS - t0)) s"
  sleep 3
  expect_clean_stream "$(stop_stream loss)" "VMI creates while a Pod was evicted and the other deleted"
  expect_memory_under_limit "under the stream"
}
evict() {
  k create --raw "/api/v1/namespaces/$WH_NS/pods/$1/eviction" -f - <<EV
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "$1", "namespace": "$WH_NS"}}
EV
}
pod_replaced() { ! webhook_pods | grep -qx "$1" && endpoints_match_pods; }

# ---------------------------------------------------------------------------
# Certificates the cert-manager way (manifests/overlays/cert-manager): its
# Issuer and Certificates issue the serving certificate into the Secret and
# cainjector writes the CA into both webhooks at once; then, under a stream
# of VMI creates, the serving certificate is renewed (the Secret rewritten,
# the caBundle re-injected, the Pods see the new files only when the kubelet
# updates the volume) and so is the CA: no create fails. cert-manager's
# writes are reproduced by `e2ehelper certmanager` (e2e/README.md).
scenario_cert_manager() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  k apply -f "$E2E/cluster/cert-manager-crds.yaml" >/dev/null
  k wait --for condition=established --timeout=60s crd certificates.cert-manager.io issuers.cert-manager.io >/dev/null
  k -n "$WH_NS" delete secret kubevirt-reboot-webhook-tls >/dev/null
  "$KUBECTL" kustomize "$ROOT/manifests/overlays/cert-manager" | k apply -f - >/dev/null
  cert_manager "$WH_NS" issue >/dev/null
  wait_until 120 "the Pods to serve the certificate cert-manager issued" pods_serve_secret "$WH_NS"
  expect_gate on >/dev/null
  stream_owners
  start_stream cm-leaf
  renew_under_stream "$WH_NS" kubevirt-reboot-webhook "the serving certificate"
  sleep 3
  expect_clean_stream "$(stop_stream cm-leaf)" "VMI creates across the serving certificate's renewal"
  # The CA renewed (same key), then the serving certificate from it: between
  # the two the API server trusts the renewed CA while the Pods serve a
  # certificate the former CA signed.
  start_stream cm-ca
  cert_manager "$WH_NS" issue kubevirt-reboot-webhook-ca >/dev/null
  sleep 3
  renew_under_stream "$WH_NS" kubevirt-reboot-webhook "the serving certificate, now from the renewed CA"
  sleep 3
  expect_clean_stream "$(stop_stream cm-ca)" "VMI creates across the CA's renewal"
  # Back to the dev certificate of the other scenarios.
  k delete -n "$WH_NS" certificates.cert-manager.io,issuers.cert-manager.io --all >/dev/null
  webhook_secret "$WH_NS" "$P/webhook-serving.crt" "$P/webhook-serving.key"
  install_manifests "$ROOT/manifests"
  wait_until 120 "the Pods to serve the dev certificate again" pods_serve_secret "$WH_NS"
}

cert_manager() {   # cert_manager NS issue [CERTIFICATE...]
  local ns=$1; shift
  "$E2EHELPER" certmanager -kubeconfig "$W/admin.kubeconfig" -n "$ns" "$@"
}

# renew_under_stream NS CERTIFICATE WHAT: cert-manager renews it (as `cmctl
# renew` makes it do): the Secret is rewritten and cainjector re-injects the
# CA at once; the Pods serve the new certificate once the kubelet has
# updated their volume.
renew_under_stream() {
  local t0=$SECONDS
  cert_manager "$1" issue "$2" >/dev/null
  wait_until 120 "the Pods to serve what the Secret holds after renewing $3" pods_serve_secret "$1"
  log "  renewed $3: the Pods served it $((SECONDS - t0)) s later"
}

# pods_serve_secret NS: every ready Pod serves tls.crt of the Secret, and
# the API server trusts it with the caBundle it has (a dry-run through the
# webhook succeeds).
pods_serve_secret() {
  local want ip
  want=$(k -n "$1" get secret kubevirt-reboot-webhook-tls -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl x509 -noout -serial)
  for ip in $(WH_NAMESPACE=$1 webhook_pod_ips); do
    [ "$(openssl s_client -connect "$ip:8443" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)" = "$want" ] || return 1
  done
  rebootpolicy_allowed
}

# ---------------------------------------------------------------------------
# Added latency, as a ratio against a floor measured in the same run: VMI
# creates without webhooks ("none"), through a no-op pair with our
# configuration ("floor": e2e/tools/noopwebhook serving where our webhook
# serves, with our command line, answering the constant patch of the same
# shape) and through ours ("ours"). Rounds of 100 creates, the arms' order
# rotating each round, so drift in the machine's load falls on every arm.
# Fails when our added mean is over E2E_LATENCY_RATIO (1.25) times the
# floor's. Per arm it also reports the API server's own measures (webhook
# calls, admission steps, the create request), the CPU the webhook process
# and the API server used, and (ours) the webhook's own handling time.
LAT_ROUNDS=${E2E_LATENCY_ROUNDS:-8}
apiserver_latency_metrics() {
  k get --raw /metrics | grep -E '^apiserver_admission_webhook_admission_duration_seconds_(sum|count|bucket)\{.*name="(mutate|validate)\.reboot|^apiserver_admission_step_admission_duration_seconds_(sum|count)\{.*operation="CREATE"|^apiserver_request_duration_seconds_(sum|count|bucket)\{.*resource="virtualmachineinstances".*verb="POST"|^apiserver_admission_webhook_request_total\{.*name="(mutate|validate)\.reboot|^etcd_request_duration_seconds_(sum|count|bucket)\{.*operation="create".*virtualmachineinstances' || true
}
# cpu_ticks NAME: utime+stime of a process started with start_bg.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$(pid_of "$1")/stat" 2>/dev/null || echo 0; }
# arm_pids ARM: the host PIDs of the containers serving that arm (none for none).
arm_pids() {
  case $1 in
    floor) WH_SELECTOR=app.kubernetes.io/name=kubevirt-reboot-webhook-noop webhook_container_pids ;;
    ours) webhook_container_pids ;;
  esac
}
# arm_ticks ARM: utime+stime of the Pods serving that arm (0 for none).
arm_ticks() {
  local pid sum=0
  for pid in $(arm_pids "$1"); do
    sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
# arm_throttled ARM: "PERIODS NANOSECONDS" the arm's containers were held
# back by their CPU limit (the CFS quota's nr_throttled and throttled_time),
# summed over its Pods.
arm_throttled() {
  local pid
  for pid in $(arm_pids "$1"); do cat "$(cgroup_file "$pid" cpu cpu.stat)" 2>/dev/null; done |
    awk '$1 == "nr_throttled" { p += $2 } $1 == "throttled_time" { t += $2 } END { printf "%.0f %.0f\n", p, t }'
}
webhooks_on() { install_manifests "$ROOT/manifests"; wait_until 15 "webhooks effective" vmi_is_stamped; }
webhooks_off() {
  k delete mutatingwebhookconfiguration,validatingwebhookconfiguration kubevirt-reboot-webhook >/dev/null
  wait_until 15 "webhooks removed" vmi_is_not_stamped
}
vmi_is_stamped() { [ "$(vmi e2e probe lat-owner | k create --dry-run=server --as="$CONTROLLER" -f - -o jsonpath='{.metadata.annotations.runstrategy\.kubevirt\.io}')" = BootOnce ]; }
vmi_is_not_stamped() { [ "$(vmi e2e probe lat-owner | k create --dry-run=server --as="$CONTROLLER" -f - -o jsonpath='{.metadata.annotations.runstrategy\.kubevirt\.io}')" = "" ]; }
# The floor's Pods: the manifests' Deployment and Service renamed
# kubevirt-reboot-webhook-noop, with the no-op image; the same arguments,
# Secret (its certificate names both Services), probes and limits.
floor_install() {
  "$KUBECTL" kustomize "$ROOT/manifests" | k create --dry-run=client -o json -f - | python3 -c '
import json, sys
image, old, new = sys.argv[1], "kubevirt-reboot-webhook", "kubevirt-reboot-webhook-noop"
def rename(labels):
    if labels and labels.get("app.kubernetes.io/name") == old:
        labels["app.kubernetes.io/name"] = new
text, objs, at, decoder = sys.stdin.read(), [], 0, json.JSONDecoder()
while text[at:].strip():   # one JSON object per rendered document
    o, at = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
    objs.extend(o["items"] if o.get("kind") == "List" else [o])
items = []
for o in objs:
    if o["kind"] not in ("Deployment", "Service"):
        continue
    o["metadata"]["name"] = new
    rename(o["metadata"].get("labels"))
    if o["kind"] == "Service":
        rename(o["spec"]["selector"])
    else:
        spec = o["spec"]
        rename(spec["selector"]["matchLabels"])
        rename(spec["template"]["metadata"]["labels"])
        for c in spec["template"]["spec"].get("topologySpreadConstraints", []):
            rename(c["labelSelector"]["matchLabels"])
        spec["template"]["spec"]["containers"][0]["image"] = image
    items.append(o)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))' "$NOOP_IMAGE" | k apply -f - >/dev/null
  local out
  out=$(k -n "$WH_NS" rollout status deployment/kubevirt-reboot-webhook-noop --timeout=180s 2>&1) || die "the floor's rollout: $out"
}
# latency_arm ARM: who answers the webhooks' calls in that arm: nobody
# (configurations deleted), the floor's Service or ours.
latency_arm() {
  case $1 in
    none) webhooks_off ;;
    floor)
      install_manifests "$ROOT/manifests"
      local kind
      for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
        k patch "$kind" kubevirt-reboot-webhook --type=json \
          -p '[{"op":"replace","path":"/webhooks/0/clientConfig/service/name","value":"kubevirt-reboot-webhook-noop"}]' >/dev/null
      done
      wait_until 15 "the floor's webhooks effective" floor_answers ;;
    ours) webhooks_on; wait_until 15 "our webhooks answering" ours_answer ;;
  esac
}
# A denial only ours gives; the floor allows everything.
floor_answers() { vmi_is_stamped && rebootpolicy_lowercase_allowed; }
ours_answer() { vmi_is_stamped && ! rebootpolicy_lowercase_allowed; }
rebootpolicy_lowercase_allowed() {
  sed 's/namespace: default/namespace: e2e/' "$ROOT/examples/invalid/lowercase-reboot-policy.yaml" | k apply --dry-run=server -f - >/dev/null 2>&1
}

scenario_latency() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  vm e2e lat-owner BootOnce | k create -f - >/dev/null
  floor_install
  local round arm out i arms=(none floor ours) t0 a0 w0 th0 pp stamped
  local lat=("$E2EHELPER" latency -kubeconfig "$W/admin.kubeconfig" -n e2e -owner lat-owner -count 100 -warmup 5)
  local L=$W/latency
  rm -rf "$L"; mkdir -p "$L"
  for round in $(seq "$LAT_ROUNDS"); do
    for i in 0 1 2; do
      arm=${arms[$(((round + i) % 3))]}
      latency_arm "$arm"
      apiserver_latency_metrics >"$L/$arm-$round.before"
      [ "$arm" = ours ] && webhook_metrics_sum >"$L/$arm-$round.wh-before"
      t0=$(date +%s.%N) a0=$(cpu_ticks kube-apiserver) w0=$(arm_ticks "$arm") th0=$(arm_throttled "$arm")
      [ -z "${E2E_LATENCY_PROFILE:-}" ] || { k get --raw "/debug/pprof/profile?seconds=2" >"$L/$arm-$round.pprof" & pp=$!; }
      out=$("${lat[@]}" -prefix "lat-$arm-$round" -samples "$L/$arm.ms")
      [ -z "${E2E_LATENCY_PROFILE:-}" ] || wait "$pp" || die "the API server's CPU profile, arm $arm (round $round)"
      echo "$(date +%s.%N) $t0 $(cpu_ticks kube-apiserver) $a0 $(arm_ticks "$arm") $w0" >>"$L/$arm.cpu"
      echo "$(arm_throttled "$arm") $th0" >>"$L/$arm.throttle"
      apiserver_latency_metrics >"$L/$arm-$round.after"
      [ "$arm" = ours ] && webhook_metrics_sum >"$L/$arm-$round.wh-after"
      stamped='"stamped":100'; [ "$arm" = none ] && stamped='"stamped":0'
      expect_contains "$out" "$stamped" "VMI creates, arm $arm (round $round)"
    done
  done
  latency_arm ours
  k -n "$WH_NS" delete deployment,service kubevirt-reboot-webhook-noop >/dev/null
  python3 "$E2E/latency_report.py" "$L" "$LAT_ROUNDS" "${E2E_LATENCY_RATIO:-1.25}" "$(getconf CLK_TCK)" "$W/audit.log" \
    | tee "$W/latency.txt" >&2
  [ -z "${E2E_LATENCY_PROFILE:-}" ] || log "  the API server's CPU profiles, 2 s from each round's start: $L/ARM-ROUND.pprof, kept with E2E_KEEP=1 (go tool pprof -top $L/ours-*.pprof)"
}

# ---------------------------------------------------------------------------
# matchConditions: 1,000 plain VM writes cause zero calls to the webhook;
# every write that uses the feature is still judged.
scenario_blast_radius() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  expect_gate on >/dev/null
  k create namespace blast >/dev/null
  local v0 m0 out
  v0=$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"validate\"")
  m0=$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"mutate\"")
  out=$("$E2EHELPER" vms -kubeconfig "$W/admin.kubeconfig" -n blast -prefix plain -count 200)
  expect_contains "$out" '"failed":0' "200 plain VM creates"
  local round
  for round in 1 2 3 4; do
    out=$("$E2EHELPER" vms -kubeconfig "$W/admin.kubeconfig" -n blast -prefix plain -count 200 -update)
    expect_contains "$out" '"failed":0' "200 plain VM updates"
  done
  expect_eq "$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"validate\"")" "$v0" "calls to /validate for 1,000 plain VM writes"
  expect_eq "$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"mutate\"")" "$m0" "calls to /mutate for 1,000 plain VM writes"
  log "  1,000 plain VM writes (200 creates, 800 updates): 0 webhook calls (1,000 calls to /validate saved)"
  local n=0 f
  for f in "$ROOT"/examples/invalid/*.yaml; do
    sed 's/namespace: default/namespace: blast/' "$f" | k apply --dry-run=server -f - >/dev/null 2>&1 && die "$(basename "$f") admitted"
    n=$((n + 1))
  done
  vm blast feature-terminate Always Terminate | k create -f - >/dev/null; n=$((n + 1))
  vm blast feature-bootonce BootOnce | k create -f - >/dev/null; n=$((n + 1))
  k -n blast patch vm feature-terminate --type=json -p '[{"op":"remove","path":"/spec/template/spec/domain/rebootPolicy"}]' >/dev/null; n=$((n + 1))
  expect_eq "$(metric "$WH_METRICS" "${M}_requests_total{endpoint=\"validate\"")" "$((v0 + n))" "calls to /validate for $n feature writes"
}

# ---------------------------------------------------------------------------
# The fleet's short form (make bench-fleet is the full one): E2E_FLEET_VMS
# (10,000) realistic VMs in 10 namespaces, then the webhook's Pods restarted
# (an initial sync each) and the API server restarted (a relist each). The
# audit log says how they read the VMs: every read of the whole collection
# must be a streaming list (a watch with sendInitialEvents=true) or a page
# (limit=), never an unpaginated list, which the API server builds in its
# memory at once for every replica. Each replica's peak memory stays under
# half its limit. E2E_FLEET_UNPAGINATED=1 also runs the webhook with
# --vm-list-mode=unpaginated and requires both checks to catch it. The fleet
# stays for the scenarios after this one (its VMs carry virt-controller's
# finalizer, which nothing here removes): the chart is installed into a
# cluster of 11,000 VMs.
scenario_fleet() {
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  local n=${E2E_FLEET_VMS:-10000} out t0 mark api replicas vm_live
  replicas=$(cat "$W/shipped-replicas.$WH_NS")
  out=$("$E2EHELPER" fleet-vms -kubeconfig "$W/admin.kubeconfig" -count "$n" -namespaces 10)
  expect_contains "$out" '"failed":0' "creating $n VMs"
  log "  $n VMs created: $out; etcd holds $(etcd_db_mib) MiB"

  api=$(pid_of kube-apiserver)
  mark=$(audit_mark)
  echo 5 >"/proc/$api/clear_refs"   # the API server's VmHWM from here on
  local rss0; rss0=$(proc_kib "$api" VmRSS)
  t0=$SECONDS
  restart_webhook
  log "  the webhook's $replicas Pods restarted and ready in $((SECONDS - t0)) s with $(metric_each "${M}_vm_cache_objects" | tr '\n' ' ')VMs cached;" \
    "the API server's peak RSS grew by $((($(proc_kib "$api" VmHWM) - rss0) / 1024)) MiB"
  expect_memory_under_limit "after syncing $n VMs"
  expect_vm_reads "$mark" "$replicas" "the webhook's initial syncs"

  log "  kube-apiserver restarted: every replica relists"
  vm_live=$(webhook_logs | grep -c 'VirtualMachine cache live again' || true)
  mark=$(audit_mark)
  stop kube-apiserver
  t0=$SECONDS
  start_apiserver
  wait_until 120 "the VM caches to be live again after the restart" \
    more_log_lines "$((vm_live + replicas - 1))" 'VirtualMachine cache live again'
  wait_until 60 "the webhook's Pods ready again" endpoints_match_pods
  log "  the VM caches were live again $((SECONDS - t0)) s after the API server started"
  expect_memory_under_limit "after the relist"
  expect_vm_reads "$mark" "$replicas" "the webhook's relists"

  if [ -n "${E2E_FLEET_UNPAGINATED:-}" ]; then
    mark=$(audit_mark)
    restart_webhook --vm-list-mode=unpaginated
    wait_until 30 "the unpaginated webhook's lists in the audit log" vm_reads count "$mark" "$replicas"
    vm_reads check "$mark" "$replicas" "the webhook with --vm-list-mode=unpaginated" >&2 &&
      die "the check passed a webhook that lists VirtualMachines unpaginated"
    log "  the check caught --vm-list-mode=unpaginated (above)"
    # The memory check must catch it too: the unpaginated list is held whole.
    if out=$(report_memory "with --vm-list-mode=unpaginated" check 2>&1); then
      printf '%s\n' "$out" >&2
      die "the memory check passed a webhook that lists VirtualMachines unpaginated"
    fi
    printf '%s\n' "$out" | sed 's/ FAIL: / caught, as it must be: /' >&2
    restart_webhook
  fi
}
# audit_mark: where the audit log stands now, as LINES@TIME (the requests
# vm_reads counts are those received after it).
audit_mark() { echo "$(wc -l <"$W/audit.log")@$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"; }
proc_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
etcd_db_mib() { etcd_call /v3/maintenance/status '{}' | python3 -c 'import json,sys; print(round(int(json.load(sys.stdin)["dbSize"]) / 1048576, 1))'; }

# expect_vm_reads MARK REPLICAS WHAT: in the audit log after MARK, the
# webhook's ServiceAccount read the collection of VirtualMachines at least
# REPLICAS times (waits a while: a watch is logged when its response
# starts), and only by streaming lists or pages.
expect_vm_reads() {
  wait_until 30 "$3: the VirtualMachine lists in the audit log" vm_reads count "$1" "$2"
  vm_reads check "$@" >&2
}
# vm_reads count|check MARK REPLICAS [WHAT]: count succeeds once there are
# REPLICAS reads of the collection; check prints them by kind and fails on
# an unpaginated one.
vm_reads() {
  python3 - "$W/audit.log" "system:serviceaccount:$WH_NS:" "$@" <<'PY'
import json, sys
from urllib.parse import urlsplit, parse_qs
path, user, mode, mark, replicas = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
what = sys.argv[6] if len(sys.argv) > 6 else ""
mark_line, mark_time = mark.split("@")
seen, refused = set(), 0
kinds = {"streaming list": 0, "page": 0, "unpaginated list": 0, "resumed watch": 0}
plural = {"streaming list": "streaming lists", "page": "pages", "unpaginated list": "unpaginated lists", "resumed watch": "resumed watches"}
with open(path) as f:
    for i, line in enumerate(f):
        if i < int(mark_line) or not line.strip():
            continue
        e = json.loads(line)
        o = e.get("objectRef") or {}
        if o.get("resource") != "virtualmachines" or o.get("name") or e["auditID"] in seen:
            continue
        # Both RFC 3339 in UTC with microseconds: they sort as strings.
        if e["requestReceivedTimestamp"] < mark_time or not (e.get("user") or {}).get("username", "").startswith(user):
            continue
        seen.add(e["auditID"])
        q = parse_qs(urlsplit(e["requestURI"]).query)
        if (e.get("responseStatus") or {}).get("code", 200) >= 400 and e["verb"] != "list":
            refused += 1   # e.g. 429 while a restarted API server's storage initializes
        elif e["verb"] == "watch":
            kinds["streaming list" if q.get("sendInitialEvents") == ["true"] else "resumed watch"] += 1
        elif e["verb"] == "list":
            kinds["page" if "limit" in q else "unpaginated list"] += 1
lists = kinds["streaming list"] + kinds["page"] + kinds["unpaginated list"]
if mode == "count":
    sys.exit(0 if lists >= replicas else 1)
print(f"  {what}: " + ", ".join(f"{v} {k if v == 1 else plural[k]}" for k, v in kinds.items())
      + f" of VirtualMachines, {refused} watch{'es' if refused != 1 else ''} refused (audit log)")
if kinds["unpaginated list"]:
    sys.exit(f"{what}: {kinds['unpaginated list']} unpaginated list(s) of VirtualMachines")
if lists < replicas:
    sys.exit(f"{what}: {lists} reads of the VirtualMachines, expected one per replica ({replicas})")
PY
}

# ---------------------------------------------------------------------------
# The Helm chart on the real API server and node: install into a fresh
# namespace (refused while no CA is known), `helm install --wait` until the
# Pods serve, the core scenarios, a rolling update (`helm upgrade` that
# changes an argument) under a stream of VMI creates with none failing,
# uninstall leaving no webhook configuration behind.
scenario_helm() {
  local h=("$HELM" --kubeconfig "$W/admin.kubeconfig") NS=krw-helm chart=$ROOT/charts/kubevirt-reboot-webhook out
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  k delete mutatingwebhookconfiguration,validatingwebhookconfiguration -l app.kubernetes.io/name=kubevirt-reboot-webhook >/dev/null
  "$KUBECTL" kustomize "$ROOT/manifests" | k delete --ignore-not-found --wait=false -f - >/dev/null
  k create namespace "$NS" >/dev/null
  local svc=kubevirt-reboot-webhook.$NS.svc
  pki_cert "$P" helm-serving webhook-ca "/CN=$svc" "DNS:$svc,DNS:$svc.cluster.local" serverAuth
  webhook_secret "$NS" "$P/helm-serving.crt" "$P/helm-serving.key"
  if out=$("${h[@]}" install kubevirt-reboot-webhook "$chart" -n "$NS" 2>&1); then
    die "helm install without any CA succeeded: $out"
  fi
  expect_contains "$out" "certificate.source=secret needs the CA" "helm install without a CA"
  expect_eq "$(k get mutatingwebhookconfiguration,validatingwebhookconfiguration -l app.kubernetes.io/name=kubevirt-reboot-webhook -o name)" "" \
    "webhook configurations after the refused install"
  webhook_secret "$NS" "$P/helm-serving.crt" "$P/helm-serving.key" "$P/webhook-ca.crt"
  local t0=$SECONDS
  # With the chart's NetworkPolicy (the API server to 8443, scrapes to 8080,
  # egress to the API server's ports): the API server must take it. The
  # node's bridge plugin does not enforce NetworkPolicy, so this shows the
  # object valid and the install working with it, not its effect.
  out=$("${h[@]}" install kubevirt-reboot-webhook "$chart" -n "$NS" --wait --timeout 5m --set networkPolicy.enabled=true 2>&1) \
    || die "helm install --wait: $out"
  log "  helm install --wait returned after $((SECONDS - t0)) s"
  expect_eq "$(k -n "$NS" get networkpolicy kubevirt-reboot-webhook -o jsonpath='{.spec.policyTypes}')" '["Ingress","Egress"]' \
    "the chart's NetworkPolicy"
  expect_eq "$("${h[@]}" status kubevirt-reboot-webhook -n "$NS" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["status"])')" \
    deployed "helm status"
  local ca; ca=$(base64 -w0 <"$P/webhook-ca.crt")
  expect_eq "$(k get mutatingwebhookconfiguration kubevirt-reboot-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" "$ca" "mutating caBundle"
  expect_eq "$(k get validatingwebhookconfiguration kubevirt-reboot-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" "$ca" "validating caBundle"
  expect_eq "$(k get validatingwebhookconfiguration kubevirt-reboot-webhook -o jsonpath='{.webhooks[0].namespaceSelector.matchExpressions[0].values}')" \
    '["kube-system","krw-helm"]' "namespaceSelector"
  local WH_NAMESPACE=$NS
  # --wait returned: the Pods are ready; their endpoints follow.
  webhook_installed
  expect_gate on >/dev/null
  # The core scenarios through the chart's install.
  if out=$(k apply --dry-run=server -f "$ROOT/examples/invalid/lowercase-reboot-policy.yaml" 2>&1); then die "invalid VM admitted"; fi
  expect_eq "$out" "$(cat "$E2E/expected/dryrun/lowercase-reboot-policy.txt")" "dry-run denial through the chart"
  k get vm -n e2e helm-bootonce >/dev/null 2>&1 || vm e2e helm-bootonce BootOnce | k create -f - >/dev/null
  vmi e2e helm-bootonce helm-bootonce | k create --as="$CONTROLLER" -f - >/dev/null
  expect_eq "$(stored_vmi e2e helm-bootonce)" "BootOnce|Terminate" "VMI stamped through the chart"
  # A rolling update that changes an argument (warn mode), under a stream of
  # VMI creates: the old Pods drain while the new ones take over.
  stream_owners
  local before; before=$(webhook_pods | sort | tr '\n' ' ')
  start_stream helm-rollout
  t0=$SECONDS
  out=$("${h[@]}" upgrade kubevirt-reboot-webhook "$chart" -n "$NS" --reuse-values --set mode=warn --wait --timeout 5m 2>&1) \
    || die "helm upgrade: $out"
  wait_rollout
  log "  helm upgrade --wait (mode=warn) and the rollout took $((SECONDS - t0)) s"
  sleep 3
  expect_clean_stream "$(stop_stream helm-rollout)" "VMI creates during helm upgrade's rolling update"
  local after; after=$(webhook_pods | sort | tr '\n' ' ')
  [ -z "$(comm -12 <(tr ' ' '\n' <<<"$before" | sed '/^$/d') <(tr ' ' '\n' <<<"$after" | sed '/^$/d'))" ] \
    || die "the rollout kept Pods of the old revision: before $before, after $after"
  expect_memory_under_limit "after the rolling update"
  expect_eq "$("${h[@]}" status kubevirt-reboot-webhook -n "$NS" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')" 2 "revision after the upgrade"
  expect_contains "$(deployment_args_in "$NS")" "--mode=warn" "Deployment args after the upgrade"
  # The old Pods keep answering for their shutdown delay on the connections
  # the API server has open to them; then only warn mode answers.
  wait_until 60 "warn mode after the upgrade" invalid_vm_admitted
  out=$(k apply --dry-run=server -f "$ROOT/examples/invalid/lowercase-reboot-policy.yaml" 2>&1) || die "warn mode still denies: $out"
  expect_contains "$out" "Warning: " "warn mode's warning"
  expect_contains "$out" 'Unsupported value: "terminate"' "warn mode's warning text"
  # Roll back, as the README says: the previous revision's arguments again.
  out=$("${h[@]}" rollback kubevirt-reboot-webhook 1 -n "$NS" --wait --timeout 5m 2>&1) || die "helm rollback: $out"
  wait_rollout
  expect_not_contains "$(deployment_args_in "$NS")" "--mode=warn" "Deployment args after the rollback"
  wait_until 60 "enforce mode after the rollback" invalid_vm_denied
  # Uninstall: nothing of the webhook's cluster-wide objects is left.
  out=$("${h[@]}" uninstall kubevirt-reboot-webhook -n "$NS" --wait 2>&1) || die "helm uninstall: $out"
  expect_eq "$(k get mutatingwebhookconfiguration,validatingwebhookconfiguration,clusterrole,clusterrolebinding -l app.kubernetes.io/name=kubevirt-reboot-webhook -o name)" "" \
    "cluster-wide objects after helm uninstall"
  rebootpolicy_allowed || die "a VM with rebootPolicy is still judged after the uninstall (gate is on, nothing should deny)"
  vm e2e helm-after Always Terminate | k create --dry-run=server -f - >/dev/null || die "a VM write after the uninstall failed"
}

# ---------------------------------------------------------------------------
# The chart's certManager source, the way cert-manager runs it: the release's
# CA and serving Certificate issued (cert-manager's writes reproduced, as in
# scenario cert_manager), the Pods start once the Secret exists, and the
# serving certificate is renewed under a stream of VMI creates: none fails.
scenario_helm_cert_manager() {
  local h=("$HELM" --kubeconfig "$W/admin.kubeconfig") NS=krw-helm-cm chart=$ROOT/charts/kubevirt-reboot-webhook out
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  k apply -f "$E2E/cluster/cert-manager-crds.yaml" >/dev/null
  k wait --for condition=established --timeout=60s crd certificates.cert-manager.io issuers.cert-manager.io >/dev/null
  # The kustomize install steps aside (webhook configurations first).
  k delete mutatingwebhookconfiguration,validatingwebhookconfiguration -l app.kubernetes.io/name=kubevirt-reboot-webhook --ignore-not-found >/dev/null
  "$KUBECTL" kustomize "$ROOT/manifests" | k delete --ignore-not-found --wait=false -f - >/dev/null
  out=$("${h[@]}" install kubevirt-reboot-webhook "$chart" -n "$NS" --create-namespace --set certificate.source=certManager 2>&1) \
    || die "helm install (certManager): $out"
  local WH_NAMESPACE=$NS
  # What cert-manager does next: the CA, then the serving certificate, then
  # cainjector fills in both caBundles.
  cert_manager "$NS" issue >/dev/null
  webhook_installed
  wait_until 60 "the chart's webhooks to serve" pods_serve_secret "$NS"
  stream_owners
  start_stream helm-cm
  renew_under_stream "$NS" kubevirt-reboot-webhook "the chart's serving certificate"
  sleep 3
  expect_clean_stream "$(stop_stream helm-cm)" "VMI creates across the chart's certificate renewal"
  out=$("${h[@]}" uninstall kubevirt-reboot-webhook -n "$NS" --wait 2>&1) || die "helm uninstall: $out"
  k delete namespace "$NS" --wait=false >/dev/null
}

invalid_vm_admitted() { k apply --dry-run=server -f "$ROOT/examples/invalid/lowercase-reboot-policy.yaml" >/dev/null 2>&1; }
invalid_vm_denied() { ! invalid_vm_admitted; }

deployment_args_in() { WH_NAMESPACE=$1 deployment_args | tr '\n' ' '; }

# ---------------------------------------------------------------------------
# Audit annotations: the API server's audit log says why (denials, stamps,
# compat rewrites, warn-mode would-be denials); plain writes carry none.
scenario_audit() {
  local audit=$W/audit.log
  # A plain write of our own (after the helm scenario no webhook is installed:
  # either way it must carry no annotation of ours).
  gate_spec "{\"featureGates\":[\"$GATE\"]}"
  vm e2e audit-plain Always | k create -f - >/dev/null
  wait_until 10 "audit events flushed" grep -q '"audit-plain"' "$audit"
  python3 - "$audit" "$ran" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ran = sys.argv[2].split()
def ours(e):
    return {k: v for k, v in (e.get("annotations") or {}).items() if ".reboot.kubevirt.io/" in k}
def find(resource, key, prefix="", code=None):
    for e in events:
        o = e.get("objectRef") or {}
        a = ours(e)
        if o.get("resource") == resource and e.get("verb") == "create" and key in a and a[key].startswith(prefix) \
                and (code is None or (e.get("responseStatus") or {}).get("code") == code):
            return a[key]
    sys.exit(f"audit log: no {resource} create with {key} starting {prefix!r} (code {code})")
checks = []
if "dryrun" in ran:
    checks.append(("virtualmachines", "validate.reboot.kubevirt.io/denied", "spec.template.spec.domain.rebootPolicy: FieldValueNotSupported", 422))
if "stamp" in ran:
    checks.append(("virtualmachineinstances", "mutate.reboot.kubevirt.io/stamped", "metadata.annotations[runstrategy.kubevirt.io]=BootOnce", None))
if "compat" in ran:
    checks.append(("virtualmachines", "mutate.reboot.kubevirt.io/compat-rewrite", "", None))
if "helm" in ran:
    checks.append(("virtualmachines", "validate.reboot.kubevirt.io/would-deny", "", None))
for c in checks:
    value = find(*c)
    print(f"  audit: {c[1]} = {value}")
    if c[1].endswith("compat-rewrite") and "spec.runStrategy=Once" not in value:
        sys.exit(f"compat-rewrite annotation lacks spec.runStrategy=Once: {value}")
plain = [e for e in events if (e.get("objectRef") or {}).get("name") == "audit-plain" and e.get("verb") == "create"]
if not plain:
    sys.exit("audit log: the plain VM create is missing")
for e in plain:
    if ours(e):
        sys.exit(f"audit log: a plain VM create carries webhook annotations: {ours(e)}")
print(f"  audit: {len(checks)} kinds of annotated events found; the plain VM create carries none")
PY
}
