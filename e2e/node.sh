# A real node for make e2e, sourced by e2e/run.sh: containerd and runc (Debian's),
# the CNI bridge plugin, kubelet, kube-proxy, kube-controller-manager and
# kube-scheduler (built from the same k8s.io/kubernetes module as the API
# server), all inside the run's own network and mount namespaces, as
# Kubernetes' hack/local-up-cluster.sh runs a one-node cluster from local
# processes. The webhook then runs as the Pods of its Deployment.
#
# What this machine kind needs (measured, see e2e/README.md): kubelet with
# the cgroupfs driver and cgroup v1 allowed (failCgroupV1: false), swap
# allowed, containerd's restrict_oom_score_adj (processes here cannot lower
# oom_score_adj), and a sandbox ("pause") image built here, since no
# registry is reachable.
#
# Footprint outside the run's namespaces, all undone by node_teardown: the
# cgroups under $NODE_CGROUP (a name unique to the run) and the six kernel
# settings the kubelet sets (vm.overcommit_memory, kernel.panic, ...),
# restored to what they were.

NODE_NAME=e2e-node
POD_CIDR=198.18.128.0/24      # the CNI bridge's range: pod addresses
NODE_CGROUP=krw-e2e-$$        # --cgroup-root, one per run
N=$W/node
CONTAINERD_SOCK=$N/containerd.sock
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# (containerd 2.x's ctr warns on every call that cgroup v1 is deprecated.)
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@" 2> >(grep -v 'support for cgroup v1 is deprecated' >&2); }

# node_pki: client certificates of the node's components, the kubelet's
# serving certificate, and their kubeconfigs.
node_pki() {
  pki_cert "$P" kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" "" clientAuth
  pki_cert "$P" kubelet-serving ca "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$CP_IP" serverAuth
  pki_cert "$P" apiserver-kubelet-client ca "/CN=kube-apiserver-kubelet-client" "" clientAuth
  local who
  for who in kube-controller-manager kube-scheduler kube-proxy; do
    pki_cert "$P" "$who" ca "/CN=system:$who" "" clientAuth
  done
  for who in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    kubeconfig "$W/$who.kubeconfig" "https://$CP_IP:6443" "$P/ca.crt" client-cert "$P/$who.crt" "$P/$who.key"
  done
}

# The API server's flags for a cluster with a node: the Node authorizer and
# NodeRestriction for the kubelet, and its client certificate towards the
# kubelet (logs, exec).
node_apiserver_flags() {
  printf '%s\n' --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=InternalIP
}

# The bindings kubeadm makes for these identities.
node_rbac() {
  k create clusterrolebinding krw-e2e:kubelet-api-admin --clusterrole=system:kubelet-api-admin \
    --user=kube-apiserver-kubelet-client >/dev/null
  k create clusterrolebinding krw-e2e:node-proxier --clusterrole=system:node-proxier --user=system:kube-proxy >/dev/null
}

# node_mounts: private copies, inside the run's mount namespace, of the host
# paths that containerd, the CNI plugins and the kubelet write to whatever
# their configuration says; they vanish with the namespace.
node_mounts() {
  local d
  for d in /run/containerd /var/lib/cni /var/log/containers /var/log/pods; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=0755 "krw-e2e$(echo "$d" | tr / -)" "$d"
  done
}

# containerd's configuration: version 2 for containerd 1.x (Debian's),
# version 3 for containerd 2.x (E2E_CONTAINERD=module), the same settings.
containerd_config_v2() {
  cat <<TOML
version = 2
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Processes on these machines lack CAP_SYS_RESOURCE and cannot lower
  # oom_score_adj; without this every sandbox fails in runc.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$N/cni/net.d"
TOML
}
containerd_config_v3() {
  cat <<TOML
version = 3
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  # As above: processes here cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$N/cni/net.d"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
TOML
}

