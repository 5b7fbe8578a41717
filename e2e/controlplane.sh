# etcd and kube-apiserver for make e2e (run.sh) and make bench-fleet
# (bench/fleet/run.sh), with the run's PKI in $P and its work directory in $W; sourced
# after lib.sh. Each caller adds the flags of its own (run.sh: the Node
# authorizer, the webhook client identity, the audit log).

# start_etcd [FLAG...]: etcd with TLS and client certificates on 127.0.0.1:2379.
start_etcd() {
  start_bg etcd "$ETCD" --name e2e --data-dir "$W/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster e2e=http://127.0.0.1:2380 \
    --cert-file "$P/etcd.crt" --key-file "$P/etcd.key" --client-cert-auth --trusted-ca-file "$P/etcd-ca.crt" \
    --log-level warn "$@"
  wait_until 30 "etcd healthy" etcd_call /health
}

# etcd_call PATH [JSON]: etcd's HTTP gateway with the API server's client certificate.
etcd_call() {
  curl -fsS --max-time 5 --cacert "$P/etcd-ca.crt" --cert "$P/apiserver-etcd-client.crt" --key "$P/apiserver-etcd-client.key" \
    ${2:+-X POST -d "$2"} "https://127.0.0.1:2379$1"
}

# etcd_compact: compacts etcd at its current revision (watches from before
# it get 410 Gone); prints the revision.
etcd_compact() {
  local rev
  rev=$(etcd_call /v3/kv/range '{"key":"AA=="}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
  etcd_call /v3/kv/compaction "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
  echo "$rev"
}

# start_kube_apiserver NAME PORT [FLAG...]: the real kube-apiserver on PORT
# (all addresses) over that etcd, its serving certificate and client CA from
# $P, ServiceAccount keys, Services from 198.19.0.0/24; waits for /readyz.
start_kube_apiserver() {
  local name=$1 port=$2 profiling=false; shift 2
  # /debug/pprof only for E2E_LATENCY_PROFILE (scenario latency's profiles).
  [ -z "${E2E_LATENCY_PROFILE:-}" ] || profiling=true
  start_bg "$name" "$KUBE_APISERVER" \
    --bind-address=0.0.0.0 --secure-port="$port" --advertise-address="$CP_IP" \
    --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$P/etcd-ca.crt" \
    --etcd-certfile="$P/apiserver-etcd-client.crt" --etcd-keyfile="$P/apiserver-etcd-client.key" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" --api-audiences=https://kubernetes.default.svc \
    --service-cluster-ip-range=198.19.0.0/24 --profiling="$profiling" --v=1 "$@"
  wait_until 90 "$name ready" curl -fsS --max-time 2 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
    "https://127.0.0.1:$port/readyz"
}

# controlplane_pki: the CAs and certificates both need, in $P.
controlplane_pki() {
  pki_ca "$P" ca "e2e cluster CA"
  pki_cert "$P" apiserver ca "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost,IP:127.0.0.1,IP:$CP_IP,IP:198.19.0.1" serverAuth
  pki_cert "$P" admin ca "/O=system:masters/CN=e2e-admin" "" clientAuth
  pki_ca "$P" etcd-ca "e2e etcd CA"
  pki_cert "$P" etcd etcd-ca "/CN=etcd" "DNS:localhost,IP:127.0.0.1" both
  pki_cert "$P" apiserver-etcd-client etcd-ca "/CN=kube-apiserver" "" clientAuth
  openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
  openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
}
