#!/usr/bin/env bash
# Local test registries (Debian's docker-registry), on loopback only:
#   127.0.0.1:5000  plain, no auth
#   127.0.0.1:5001  htpasswd auth, user berth / password berth-secret
#   127.0.0.1:5002  token auth: bearer tokens (JWT, signed with token/key.pk8) from a token
#                   service on 127.0.0.1:5003 that the integration tests run themselves
# Usage: hack/registry.sh start|stop|status. State (configs, storage, logs, pids) lives in
# $BERTH_REGISTRY_DIR (default /tmp/berth-registry); `stop` removes it.
set -euo pipefail
DIR=${BERTH_REGISTRY_DIR:-/tmp/berth-registry}

config() { # name port [auth]
  local name=$1 port=$2 auth=${3:-}
  mkdir -p "$DIR/$name/storage"
  cat > "$DIR/$name/config.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $DIR/$name/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
YAML
  if [ "$auth" = token ]; then
    # token auth: tokens are JWTs signed with this key, issued by the test's own token service
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=berth-test-issuer \
      -keyout "$DIR/$name/key.pem" -out "$DIR/$name/cert.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$DIR/$name/key.pem" -outform DER -out "$DIR/$name/key.pk8"
    openssl x509 -in "$DIR/$name/cert.pem" -outform DER -out "$DIR/$name/cert.der"
    cat >> "$DIR/$name/config.yml" <<YAML
auth:
  token:
    realm: http://127.0.0.1:5003/token
    service: berth-registry
    issuer: berth-test-issuer
    rootcertbundle: $DIR/$name/cert.pem
YAML
  elif [ -n "$auth" ]; then
    htpasswd -Bbn berth berth-secret > "$DIR/$name/htpasswd"
    cat >> "$DIR/$name/config.yml" <<YAML
auth:
  htpasswd:
    realm: berth-test
    path: $DIR/$name/htpasswd
YAML
  fi
}

up() { # name port expected-status
  local name=$1 port=$2 want=$3 code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
  if [ "$code" = "$want" ]; then return 0; fi
  return 1
}

start_one() { # name port expected-status [auth]
  local name=$1 port=$2 want=$3
  if up "$name" "$port" "$want"; then return 0; fi
  config "$name" "$port" "${4:-}"
  docker-registry serve "$DIR/$name/config.yml" > "$DIR/$name/registry.log" 2>&1 &
  echo $! > "$DIR/$name/pid"
  for _ in $(seq 100); do
    up "$name" "$port" "$want" && return 0
    if ! kill -0 "$(cat "$DIR/$name/pid")" 2>/dev/null; then
      echo "registry $name died:" >&2; cat "$DIR/$name/registry.log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "registry $name did not answer on 127.0.0.1:$port" >&2; cat "$DIR/$name/registry.log" >&2
  return 1
}

stop_one() {
  local pidfile=$DIR/$1/pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start)
    mkdir -p "$DIR"
    start_one plain 5000 200
    start_one auth 5001 401 auth
    start_one token 5002 401 token
    echo "registries up: http://127.0.0.1:5000 (open), :5001 (htpasswd berth:berth-secret), :5002 (bearer tokens from 127.0.0.1:5003)"
    ;;
  stop)
    stop_one plain; stop_one auth; stop_one token
    rm -rf "$DIR"
    ;;
  status) # exits 0 only when all three answer
    rc=0
    for r in "plain 5000 200" "auth 5001 401" "token 5002 401"; do
      set -- $r
      if up "$1" "$2" "$3"; then echo "127.0.0.1:$2 up"; else echo "127.0.0.1:$2 down"; rc=1; fi
    done
    exit $rc
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
