#!/usr/bin/env bash
# Runs every fuzz target (or the named ones) for SECONDS each, one after another, then prints
# per target: run time, execs, final cov/ft, and the crash artifacts found.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Each target fuzzes a scratch copy of its committed corpus (fuzz/corpus-work/<t>); afterwards
# fuzz/corpus/<t> becomes a set-cover minimized corpus of the old and new inputs (libFuzzer
# -set_cover_merge=1 on edges), so the committed corpora stay small. Logs: fuzz/logs/<t>.log. Crashing inputs:
# fuzz/artifacts/<t>/. Runs under `nice -n 19` (the machines are shared).
#
# Environment: FUZZ_SANITIZER (default none: the code is unsafe-free, and ASan's instrumented
# build is much slower; debug assertions and overflow checks stay on), FUZZ_TIMEOUT (seconds
# one input may take before it counts as a hang, default 10).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
sanitizer="${FUZZ_SANITIZER:-none}"
timeout="${FUZZ_TIMEOUT:-10}"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

nice -n 19 cargo +nightly fuzz build -s "$sanitizer"
mkdir -p fuzz/logs fuzz/corpus-work
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    rm -rf "fuzz/corpus-work/$t"
    cp -r "fuzz/corpus/$t" "fuzz/corpus-work/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log="fuzz/logs/$t.log"
    echo "== $t: fuzzing for ${seconds}s (log: $log)"
    start=$(date +%s)
    set +e
    nice -n 19 cargo +nightly fuzz run -s "$sanitizer" "$t" "fuzz/corpus-work/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    elapsed=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    # Keep a small corpus covering the same edges (a crash stops the run; what was found up
    # to it is merged), plus the seeds taken from the tests. Edges only (-use_counters=0) and
    # a set cover rather than -merge=1's superset keep the committed corpora a few hundred
    # files; the next run grows the counter variety back in minutes.
    rm -rf "fuzz/corpus-min/$t"
    mkdir -p "fuzz/corpus-min/$t"
    if nice -n 19 cargo +nightly fuzz run -s "$sanitizer" "$t" "fuzz/corpus-min/$t" \
        "fuzz/corpus/$t" "fuzz/corpus-work/$t" -- \
        -set_cover_merge=1 -use_counters=0 -timeout="$timeout" -rss_limit_mb=2048 >>"$log" 2>&1; then
        find "fuzz/corpus/$t" -name 'seed-*' -exec cp {} "fuzz/corpus-min/$t/" \;
        rm -rf "fuzz/corpus/$t"
        mv "fuzz/corpus-min/$t" "fuzz/corpus/$t"
    fi
    rm -rf "fuzz/corpus-work/$t" "fuzz/corpus-min/$t"
    line="$t: ${elapsed}s, execs ${execs:-?}, cov ${cov:-?} ft ${ft:-?}, crashes $crashes (exit $status), corpus $(find "fuzz/corpus/$t" -type f | wc -l) files"
    echo "$line"
    if [ "$crashes" -gt 0 ]; then
        ls -t "fuzz/artifacts/$t" | head -n "$crashes" | sed "s|^|    fuzz/artifacts/$t/|"
    fi
    summary+=("$line")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