start_containerd() {
  mkdir -p "$N/containerd" "$N/cni/net.d"
  if [ "$(containerd --version | awk '{ sub(/^v/, "", $3); split($3, v, "."); print v[1] }')" -ge 2 ]; then
    containerd_config_v3 >"$N/containerd.toml"
  else
    containerd_config_v2 >"$N/containerd.toml"
  fi
  cat >"$N/cni/net.d/10-krw-e2e.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "krw-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "krw-cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$N/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  start_bg containerd containerd --config "$N/containerd.toml" --log-level warn
  wait_until 30 "containerd up" ctr_ version
}

# node_images ARCHIVE...: what a registry would serve, imported into the
# CRI's image store.
node_images() {
  local a
  for a in "$@"; do ctr_ images import "$a" >/dev/null; done
}

# cgroup v1 here: one directory per hierarchy; cpuset's needs its cpus and
# mems before anything can join it.
node_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ "$(stat -f -c %T "$h")" = cgroupfs ] || continue   # not the empty cgroup2 mount
    mkdir -p "$h$NODE_CGROUP"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.mems"
}

start_kubelet() {
  local s
  : >"$N/sysctls"
  for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")" >>"$N/sysctls"; done
  mkdir -p "$N/kubelet" "$N/pod-logs"
  : >"$N/resolv.conf"
  cat >"$N/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $CP_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
podLogsDir: $N/pod-logs
resolvConf: $N/resolv.conf
clusterDomain: cluster.local
# A Secret volume's update reaches the pods within about this long (1m by
# default); the certificate scenarios wait for it.
syncFrequency: 10s
# Never evict or collect the images this run imported, whatever the disk.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
KUBELET
  start_bg kubelet "$KUBELET" --config="$N/kubelet.yaml" --kubeconfig="$W/kubelet.kubeconfig" \
    --root-dir="$N/kubelet" --hostname-override="$NODE_NAME" --node-ip="$CP_IP" --v=1
}

start_kube_proxy() {
  cat >"$N/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $W/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
# Leave the machine's conntrack sysctls alone (they are not per network namespace).
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
PROXY
  start_bg kube-proxy "$KUBE_PROXY" --config="$N/kube-proxy.yaml" --v=1
}

start_controllers() {
  start_bg kube-controller-manager "$KUBE_CONTROLLER_MANAGER" --kubeconfig="$W/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$W/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$W/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --use-service-account-credentials=true --service-account-private-key-file="$P/sa.key" \
    --root-ca-file="$P/ca.crt" --allocate-node-cidrs=false \
    --node-monitor-grace-period=5m --v=1
  start_bg kube-scheduler "$KUBE_SCHEDULER" --kubeconfig="$W/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$W/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$W/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
}

node_ready() {
  [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# start_node: everything above, up to a Ready node whose Pods can reach the
# API server through the kubernetes Service.
start_node() {
  local t0=$SECONDS
  node_mounts
  node_cgroups
  start_containerd
  node_images "$PAUSE_ARCHIVE" "$IMAGE_ARCHIVE" "$NOOP_ARCHIVE"
  node_rbac
  start_controllers
  start_kube_proxy
  start_kubelet
  wait_until 120 "node $NODE_NAME Ready" node_ready
  log "node $NODE_NAME ready in $((SECONDS - t0)) s (containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR == 1 {print $3}'))"
}

# node_teardown: the node's processes, its containers (whatever containerd
# knew of them) and its cgroups; the kernel settings back as they were.
node_teardown() {
  local p
  for p in kubelet kube-proxy kube-scheduler kube-controller-manager; do stop "$p"; done
  # Every container process sits in a cgroup under $NODE_CGROUP; the shims
  # that ran them are the containerd's of this run.
  local procs
  for _ in 1 2 3; do
    procs=$(find "/sys/fs/cgroup/pids/$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    procs+=" $(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" || true)"
    [ -n "${procs// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
    sleep 0.5
  done
  stop containerd
  # What the kubelet and containerd mounted in the work directory (Secret
  # volumes, the sandboxes' /dev/shm): gone with the mount namespace anyway,
  # but the work directory is removed before that.
  awk -v n="$N/" 'index($5, n) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ -n "${NODE_CGROUP:-}" ]; then
    find /sys/fs/cgroup/*/"$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
  if [ -s "$N/sysctls" ]; then
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || true; done <"$N/sysctls"
  fi
}
