#!/usr/bin/env bash
# Builds (or reuses) the real control plane for make e2e, from published Go
# modules only: kube-apiserver and etcd at the releases pinned in
# e2e/tools/go.mod (or K8S_VERSION), the node's kubelet, kube-proxy,
# kube-controller-manager and kube-scheduler from the same module, a kubectl
# within version skew, the node's pause image, the e2e helper and the
# latency scenario's no-op webhook image. Sourced by e2e/run.sh; sets
# KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBELET,
# KUBE_PROXY, ETCD, KUBECTL, E2EHELPER, PAUSE_IMAGE, PAUSE_ARCHIVE,
# NOOP_IMAGE, NOOP_ARCHIVE and K8S_VERSION.
#
# KRW_BUILD_NODE=0 (make bench-fleet) builds only the control plane and the
# helper: no node binaries, no pause or no-op images. E2E_CONTAINERD=module
# also builds containerd 2.x for the node (below).
#
# Binaries are cached outside git, keyed by version:
#   ${KRW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-reboot-webhook}/k8s-vX.Y.Z/
# so only the first run on a machine pays the build (Go's own module and
# build caches make even that cheaper the second time).

e2e_tools=$(cd "$(dirname "${BASH_SOURCE[0]}")/tools" && pwd)
pinned=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$e2e_tools/go.mod")
K8S_VERSION=${K8S_VERSION:-$pinned}
K8S_VERSION=v${K8S_VERSION#v}
cache_root=${KRW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-reboot-webhook}
# "-v2": binaries that report their release (see ldflags below); bump it when
# the way they are built changes, so stale caches are not reused.
bin_dir=$cache_root/k8s-$K8S_VERSION-v2
mkdir -p "$bin_dir"

log() { printf '\033[1m[e2e]\033[0m %s\n' "$*" >&2; }

# The Go module to build from: e2e/tools itself for the pinned release,
# otherwise a copy retargeted at K8S_VERSION (staging modules k8s.io/* at
# v0.MINOR.PATCH, etcd at the release that Kubernetes version requires).
module_dir=$e2e_tools
if [ "$K8S_VERSION" != "$pinned" ]; then
  module_dir=$cache_root/module-$K8S_VERSION
  if [ ! -f "$module_dir/.ready" ]; then
    log "preparing a Go module for Kubernetes $K8S_VERSION"
    rm -rf "$module_dir" && mkdir -p "$module_dir"
    cp -r "$e2e_tools"/. "$module_dir"/
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | awk -F'"' '$2 == "GoMod" { print $4 }')
    [ -n "$gomod" ] || { log "k8s.io/kubernetes@$K8S_VERSION is not served by the Go module proxy"; return 1; }
    staging=${K8S_VERSION#v1.}; staging=v0.$staging
    etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$gomod")
    (
      cd "$module_dir"
      edits=(-require "k8s.io/kubernetes@$K8S_VERSION" -require "go.etcd.io/etcd/server/v3@$etcd")
      for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging/ { print $1 }' "$gomod"); do
        edits+=(-replace "$m=$m@$staging")
      done
      go mod edit "${edits[@]}"
      go mod tidy
    ) >&2
    touch "$module_dir/.ready"
  fi
fi

# A kubectl within one minor version of the API server: the machine's own
# (a plain kubectl, or the versioned ones of the Google Cloud SDK package),
# else one built from the same module.
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
kubectl_minor() { "$1" version --client -o json 2>/dev/null | awk -F'"' '$2 == "minor" { gsub(/[^0-9]/, "", $4); print $4; exit }'; }
KUBECTL=
for candidate in ${KUBECTL_CANDIDATE:-} \
    "$(dirname "$(readlink -f "$(command -v kubectl 2>/dev/null || echo /nonexistent)")")/kubectl.1.$k8s_minor" \
    "$(dirname "$(readlink -f "$(command -v kubectl 2>/dev/null || echo /nonexistent)")")/kubectl.1.$((k8s_minor - 1))" \
    "$(command -v kubectl 2>/dev/null || true)"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  m=$(kubectl_minor "$candidate")
  if [ -n "$m" ] && [ "$m" -ge $((k8s_minor - 1)) ] && [ "$m" -le $((k8s_minor + 1)) ]; then
    KUBECTL=$candidate
    break
  fi
done

targets=()
# The control plane, and the node (kubelet, kube-proxy) with the controllers
# a Deployment needs (kube-controller-manager, kube-scheduler).
node_cmds="kube-controller-manager kube-scheduler kubelet kube-proxy"
[ "${KRW_BUILD_NODE:-1}" != 0 ] || node_cmds=
for cmd in kube-apiserver $node_cmds; do
  [ -x "$bin_dir/$cmd" ] || targets+=("k8s.io/kubernetes/cmd/$cmd")
done
[ -x "$bin_dir/etcd" ] || targets+=(./etcd)
if [ -z "$KUBECTL" ] && [ ! -x "$bin_dir/kubectl" ]; then targets+=(k8s.io/kubernetes/cmd/kubectl); fi
if [ ${#targets[@]} -gt 0 ]; then
  log "building ${targets[*]} for Kubernetes $K8S_VERSION (first run on this machine: several minutes)"
  started=$SECONDS
  # As Kubernetes' own release build does, stamp the version, so that the API
  # server reports v1.x.y (not v0.0.0-master) to kubectl, Helm and webhooks.
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$module_dir" && go build -trimpath -ldflags "$ldflags" -o "$bin_dir/" "${targets[@]}") >&2
  log "built in $((SECONDS - started)) s into $bin_dir"
fi
# The helper is ours and small: always rebuilt (Go's build cache makes that
# quick), into this tree's target/ (not the shared cache: another checkout's
# run may use another version of it at the same time).
helper_dir=${CARGO_TARGET_DIR:-$e2e_tools/../../target}/e2e
mkdir -p "$helper_dir"
(cd "$module_dir" && go build -trimpath -o "$helper_dir/" ./e2ehelper) >&2
# The latency scenario's no-op floor (tools/noopwebhook), static, in an
# image like ours, so that it runs as Pods where ours runs.
NOOP_IMAGE=kubevirt-reboot-webhook-noop:e2e
NOOP_ARCHIVE=$helper_dir/noopwebhook.oci.tar
[ "${KRW_BUILD_NODE:-1}" = 0 ] || (cd "$module_dir" && CGO_ENABLED=0 go build -trimpath -o "$helper_dir/" ./noopwebhook) >&2
if [ "${KRW_BUILD_NODE:-1}" != 0 ] && { [ ! -s "$NOOP_ARCHIVE" ] || [ "$helper_dir/noopwebhook" -nt "$NOOP_ARCHIVE" ]; }; then
  IMAGE_DEBS= bash "$e2e_tools/../../image/build.sh" "$helper_dir/noopwebhook" "$NOOP_ARCHIVE" "$NOOP_IMAGE" 2>/dev/null
fi

# The node's sandbox ("pause") image, since no registry is reachable: the
# pause program from the same k8s.io/kubernetes module (build/pause), built
# as its Makefile does, in an image as upstream's (user 65535, /pause).
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
PAUSE_ARCHIVE=$bin_dir/pause-3.10.1.oci.tar
if [ "${KRW_BUILD_NODE:-1}" != 0 ] && [ ! -s "$PAUSE_ARCHIVE" ]; then
  k8s_src=$(cd "$module_dir" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -Os -Wall -Werror -static -DVERSION=v3.10.1-krw-e2e -o "$bin_dir/pause" "$k8s_src/build/pause/linux/pause.c"
  IMAGE_USER=65535:65535 IMAGE_ENTRYPOINT=/pause IMAGE_CMD= IMAGE_PORTS= IMAGE_DEBS= \
    bash "$e2e_tools/../../image/build.sh" "$bin_dir/pause" "$PAUSE_ARCHIVE" "$PAUSE_IMAGE" 2>/dev/null
fi

# E2E_CONTAINERD=module: the node's containerd, its runc shim and ctr are
# containerd 2.x, built from the Go module pinned in e2e/containerd (cached
# like the rest) and put first on PATH, instead of Debian's containerd 1.6.
if [ "${KRW_BUILD_NODE:-1}" != 0 ] && [ "${E2E_CONTAINERD:-debian}" = module ]; then
  containerd_mod=$(cd "$e2e_tools/../containerd" && pwd)
  containerd_version=$(awk '$1 == "require" && $2 == "github.com/containerd/containerd/v2" { print $3 }' "$containerd_mod/go.mod")
  containerd_dir=$cache_root/containerd-$containerd_version
  if [ ! -x "$containerd_dir/containerd" ] || [ ! -x "$containerd_dir/containerd-shim-runc-v2" ] || [ ! -x "$containerd_dir/ctr" ]; then
    log "building containerd $containerd_version, its runc shim and ctr (E2E_CONTAINERD=module)"
    started=$SECONDS
    # As containerd's Makefile builds them: the snapshotters this node does
    # not use left out, the version stamped.
    (cd "$containerd_mod" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
      -o "$containerd_dir/" github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr) >&2
    log "built in $((SECONDS - started)) s into $containerd_dir"
  fi
  PATH=$containerd_dir:$PATH
  export PATH
fi

KUBE_APISERVER=$bin_dir/kube-apiserver
KUBE_CONTROLLER_MANAGER=$bin_dir/kube-controller-manager
KUBE_SCHEDULER=$bin_dir/kube-scheduler
KUBELET=$bin_dir/kubelet
KUBE_PROXY=$bin_dir/kube-proxy
ETCD=$bin_dir/etcd
E2EHELPER=$(cd "$helper_dir" && pwd)/e2ehelper
NOOP_ARCHIVE=$(cd "$helper_dir" && pwd)/noopwebhook.oci.tar
KUBECTL=${KUBECTL:-$bin_dir/kubectl}
export K8S_VERSION KUBE_APISERVER KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER KUBELET KUBE_PROXY ETCD E2EHELPER KUBECTL \
  PAUSE_IMAGE PAUSE_ARCHIVE NOOP_IMAGE NOOP_ARCHIVE
