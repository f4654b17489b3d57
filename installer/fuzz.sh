#!/usr/bin/env bash
# Builds the libFuzzer targets in the asan preset (clang, ASan + UBSan) and runs
# each for FUZZ_SECONDS (default 60), as many at once as FUZZ_JOBS (default: the cores, at most 4), over a scratch copy of its seed corpus in
# tests/fuzz/corpus/, so the committed seeds stay as they are. Any crash,
# sanitizer report, leak, timeout or out-of-memory fails the script; the
# reproducing inputs are kept in build-asan/fuzz-findings/.
# FUZZ_TIMEOUT (default 60) is the per-input limit in seconds; it is generous
# because a target's one-time setup (e.g. loading the real tokenizer, ~15 s
# under ASan) counts against the first input unless done in LLVMFuzzerInitialize.
# With the default targets it also runs the engine end to end under the same
# sanitizers (cetus-cli from the asan tree): the conformance fixtures, the
# CUDA comparison harness with the CPU standing in for the GPU (token choice on
# the "device" included) on the tiny model in GGUF blocks (the CPU's AVX2 block
# decoders under the sanitizers; the fixtures cover BF16 and FP8 weights) and a
# sampled MTP generation; any report fails.
# Usage: installer/fuzz.sh [target ...]   (default: every fuzz target)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-60}"
start=$SECONDS
elapsed() { echo "== fuzz.sh: $1 at $((SECONDS - start)) s"; }
timeout="${FUZZ_TIMEOUT:-60}"

targets=("$@")
engine_checks=0
if [ ${#targets[@]} -eq 0 ]; then
    engine_checks=1
    targets=(fuzz_safetensors fuzz_config fuzz_gguf fuzz_prefix_file fuzz_sampler fuzz_chat_request fuzz_routing_trace fuzz_token_probabilities fuzz_import fuzz_store_rows fuzz_attachments)
    for t in fuzz_tokenizer_load fuzz_tokenizer_encode; do
        [ -f "tests/fuzz/$t.cpp" ] && targets+=("$t")
    done
fi

cmake --preset asan
cmake --build --preset asan --target "${targets[@]}"
elapsed "fuzz targets built"

work="$(mktemp -d "${TMPDIR:-/tmp}/cetus-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
findings="$root/build-asan/fuzz-findings"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

# Runs one target; its exit status and log stay in $work/$t for the report below.
fuzz_one() {
    local t=$1 name="${1#fuzz_}" corpus="$work/$1/corpus" rc=0
    mkdir -p "$corpus"
    for seeds in "tests/fuzz/corpus/$name" "tests/fuzz/corpus/${name%%_*}"; do
        if [ -d "$seeds" ]; then
            cp -R "$seeds/." "$corpus/"
            break
        fi
    done
    local args=(-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=4096 -print_final_stats=1
                -artifact_prefix="$work/$t/")
    for dict in "tests/fuzz/$name.dict" "tests/fuzz/${name%%_*}.dict"; do
        if [ -f "$dict" ]; then
            args+=(-dict="$dict")
            break
        fi
    done
    echo "== $t: ${seconds}s over $(find "$corpus" -type f | wc -l) seed files"
    "build-asan/tests/fuzz/$t" "${args[@]}" "$corpus" >"$work/$t/log" 2>&1 || rc=$?
    echo "$rc" >"$work/$t/rc"
}

# Each libFuzzer run uses one core: FUZZ_JOBS (default: the cores, at most 4) run at once.
jobs_max="${FUZZ_JOBS:-$(nproc)}"
[ "$jobs_max" -gt 4 ] && jobs_max=4
[ "$jobs_max" -lt 1 ] && jobs_max=1
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs_max" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait
elapsed "fuzzing done"

failed=()
for t in "${targets[@]}"; do
    log="$work/$t/log"
    rc=$(cat "$work/$t/rc" 2>/dev/null || echo 1)
    echo "== $t"
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|DONE' "$log" || true
    shopt -s nullglob
    artifacts=("$work/$t"/crash-* "$work/$t"/leak-* "$work/$t"/timeout-* "$work/$t"/oom-*)
    shopt -u nullglob
    if [ "$rc" -ne 0 ] || [ ${#artifacts[@]} -gt 0 ]; then
        mkdir -p "$findings"
        cp "$log" "$findings/$t.log"
        [ ${#artifacts[@]} -gt 0 ] && cp "${artifacts[@]}" "$findings/"
        echo "!! $t failed (exit $rc); log and inputs in $findings" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done

if [ "$engine_checks" = 1 ]; then
    cmake --build --preset asan --target cetus-cli
    elapsed "sanitized cetus-cli built"
    cli=build-asan/cetus-cli
    run_checked() {  # name, command...: a failed check or any sanitizer report fails the step
        local name=$1 rc=0 t0=$SECONDS
        shift
        echo "== sanitized engine: $name"
        "$@" >"$work/engine-$name.log" 2>&1 || rc=$?
        echo "   ($((SECONDS - t0)) s)"
        grep -E 'checks, [0-9]+ failed|tokens, ' "$work/engine-$name.log" | tail -n 1 || true
        if [ "$rc" -ne 0 ] || grep -qE 'runtime error|AddressSanitizer|LeakSanitizer' "$work/engine-$name.log"; then
            mkdir -p "$findings"
            cp "$work/engine-$name.log" "$findings/engine-$name.log"
            echo "!! sanitized engine run '$name' failed (exit $rc); log in $findings" >&2
            tail -n 40 "$work/engine-$name.log" >&2
            failed+=("engine-$name")
        fi
    }
    run_checked selftest "$cli" selftest
    run_checked device-path env CETUS_SELFTEST_CUDA_STANDIN=cpu "$cli" selftest --device cuda --compare tiny-gguf
    run_checked sampled-mtp "$cli" generate --temperature 0.9 --top-p 0.9 --top-k 40 --min-p 0.02 \
        --repeat-penalty 1.2 --seed 5 --mtp on --draft 3 --prompt "Tell me about the sea."
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: no findings in ${targets[*]}"
[ "$engine_checks" = 1 ] && echo "sanitized engine runs: clean"
exit 0
