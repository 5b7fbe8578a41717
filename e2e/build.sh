#!/usr/bin/env bash
# Builds (or reuses) the real control plane for make e2e, from published Go
# modules only: kube-apiserver and etcd at the releases pinned in
# e2e/tools/go.mod (or K8S_VERSION), a kubectl within version skew, and the
# e2e helpers. Sourced by e2e/run.sh; sets KUBE_APISERVER, ETCD, KUBECTL,
# E2EHELPER, NOOPWEBHOOK and K8S_VERSION.
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
[ -x "$bin_dir/kube-apiserver" ] || targets+=(k8s.io/kubernetes/cmd/kube-apiserver)
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
# The helpers are ours and small: always rebuilt (Go's build cache makes that
# quick). noopwebhook is the latency scenario's no-op floor.
(cd "$module_dir" && go build -trimpath -o "$bin_dir/" ./e2ehelper ./noopwebhook) >&2

KUBE_APISERVER=$bin_dir/kube-apiserver
ETCD=$bin_dir/etcd
E2EHELPER=$bin_dir/e2ehelper
NOOPWEBHOOK=$bin_dir/noopwebhook
KUBECTL=${KUBECTL:-$bin_dir/kubectl}
export K8S_VERSION KUBE_APISERVER ETCD E2EHELPER NOOPWEBHOOK KUBECTL
