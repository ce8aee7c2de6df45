#!/usr/bin/env bash
# Quickstart: two echo backends, a waypoint in front of them, and two requests sent the way a
# co-located ztunnel sends them (PROXY v2 header with the client's SPIFFE identity) over the
# waypoint's Unix socket. The waypoint keeps running afterwards; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet -p waypoint-bin
bin=target/debug/waypoint
sock="${TMPDIR:-/tmp}/waypoint-quickstart.sock"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin" echo --listen 127.0.0.1:18081 --pod echo-v1 & pids+=($!)
"$bin" echo --listen 127.0.0.1:18082 --pod echo-v2 & pids+=($!)
# Debug logs of the request path show each request with the identity ztunnel vouched for.
RUST_LOG="${RUST_LOG:-info,waypoint_core::proxy=debug}" "$bin" run --config examples/quickstart/manifests.yaml \
  --sandwich-listen "127.0.0.1:15088,unix:$sock" & pids+=($!)

for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done

send() {
  "$bin" send --to "unix:$sock" --destination 10.96.0.10:80 \
    --identity "spiffe://cluster.local/ns/default/sa/$2" \
    --baggage "k8s.namespace.name=default,k8s.deployment.name=$2,service.name=$2,service.version=v1" \
    --path "$1"
}
echo "== GET /hello as sleep (routed to echo-v1)"; send /hello sleep
echo "== GET /v2/hello as sleep (routed to echo-v2)"; send /v2/hello sleep
echo "== GET /hello as intruder (denied by the AuthorizationPolicy echo-callers)"; send /hello intruder

cat <<MSG
== waypoint is serving on unix:$sock and tcp:127.0.0.1:15088. Try:
   $bin send --to unix:$sock --destination 10.96.0.10:80 --identity spiffe://cluster.local/ns/default/sa/sleep --path /v2/x
   $bin authz --config examples/quickstart/manifests.yaml --destination 10.96.0.10:80 --identity spiffe://cluster.local/ns/default/sa/intruder
   curl -s localhost:15000/metrics | grep istio_requests_total
   Edit examples/quickstart/manifests.yaml: the waypoint reloads it within 2 s.
   Ctrl-C stops everything.
MSG
wait "${pids[2]}"
