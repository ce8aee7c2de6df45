#!/usr/bin/env bash
# Builds the waypoint container image with podman, FROM scratch (see deploy/Containerfile).
#
#   deploy/build-image.sh [TAG]      # default TAG: localhost/waypoint:<crate version>
#
# Steps: the release binary (cargo build --release, CARGO_TARGET_DIR respected); a root
# filesystem in a temporary build context holding the binary (debug info stripped), every shared library `ldd`
# lists (at the same paths, so the dynamic loader finds them), /etc/passwd and /etc/group with
# the non-root user 65532, and /etc/nsswitch.conf; then `podman build`. The toolchain here has
# no musl target, hence the glibc libraries rather than a static binary.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

if ! command -v podman >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== podman is missing: installing it (apt-get install -y podman)"
    apt-get install -y -qq podman >/dev/null || { apt-get update -qq && apt-get install -y -qq podman >/dev/null; }
  else
    echo "build-image.sh: podman is required (Debian: apt-get install podman)" >&2
    exit 1
  fi
fi

echo "== cargo build --release -p waypoint-bin"
cargo build --release --locked -p waypoint-bin --bin waypoint
binary="${CARGO_TARGET_DIR:-target}/release/waypoint"
version="$("$binary" --version | awk '{print $2}')"
tag="${1:-localhost/waypoint:$version}"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin"
# Debug info off (the release profile keeps line tables: ~97 MB -> ~22 MB); symbols stay, so a
# panic's backtrace still names functions.
strip --strip-debug -o "$rootfs/usr/local/bin/waypoint" "$binary"
chmod 0755 "$rootfs/usr/local/bin/waypoint"

echo "== shared libraries (ldd)"
# Lines are `name => /path (addr)` or `/path (addr)` (the loader); vdso has no file.
ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u |
  while read -r lib; do
    echo "   $lib"
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done

mkdir -p "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
# glibc resolves names with these sources; /etc/hosts and resolv.conf are mounted at run time.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
cp deploy/Containerfile "$context/Containerfile"

echo "== podman build -t $tag"
podman build --quiet \
  --label "org.opencontainers.image.title=waypoint" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  -t "$tag" "$context"
podman image inspect "$tag" --format 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}, entrypoint {{.Config.Entrypoint}}'
echo "== built $tag in $((SECONDS - started)) s"
