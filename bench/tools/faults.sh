#!/usr/bin/env bash
# Page faults and CPU per review of one fresh `serve` process (bench/README.md,
# "Page faults"): 300 warm-up reviews, then N measured, from h2load (Debian's
# nghttp2-client); minflt and utime+stime from /proc.
#
#   bench/tools/faults.sh BIN CASE N      # CASE: 500k (h2, 16 streams), h2 (6 KB, 16 streams), h1 (6 KB, 64 connections)
#
# WORK (default target/bench) must hold what `make bench` prepares: certs/,
# objects/ and the payloads (kubevirt-reboot-webhook-bench --dump-payloads WORK/payloads).
set -euo pipefail
bin=$1 case=$2 n=$3
W=${WORK:-target/bench}
port=${PORT:-19443}
"$bin" serve --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:0 --feature-gates RecreateVMIOnReboot \
  --objects "$W/objects" --shutdown-delay 0s --tls-cert "$W/certs/tls.crt" --tls-key "$W/certs/tls.key" >/dev/null 2>&1 &
P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null || true' EXIT
sleep 0.7
case $case in
  500k) args=(-c 1 -m 16 -d "$W/payloads/vmi-500k.json") ;;
  h2) args=(-c 1 -m 16 -d "$W/payloads/vmi-6k.json") ;;
  h1) args=(--h1 -c 64 -m 1 -d "$W/payloads/vmi-6k.json") ;;
  *) echo "CASE: 500k, h2 or h1" >&2; exit 2 ;;
esac
url="https://127.0.0.1:$port/mutate?timeout=10s"
h2load -n 300 "${args[@]}" -H 'content-type: application/json' "$url" >/dev/null
read -r f0 t0 < <(awk '{print $10, $14+$15}' "/proc/$P/stat")
h2load -n "$n" "${args[@]}" -H 'content-type: application/json' "$url" | grep -q "$n succeeded" || echo "not every review succeeded" >&2
read -r f1 t1 < <(awk '{print $10, $14+$15}' "/proc/$P/stat")
tck=$(getconf CLK_TCK)
echo "$bin $case faults/review $(( (f1 - f0) / n )) cpu/review $(( (t1 - t0) * 1000000 / tck / n )) us"
