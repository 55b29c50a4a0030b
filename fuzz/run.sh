#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints, per target, the runs executed, the
# seconds reached and any crash. Exits non-zero when a target crashed (or failed to run).
#
#   fuzz/run.sh                      # every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 fuzz/run.sh xmp exif
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target's working
# corpus lives in fuzz/corpus/<target>/ (ignored by git) and is seeded from the committed
# fuzz/seeds/<target>/ and fuzz/regressions/<target>/. Image targets also read the shared
# conformance corpus (LG_SHARED_CORPUS, default ../shared/corpus) in place when it exists; those
# files are never copied into the repository. Crashes land in fuzz/artifacts/<target>/: minimise
# one with `cargo +nightly fuzz tmin <target> <file>`, fix the bug, and commit the minimised input
# under fuzz/regressions/<target>/ (the lg-detector / lg-events tests replay it on stable).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
SHARED="${LG_SHARED_CORPUS:-$ROOT/../shared/corpus}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-+nightly}"
RSS_LIMIT_MB="${FUZZ_RSS_LIMIT_MB:-2048}"
TIMEOUT_S="${FUZZ_TIMEOUT_S:-10}"

TEXT_TARGETS=(event_parse xmp aigc_label c2pa_chain)
IMAGE_TARGETS=(container exif c2pa provenance decode analyse)
ALL_TARGETS=("${TEXT_TARGETS[@]}" "${IMAGE_TARGETS[@]}")
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

is_text_target() {
    local t
    for t in "${TEXT_TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}

echo "building fuzz targets (cargo $TOOLCHAIN fuzz build)..."
nice cargo "$TOOLCHAIN" fuzz build || { echo "fuzz build failed" >&2; exit 2; }

LOG_DIR="$ROOT/fuzz/target/run-logs"
mkdir -p "$LOG_DIR"
summary=()
failed=0
for t in "${TARGETS[@]}"; do
    if is_text_target "$t"; then max_len=65536; else max_len=1048576; fi
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    inputs=("$corpus" "fuzz/seeds/$t")
    [ -d "fuzz/regressions/$t" ] && inputs+=("fuzz/regressions/$t")
    if ! is_text_target "$t"; then
        for d in "$SHARED/c2pa-rs" "$SHARED/sd-parsers"; do [ -d "$d" ] && inputs+=("$d"); done
    fi
    before=$(find "$artifacts" -type f | wc -l)
    log="$LOG_DIR/$t.log"
    echo "=== $t: ${SECONDS_PER_TARGET}s, -max_len=$max_len (log: ${log#"$ROOT"/})"
    start=$(date +%s)
    nice cargo "$TOOLCHAIN" fuzz run "$t" "${inputs[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="$max_len" \
        -rss_limit_mb="$RSS_LIMIT_MB" -timeout="$TIMEOUT_S" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    elapsed=$(( $(date +%s) - start ))
    runs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    [ -n "$runs" ] || runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | tail -1 | awk '{print $2}')
    [ -n "$runs" ] || runs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    after=$(find "$artifacts" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result="ok"
    else
        failed=1
        kind=$(grep -Eo 'ERROR: libFuzzer: [a-z-]+|deadly signal|panicked at [^ ]+' "$log" | head -1)
        art=$(grep -Eo "Test unit written to [^ ]+" "$log" | tail -1 | awk '{print $5}')
        result="CRASH (rc=$rc; ${kind:-see log}; ${art:-no artifact}; artifacts $before -> $after)"
    fi
    line=$(printf '%-12s runs=%-10s seconds=%-5s %s' "$t" "${runs:-?}" "$elapsed" "$result")
    echo "$line"
    summary+=("$line")
done

echo
echo "=== fuzz summary (FUZZ_SECONDS=$SECONDS_PER_TARGET)"
printf '%s\n' "${summary[@]}"
exit "$failed"
