#!/usr/bin/env bash
# The CI step for the fuzz targets: build every target with nightly, then replay each
# committed corpus once (-runs=0), so a parser change that breaks a property on a known input
# fails CI. No fuzzing here: long runs are fuzz/run.sh's job.
set -euo pipefail
cd "$(dirname "$0")/.."

# libFuzzer needs nightly (sanitizer coverage flags). These machines have it; a CI host
# without it must fail loudly rather than skip the parsers' regression corpora.
if ! rustup toolchain list | grep -q nightly; then
  echo "error: the nightly toolchain is missing; install it with 'rustup toolchain install nightly'" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -s none
for t in $(cargo +nightly fuzz list); do
  echo "-- replaying fuzz/corpus/$t ($(find "fuzz/corpus/$t" -type f | wc -l) inputs)"
  cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" -- -runs=0 -timeout=10
done
