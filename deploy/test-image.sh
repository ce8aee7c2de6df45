#!/usr/bin/env bash
# Proves the image built by deploy/build-image.sh works: `waypoint --version`, then the
# quickstart (examples/quickstart) served entirely from the image: two echo backends, the
# waypoint with the quickstart manifests, and requests sent the way ztunnel sends them.
#
#   deploy/test-image.sh [IMAGE]     # default IMAGE: localhost/waypoint:<crate version>
#
# With `podman run` the containers run as the image's user with a read-only root filesystem
# (--read-only) on the host network. Where podman cannot start containers (no usable runtime
# inside this machine's sandbox, say) the image's root filesystem is unpacked with
# `podman export` and each command runs under chroot as the image's user, which cannot write
# to the root-owned tree. The output says which was used.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
version="$(awk -F'"' '/^version/ { print $2; exit }' Cargo.toml)"
image="${1:-localhost/waypoint:$version}"
admin_port=15000 sandwich_port=15088

podman image exists "$image" || { echo "test-image.sh: no image $image (run deploy/build-image.sh)" >&2; exit 1; }
user="$(podman image inspect "$image" --format '{{.Config.User}}')"
[ "$user" = "65532:65532" ] || { echo "FAIL: the image runs as '$user', not 65532:65532" >&2; exit 1; }

work="$(mktemp -d)"
pids=() containers=()
cleanup() {
  for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if podman run --rm --network host --read-only "$image" --version >"$work/version" 2>"$work/podman.err"; then
  mode=podman
  echo "== mode: podman run (read-only root filesystem, user $user)"
  # in_image NAME ARGS...: runs the image detached when NAME is given, else in the foreground.
  in_image() {
    local name="$1"; shift
    local common=(--network host --read-only -v "$PWD/examples/quickstart:/config:ro")
    if [ -n "$name" ]; then
      podman run -d --name "$name-$$" "${common[@]}" "$image" "$@" >/dev/null
      containers+=("$name-$$")
    else
      podman run --rm "${common[@]}" "$image" "$@"
    fi
  }
else
  mode=chroot
  echo "== mode: chroot (podman run failed here: $(tail -1 "$work/podman.err"))"
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"
  container="$(podman create "$image")"
  podman export "$container" | tar -x -C "$rootfs"
  podman rm "$container" >/dev/null
  mkdir -p "$rootfs/config" && cp examples/quickstart/manifests.yaml "$rootfs/config/"
  in_image() {
    local name="$1"; shift
    if [ -n "$name" ]; then
      chroot --userspec="$user" "$rootfs" /usr/local/bin/waypoint "$@" >"$work/$name.log" 2>&1 &
      pids+=($!)
    else
      chroot --userspec="$user" "$rootfs" /usr/local/bin/waypoint "$@"
    fi
  }
  in_image "" --version >"$work/version"
fi

echo "== waypoint --version: $(cat "$work/version")"
grep -q "^waypoint $version\$" "$work/version" || { echo "FAIL: expected 'waypoint $version'" >&2; exit 1; }

echo "== quickstart: echo backends and the waypoint, all from the image"
in_image echo-v1 echo --listen 127.0.0.1:18081 --pod echo-v1
in_image echo-v2 echo --listen 127.0.0.1:18082 --pod echo-v2
in_image waypoint run --config /config/manifests.yaml \
  --sandwich-listen "127.0.0.1:$sandwich_port" --admin-addr "127.0.0.1:$admin_port"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$admin_port/healthz/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin_port/healthz/ready" >/dev/null || { echo "FAIL: the waypoint never became ready" >&2; exit 1; }

failures=0
# expect WHAT IDENTITY PATH: the request's answer must contain every further argument.
expect() {
  local what="$1" sa="$2" path="$3"; shift 3
  local out
  out="$(in_image "" send --to "127.0.0.1:$sandwich_port" --destination 10.96.0.10:80 \
    --identity "spiffe://cluster.local/ns/default/sa/$sa" --path "$path" 2>&1 || true)"
  for want in "$@"; do
    if ! grep -qF -- "$want" <<<"$out"; then
      echo "FAIL: $what: no '$want' in:"; echo "$out"; failures=$((failures + 1)); return
    fi
  done
  echo "ok: $what"
}
expect "GET /hello as sleep is routed to echo-v1" sleep /hello "200 OK" '"pod":"echo-v1"'
expect "GET /v2/hello as sleep is routed to echo-v2" sleep /v2/hello "200 OK" '"pod":"echo-v2"'
expect "GET /hello as intruder is denied" intruder /hello "403" "RBAC: access denied"

echo "== $((3 - failures)) passed, $failures failed (mode: $mode, $((SECONDS - started)) s)"
[ "$failures" = 0 ]
