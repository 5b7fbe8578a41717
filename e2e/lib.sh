# Helpers for e2e/run.sh: logging, bounded waits, background processes that
# are always stopped, assertions, and a small PKI made with openssl.

# Where Debian's containernetworking-plugins puts the CNI plugins.
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}

log() { printf '\033[1m[e2e]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[e2e] FAIL:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_until SECONDS DESCRIPTION COMMAND... : polls every 0.2 s.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s waiting for: $what"
    sleep 0.2
  done
}

# start_bg NAME COMMAND... : runs COMMAND in the background, output in
# $W/logs/NAME.log, pid in $W/pids/NAME. Every such process is stopped by
# stop_all (the EXIT trap), also on failure.
start_bg() {
  local name=$1; shift
  "$@" >>"$W/logs/$name.log" 2>&1 &
  echo $! >"$W/pids/$name"
}

pid_of() { cat "$W/pids/$1" 2>/dev/null; }

# stop NAME [SIGNAL]: signal (TERM by default), then KILL after 10 s.
stop() {
  local pid; pid=$(pid_of "$1") || return 0
  rm -f "$W/pids/$1"
  kill -"${2:-TERM}" "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local f
  for f in "$W"/pids/*; do [ -e "$f" ] && stop "$(basename "$f")"; done
  return 0
}

# expect_eq ACTUAL EXPECTED DESCRIPTION
expect_eq() {
  [ "$1" == "$2" ] || die "$3: expected '$2', got '$1'"
}

# expect_contains HAYSTACK NEEDLE DESCRIPTION
expect_contains() {
  case "$1" in
    *"$2"*) ;;
    *) die "$3: expected to find '$2' in: $1" ;;
  esac
}

expect_not_contains() {
  case "$1" in
    *"$2"*) die "$3: did not expect '$2' in: $1" ;;
  esac
}

# pki_ca DIR NAME CN: a CA key and certificate as DIR/NAME.{key,crt}.
pki_ca() {
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 2 \
    -keyout "$1/$2.key" -out "$1/$2.crt" -subj "/CN=$3" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# pki_cert DIR NAME CA SUBJECT SANS USAGE [DAYS]: a leaf signed by DIR/CA,
# SANS like DNS:a,IP:1.2.3.4 (or ""), USAGE serverAuth|clientAuth|both.
pki_cert() {
  local dir=$1 name=$2 ca=$3 subject=$4 sans=$5 usage=$6 days=${7:-2} ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    case $usage in
      both) echo "extendedKeyUsage=serverAuth,clientAuth" ;;
      *) echo "extendedKeyUsage=$usage" ;;
    esac
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -nodes -newkey rsa:2048 -keyout "$dir/$name.key.new" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$dir/$name.crt.new" 2>/dev/null
  rm -f "$ext" "$dir/$name.csr"
  # Renamed into place, key first: a reader never sees a half-written file.
  mv "$dir/$name.key.new" "$dir/$name.key"
  mv "$dir/$name.crt.new" "$dir/$name.crt"
}

# kubeconfig FILE SERVER CA [client-cert CERT KEY | token TOKEN]
kubeconfig() {
  local file=$1 server=$2 ca=$3 how=$4 user
  case $how in
    client-cert) user="    client-certificate: $5
    client-key: $6" ;;
    token) user="    token: $5" ;;
  esac
  cat >"$file" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $server
    certificate-authority: $ca
users:
- name: e2e
  user:
$user
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e}
current-context: e2e
KCFG
}

# metric URL NAME{LABELS}: the sum of the samples whose line starts with
# that text (0 when there is none). URL "webhooks": summed over the
# webhook's ready Pods (e2e/webhook.sh).
metric() {
  if [ "$1" = webhooks ]; then
    local ip sum=0
    for ip in $(webhook_pod_ips); do sum=$((sum + $(metric "http://$ip:8080/metrics" "$2"))); done
    echo "$sum"
    return
  fi
  curl -fsS --max-time 5 "$1" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s }'
}

# metric_each NAME{LABELS}: that sum for each of the webhook's ready Pods, one per line.
metric_each() {
  local ip
  for ip in $(webhook_pod_ips); do metric "http://$ip:8080/metrics" "$1"; done
}
