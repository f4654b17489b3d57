#!/usr/bin/env bash
# The CUDA backend's kernels and host code on the CUDA emulator under gcc's
# AddressSanitizer and UndefinedBehaviorSanitizer (the emu-sanitize preset,
# build-emu-san/): a kernel's read or write past device memory, pinned memory or
# its shared memory, a misaligned vector access (a uint4 or float4 load from an
# address not 16-byte aligned faults on a GPU and not on x86), or any other
# undefined behaviour stops the run with a report. These are faults that
# otherwise only a GPU's compute-sanitizer shows, at the price of GPU time.
#
# It runs the emulator's self-check (both thread orders), the attention, expert
# and prefill kernel checks, the fixtures in exact mode and the CUDA-against-CPU
# comparison on the tiny random models (fp32 and bf16 latent caches); with
# --full also two V2-Lite layers (about an hour more on 2 cores). Not part
# of the default test command or CI (its build alone takes about ten minutes on
# 2 cores, its runs about 40 minutes); run it after changing a kernel. Any report or failed check fails
# the script; logs stay in build-emu-san/emu-sanitize/.
# UBSan's null-pointer check is off in the preset (-fno-sanitize=null): gcc 12
# tests a thread-local's address for null on stale flags after its TLS init
# call and reports the emulator's blockIdx and threadIdx as null; a real null
# access still stops the run (as a segmentation fault under ASan).
# Usage: installer/emu-sanitize.sh [--full]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
full=0
[ "${1:-}" = "--full" ] && full=1

cmake --preset emu-sanitize >/dev/null
targets=(cetus-cli cetus-cuda-emu cuda_emu_selfcheck cuda_emu_attention_check cuda_emu_experts_check
    cuda_emu_prefill_check)
cmake --build --preset emu-sanitize --target "${targets[@]}"

bin="$root/build-emu-san"
logs="$bin/emu-sanitize"
mkdir -p "$logs"
export CETUS_CUDA_PLUGIN="$bin/libcetus-cuda-emu.so"
export CETUS_EMU_THREADS=2 OMP_WAIT_POLICY=PASSIVE
# The emulator's fibers switch stacks: ASan is told of each switch, and its
# stack-use-after-return mode (fake stacks) stays off. Leak checks are off: the
# emulated device memory and shared memory live until the process ends, as on a GPU.
export ASAN_OPTIONS="detect_stack_use_after_return=0:detect_leaks=0:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1"
data="$root/tests/data/golden"

failed=()
step() {  # name, env assignments..., --, command...
    local name=$1 rc=0
    shift
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    echo "== $name"
    local t0=$SECONDS
    env "${envs[@]}" "$@" >"$logs/$name.log" 2>&1 || rc=$?
    grep -E 'checks, [0-9]+ failed|failed$|0 failed' "$logs/$name.log" | tail -n 1 || true
    if [ "$rc" -ne 0 ] || grep -qE 'runtime error|AddressSanitizer|LeakSanitizer' "$logs/$name.log"; then
        echo "!! $name failed (exit $rc, $((SECONDS - t0)) s); log: $logs/$name.log" >&2
        grep -m 1 -A 30 -E 'runtime error|ERROR: AddressSanitizer|ERROR: LeakSanitizer' "$logs/$name.log" >&2 ||
            tail -n 30 "$logs/$name.log" >&2
        failed+=("$name")
    else
        echo "   clean ($((SECONDS - t0)) s)"
    fi
}

step selfcheck -- "$bin/tests/cuda_emu/cuda_emu_selfcheck"
step selfcheck-reverse CETUS_EMU_ORDER=reverse -- "$bin/tests/cuda_emu/cuda_emu_selfcheck"
step attention CETUS_EMU_SHARED_FILL=nan CETUS_EMU_ASYNC=issue -- "$bin/tests/cuda_emu/cuda_emu_attention_check"
step experts CETUS_EMU_SHARED_FILL=nan -- "$bin/tests/cuda_emu/cuda_emu_experts_check"
step prefill CETUS_EMU_SHARED_FILL=nan -- "$bin/tests/cuda_emu/cuda_emu_prefill_check"
step fixtures CETUS_EMU_ORDER=reverse -- "$bin/cetus-cli" selftest --device cuda --compare none --fixtures "$data"
step compare-tiny -- "$bin/cetus-cli" selftest --device cuda --compare tiny --compare-only
step compare-tiny-kv-bf16 CETUS_EMU_ASYNC=issue CETUS_EMU_SHARED_FILL=nan -- \
    "$bin/cetus-cli" selftest --device cuda --compare tiny --compare-only --kv-cache bf16
if [ "$full" = 1 ]; then
    step compare-v2-lite -- "$bin/cetus-cli" selftest --device cuda --compare v2-lite --compare-only
    step compare-v2-lite-kv-bf16 CETUS_EMU_SHARED_FILL=nan -- \
        "$bin/cetus-cli" selftest --device cuda --compare v2-lite --compare-only --kv-cache bf16
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "sanitized emulator runs failed: ${failed[*]}" >&2
    exit 1
fi
echo "sanitized emulator runs: clean"
