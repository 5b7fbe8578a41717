#!/usr/bin/env bash
# make image: the runtime image, built offline as an OCI archive.
#
#   image/build.sh BINARY ARCHIVE NAME:TAG
#
# The same image as the Dockerfile's runtime stage, without a registry: a
# single layer with the release binary, glibc and libgcc from the Debian
# packages of the machine that linked the binary (libc6, libgcc-s1, the
# packages distroless/cc is made of, copyright files kept), /etc/passwd and
# /etc/group naming root and nonroot (65532), an empty /tmp, no shell, no
# package manager. Config: user 65532:65532, the binary as entrypoint,
# `serve` as command, ports 8443 and 8080. Assembled with umoci (Debian's
# package) into an OCI layout, written as a tar that `ctr images import`,
# `podman load` and `skopeo copy oci-archive:` read.
#
# The same script builds the e2e node's sandbox ("pause") image from another
# binary: IMAGE_USER, IMAGE_ENTRYPOINT, IMAGE_CMD, IMAGE_PORTS and
# IMAGE_DEBS override the defaults (IMAGE_DEBS="" for a static binary).
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 BINARY ARCHIVE NAME:TAG" >&2; exit 2; }
binary=$1 archive=$2 ref=$3
name=${ref%:*} tag=${ref##*:}
[ "$name" != "$ref" ] && [ -n "$tag" ] || { echo "image: $ref: want NAME:TAG" >&2; exit 2; }
[ -x "$binary" ] || { echo "image: $binary: no such executable (make release first)" >&2; exit 2; }
command -v umoci >/dev/null || { echo "image: needs umoci (Debian: apt-get install umoci)" >&2; exit 2; }

user=${IMAGE_USER-65532:65532}
entrypoint=${IMAGE_ENTRYPOINT-/usr/local/bin/$(basename "$binary")}
cmd=${IMAGE_CMD-serve}
ports=${IMAGE_PORTS-8443/tcp 8080/tcp}
debs=${IMAGE_DEBS-libc6 libgcc-s1}
cache=${KRW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevirt-reboot-webhook}/debs

work=$(mktemp -d "${TMPDIR:-/tmp}/krw-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot" "$root/usr/local/bin" "$cache"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"

# The Debian packages, at the version installed here (the glibc the binary
# was linked against); downloaded once into the cache.
for pkg in $debs; do
  version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || { echo "image: $pkg is not installed here" >&2; exit 1; }
  deb=$cache/${pkg}_${version//:/%3a}_$(dpkg --print-architecture).deb
  if [ ! -s "$deb" ]; then
    (cd "$cache" && { apt-get download -qq "$pkg=$version" 2>/dev/null ||
      { apt-get update -qq && apt-get download -qq "$pkg=$version"; }; }) ||
      { echo "image: cannot download $pkg=$version from the Debian archive" >&2; exit 1; }
  fi
  dpkg-deb -x "$deb" "$root"
done
# Packages' documentation except their copyright notices; nothing else.
if [ -d "$root/usr/share" ]; then
  find "$root/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
  rm -rf "$root/usr/share/lintian" "$root/usr/share/man" "$root/usr/share/info"
fi

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
install -m 0755 "$binary" "$root$entrypoint"

# An image without a shell: checked, not assumed.
for sh in bin/sh bin/bash usr/bin/sh usr/bin/bash; do
  [ ! -e "$root/$sh" ] || { echo "image: $sh is in the image" >&2; exit 1; }
done

layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci insert --image "$layout:$tag" --history.created_by "image/build.sh" "$root" /
config=(--config.user "$user" --config.entrypoint "$entrypoint" --config.workingdir /
  --config.env PATH=/usr/local/bin:/usr/bin:/bin
  --config.label "org.opencontainers.image.title=$(basename "$name")"
  --config.label "org.opencontainers.image.version=$tag"
  --os linux --architecture "$(dpkg --print-architecture)")
[ -z "$cmd" ] || config+=(--config.cmd "$cmd")
for port in $ports; do config+=(--config.exposedports "$port"); done
umoci config --image "$layout:$tag" --history.created_by "image/build.sh" "${config[@]}"
umoci gc --layout "$layout"

# The archive names the image in full, as containerd and kubelet spell it.
python3 - "$layout/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1:]
name, tag = ref.rsplit(":", 1)
if "/" not in name:
    name = "docker.io/library/" + name
elif "." not in name.split("/")[0] and ":" not in name.split("/")[0] and name.split("/")[0] != "localhost":
    name = "docker.io/" + name
index = json.load(open(path))
for m in index["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = f"{name}:{tag}"
json.dump(index, open(path, "w"))
PY
mkdir -p "$(dirname "$archive")"
tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner -cf "$archive.tmp" .
mv "$archive.tmp" "$archive"
size=$(du -k "$archive" | cut -f1)
echo "image: $ref -> $archive (${size} KiB)" >&2
