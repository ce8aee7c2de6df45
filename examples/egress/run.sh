#!/usr/bin/env bash
# Egress waypoint: a ServiceEntry for api.example.com bound to this waypoint, an
# AuthorizationPolicy on it, and TLS originated by a DestinationRule. The "external" service
# is an echo backend speaking TLS with a certificate from a CA made here. Two requests are sent
# as ztunnel sends them: one allowed (and answered over TLS), one denied.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet -p waypoint-bin
bin=target/debug/waypoint
dir=target/egress-example
sock="${TMPDIR:-/tmp}/waypoint-egress.sock"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

rm -rf "$dir" && mkdir -p "$dir"
"$bin" certs ca --out "$dir/ca" --trust-domain example.com >/dev/null
"$bin" certs issue --ca "$dir/ca" --identity spiffe://example.com/ns/external/sa/api --out "$dir/api" >/dev/null

"$bin" echo --listen 127.0.0.1:18443 --pod api-example-com \
  --tls-cert "$dir/api/cert-chain.pem" --tls-key "$dir/api/key.pem" & pids+=($!)
"$bin" run --config examples/egress/manifests.yaml --sandwich-listen "unix:$sock" \
  --admin-addr 127.0.0.1:15001 & pids+=($!)

for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done

send() {
  "$bin" send --to "unix:$sock" --destination 240.240.0.10:80 --host api.example.com \
    --identity "spiffe://cluster.local/ns/default/sa/$1" --path /v1/status
}
echo "== GET http://api.example.com/v1/status as sleep (allowed; TLS originated by the waypoint)"
send sleep
echo "== GET http://api.example.com/v1/status as intruder (denied by egress-callers)"
send intruder || true
