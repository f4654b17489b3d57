#!/usr/bin/env bash
# The GPU check (README, "CUDA backend"), run on the GPU machine from the repository
# root with the Qt-free build-gpu/ folder (cetus-cli + libcetus-cuda.so) carried over:
#   cmake --preset gpu-check && cmake --build --preset gpu-check    # on a development machine
#   installer/gpu-check.sh pack                                       # carry gpu-carry/ (8 MB packed)
#   installer/gpu-check.sh all                                        # on the GPU machine: one call
# or, when the machine stays for a second call, `conformance` then `bench`.
# Each mode fits one device call (under 10 minutes; every step has its own time
# limit so one hang cannot eat the session). Results go to gpu-out/ and, packed, to $OUT
# (the device tool's output folder); a summary to stdout.
#   all: within one call (steps end by 500 s), most important first: facts, selftest (and the bisect on
#        failures), the bench figures (V2-Lite decode and prefill, MTP), memcheck, the
#        selftest with programmatic dependent launch, the attention, expert and prefill kernels' own checks
#        (cetus-attention-check, cetus-experts-check, cetus-prefill-check, cetus-ggml-check) and the selftest with a bf16 cache,
#        the bench comparisons, and with the
#        time left Nsight Compute profiles of decode (kernels by share of time) and of the GGUF
#        decode products (DRAM, first-level cache and SM throughput: what bounds them).
#   conformance (~4 min, estimated): GPU facts, info, selftest (fixtures in exact mode + CUDA vs CPU
#                on small random shapes, graphs vs direct launches, token choices), the tiny comparison
#                with programmatic dependent launch and with a bf16 latent cache, a bisect of the fast paths on failures, memcheck
#                on the tiny comparison.
#   bench (~5-7 min, estimated): V2-Lite BF16 (as built, and with the step tuner's choice after its
#                trials: the decode fusions apart, programmatic dependent launch, ...) and FP8 decode/prefill with their fractions of the measured limits, FP8
#                without CUDA graphs, decode at 8192 tokens with an fp32 and a bf16 cache (and the
#                bf16 one with its attention on the CUDA cores, CETUS_CUDA_ATTENTION_MMA=0), a 2048-token
#                prefill with the tensor-core experts and attention and without (and with expert tiles
#                of 128 rows, and with its attention in the absorbed form), V2-Lite in GGUF blocks (Q4_K_M's mix)
#                and its 2048-token prefill with and without the tensor-core experts, MTP on the demo model
#                (GPU, CPU); figures.md holds the README rows; with the time left, Nsight Compute
#                profiles of the decode attention at 8192 tokens (tensor cores, CUDA cores) and of
#                the GGUF decode products.
#   decode (~6 min): the tiny comparison, the experts' and attention's own checks, the GGUF comparison
#         with the rows staged and with int8 activations, the step tuner (--tune-steps) on V2-Lite BF16
#         and Q4_K_M with int8 activations (every switch's setting timed side by side in one process,
#         its logits checked against the built ones), the tiny comparison with the shared experts on a
#         second stream (CETUS_CUDA_OVERLAP=1) and the L2 prefetch ahead of the output projection
#         (CETUS_CUDA_PREFETCH_AHEAD=1): V2-Lite BF16 whole with both, at 4 layers with each and both,
#         Q4_K_M int8 at 4 layers with the first), V2-Lite decode in BF16, FP8 and Q4_K_M (and
#         Q4_K_M with int8 activations, --int8-activations, whole and at 4 layers, also staged) and at
#         4 layers (also without the decode fusions, CETUS_CUDA_FUSE=0, and with
#         programmatic dependent launch, CETUS_CUDA_PDL=1; at 8192 cached tokens with and
#         without the fusions; BF16 and Q4_K_M with the L2 prefetch of rows, CETUS_CUDA_PREFETCH=1; Q4_K_M with
#         its decode rows staged in shared memory, CETUS_CUDA_GGUF_STAGE=1, and with two tiles in flight, =2), and the Nsight Compute profiles of decode (with each kernel's busiest multiprocessor over the
#         mean: a last block's tail) and of the GGUF products: the loop of work on decode speed.
#   full: the four-layer V3 comparison, racecheck on the tiny comparison and an Nsight Compute
#         profile of decode.
set -uo pipefail
mode="${1:-conformance}"
# Each step's output goes to gpu-out/; at the end the whole folder is packed into
# $OUT/gpu-check.tar.gz beside figures.md and summary.txt (the device tool brings
# back at most 8 files from $OUT), and the summary is also printed.
out=gpu-out
[ "$mode" = pack ] || rm -rf "$out"
mkdir -p "$out"
cli=build-gpu/cetus-cli
# `pack` (here, after the build) puts the CLI, the plug-in, the attention, expert, prefill and GGUF checks
# and the OpenMP runtime, stripped, into gpu-carry/cetus-gpu.tar.xz (about 8 MB; 59 MB unpacked); carry
# gpu-carry/, and the checks unpack it into gpu-carry/bin/ and use it (with xz, or Python's tarfile where
# the image has no xz).
carried=gpu-carry/cetus-gpu.tar.xz
if [ "$mode" != pack ] && [ -f "$carried" ] && [ ! build-gpu/cetus-cli -nt "$carried" ]; then
    rm -rf gpu-carry/bin && mkdir -p gpu-carry/bin
    if command -v xz > /dev/null; then
        tar -xJf "$carried" -C gpu-carry/bin
    else
        python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$carried" gpu-carry/bin
    fi && cli=gpu-carry/bin/cetus-cli
fi
# A dry run of the script's mechanics here, on the CUDA emulator (too slow for most steps):
#   CETUS_CUDA_PLUGIN=$PWD/build/libcetus-cuda-emu.so GPU_CHECK_CLI=build/cetus-cli installer/gpu-check.sh all
cli=${GPU_CHECK_CLI:-$cli}
if [ "$mode" != pack ] && [ ! -x "$cli" ]; then
    echo "no $cli: build and pack here, then carry gpu-carry/ (see the top of this script)" >&2
    exit 3
fi
# cuBLAS from the toolkit, else (last) from the image's Python wheels, then the carried OpenMP runtime.
wheels=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/{cu13,cublas}/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:${wheels}$PWD/gpu-carry/bin"
export OMP_WAIT_POLICY=PASSIVE
demo=$(ls -d resources/models/*/ 2>/dev/null | head -1)
# One device call is 600 s: the steps end by 500 s (plus 10 s to kill one that hangs),
# leaving time for the summaries and the packing (each under its own limit); the
# summary reaches $OUT as it is written, so a call cut short still brings it back.
budget=${GPU_CHECK_BUDGET:-500}
step() {  # step NAME SECONDS COMMAND... : stdout to $out/NAME.out, stderr to $out/NAME.log
    local name=$1 limit=$2; shift 2
    local left=$((budget - SECONDS))
    # A step gets what is left of the call when that is less than its own limit,
    # and is skipped when that is under half its limit (and so likely to be cut off).
    if [ $((2 * left)) -lt "$limit" ]; then
        echo "== $name: skipped (${SECONDS} s used, needs up to $limit s)"
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" > "$out/$name.out" 2> "$out/$name.log"
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || echo "$name" >> "$out/failed-steps.txt"
    # Cut off: if the GPU no longer answers, every later step would only wait out its limit.
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        timeout -k 5 15 nvidia-smi -L > /dev/null 2>&1 || { echo "== the GPU does not answer: the remaining steps are skipped"; budget=0; }
    fi
    tail -2 "$out/$name.log" | cut -c1-300
    return 0
}
summarise_selftest() {
    python3 - "$1" <<'PY' || true
import json, sys
try:
    rows = json.load(open(sys.argv[1]))
except Exception as e:
    print("selftest output unreadable:", e); sys.exit()
num = lambda v: float("nan") if v is None else v  # NaN is written as null
bad = [r for r in rows if not r["passed"]]
print(f"selftest cuda: {len(rows)} checks, {len(bad)} failed")
for r in bad[:40]:
    print(f"  FAIL {r['case']} / {r['check']}: err {num(r['error']):.3g} tol {num(r['tolerance']):.3g} {r['detail'][:200]}")
worst = {}
for r in rows:
    if r["passed"] and num(r["tolerance"]) > 0:
        k = (r["case"].split(" ")[0], r["check"].split(":")[0] if ":" in r["check"] else "fixture")
        worst[k] = max(worst.get(k, 0), num(r["error"]))
for k, v in sorted(worst.items()):
    print(f"  worst {k[0]} {k[1]}: {v:.3g}")
PY
}
summarise_tuning() {  # the step tuner's trials (bench --tune-steps): each setting's time a step
    for f in "$@"; do
        python3 - "$out/$f.out" 2>/dev/null <<'PY' || echo "$f: no step tuning"
import json, sys
t = json.load(open(sys.argv[1]))["step_tuning"]
print(f"{sys.argv[1].split('/')[-1]}: step tuning at {t['context']} cached tokens, {t['rounds']} rounds of {t['steps']} steps, {t['seconds']:.1f} s")
for x in t["trials"]:
    print(f"  {x['setting']:<40} {x['step_ms']:8.3f} ms  logits {x['logit_error']:.2g}{'' if x['valid'] else '  BEYOND THE BOUND'}")
print(f"  {t['note']}")
PY
    done
}
summarise_bench() {
    for f in "$@"; do
        python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], {k: j.get(k) for k in ['device','load_s','kv_cache_type','prefill_tokens_per_s','decode_tokens_per_s','decode_bytes_per_token','decode_bandwidth_gbs','device_copy_bandwidth_gbs','bandwidth_fraction','prefill_tflops','device_peak_bf16_tflops','compute_fraction']})" "$out/$f.out" 2>/dev/null || echo "$f: no JSON"
    done
}

figures_table() {  # the bench figures as README table rows, to $out/figures.md and stdout
    python3 - "$out" "$@" <<'PY' || true
import datetime, json, os, subprocess, sys
out, names = sys.argv[1], sys.argv[2:]
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
    gpu = "?"
rows = [f"Measured {datetime.date.today()} on {gpu} (`installer/gpu-check.sh`):", "",
        "| run | prefill tok/s | prefill TFLOP/s (of peak) | decode tok/s | decode GB/s (of copy bandwidth) |",
        "|---|---|---|---|---|"]
for n in names:
    try:
        j = json.load(open(os.path.join(out, n + ".out")))
    except Exception:
        rows.append(f"| {n} | no result | | | |")
        continue
    f = lambda k, d=0: j.get(k) or 0
    rows.append(f"| {n}: {j.get('model')} {j.get('weights')}, {j.get('kv_cache_type')} cache, prompt {j.get('prompt_tokens')}, "
                f"{j.get('gen_tokens')} generated | {f('prefill_tokens_per_s'):,.0f} | "
                f"{f('prefill_tflops'):.1f} ({100 * f('compute_fraction'):.0f}% of {f('device_peak_bf16_tflops'):.0f}) | "
                f"{f('decode_tokens_per_s'):,.1f} | {f('decode_bandwidth_gbs'):,.0f} "
                f"({100 * f('bandwidth_fraction'):.0f}% of {f('device_copy_bandwidth_gbs'):,.0f}) |")
text = "\n".join(rows) + "\n"
open(os.path.join(out, "figures.md"), "w").write(text)
print(text)
PY
}

# GPU facts, the libraries resolved, info and the selftest with the CUDA-vs-CPU comparison.
gpu_facts_and_selftest() {
    {
        timeout -k 5 20 nvidia-smi
        timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv
        uname -r  # the machine's runtime: ncu and compute-sanitizer work on Firecracker, not on gVisor
        ls /usr/local/cuda/lib64/libcublas* 2>&1 | head -4
        for tool in ncu compute-sanitizer; do command -v "$tool" || echo "$tool: not on the PATH"; done
        [ -f gpu-carry/bin/BUILD_INFO ] && cat gpu-carry/bin/BUILD_INFO
    } > "$out/gpu.txt" 2>&1
    head -40 "$out/gpu.txt"
    "$cli" --version > "$out/version.txt" 2>&1
    # Libraries the plug-in and the CLI resolve here (a "not found" explains a failed load at once).
    ldd "$(dirname "$cli")/libcetus-cuda.so" "$cli" 2>&1 | grep -E "not found|cublas|gomp|:$" | tee "$out/ldd.txt"
    step info-cuda 60 "$cli" info --device cuda --model tests/data/golden/v3-noaux
    step selftest-cuda 300 "$cli" selftest --device cuda --compare small --json
    summarise_selftest "$out/selftest-cuda.out"
    grep -h "graphs off" "$out/selftest-cuda.log" | head -3
}

selftest_pdl() {
    # Programmatic dependent launch (an experiment, off by default): the tiny comparison with it on.
    step selftest-pdl 60 env CETUS_CUDA_PDL=1 "$cli" selftest --device cuda --compare tiny --compare-only --json
    summarise_selftest "$out/selftest-pdl.out"
    grep -h "graphs off\|capture" "$out/selftest-pdl.log" | head -3  # PDL must run inside the graphs too
}

kernel_checks() {
    # The decode attention kernels and the routed experts' kernels alone against a
    # double-precision reference (seconds each): the tensor-core kernels' fragment
    # layouts on the hardware, to their own bounds, and both expert tile widths bit for bit.
    step attention-check 30 "$(dirname "$cli")/cetus-attention-check"
    grep -E "FAIL|failed" "$out/attention-check.out" | head -8
    step experts-check 60 "$(dirname "$cli")/cetus-experts-check" --v2-lite
    grep -E "FAIL|failed" "$out/experts-check.out" | head -8
    # Prefill attention in both forms (the products through cuBLAS) against double precision.
    step prefill-check 30 "$(dirname "$cli")/cetus-prefill-check"
    grep -E "FAIL|failed" "$out/prefill-check.out" | head -8
    # GGUF blocks on the GPU: decoded (ggml_decode.cu) == the engine's decoders bit for bit, the
    # embedding's rows too, the warp-per-row products from the blocks within fp32 rounding.
    step ggml-check 30 "$(dirname "$cli")/cetus-ggml-check"
    grep -E "FAIL|failed" "$out/ggml-check.out" | head -8
}

selftest_kv_bf16() {
    # Both backends with the latent cache in bf16 (the fixtures' bf16-cache checks run in selftest-cuda).
    # Its attention runs on the tensor cores (mla_attention_mma.cu); on failures, again on the CUDA cores.
    step selftest-kv-bf16 60 "$cli" selftest --device cuda --compare tiny --compare-only --kv-cache bf16 --json
    summarise_selftest "$out/selftest-kv-bf16.out"
    # (A fault, a hang or cut-off JSON is a failed step without readable rows.)
    if grep -qx selftest-kv-bf16 "$out/failed-steps.txt" 2>/dev/null ||
        python3 -c "import json,sys; sys.exit(0 if any(not r['passed'] for r in json.load(open(sys.argv[1]))) else 1)" \
            "$out/selftest-kv-bf16.out" 2>/dev/null; then
        step selftest-kv-bf16-cores 60 env CETUS_CUDA_ATTENTION_MMA=0 \
            "$cli" selftest --device cuda --compare tiny --compare-only --kv-cache bf16 --json
        summarise_selftest "$out/selftest-kv-bf16-cores.out"
    fi
}

bisect_on_failures() {
    # On failures, the tiny comparison again with one path switched off at a time,
    # so one call already says which kernel family is at fault.
    if python3 -c "import json,sys; sys.exit(0 if any(not r['passed'] for r in json.load(open(sys.argv[1]))) else 1)" \
        "$out/selftest-cuda.out" 2>/dev/null; then
        for sw in CETUS_CUDA_FUSE=0 CETUS_CUDA_EXPERT_MMA=0 CETUS_CUDA_ATTENTION_GEMM=0 CETUS_CUDA_PREFILL_FORM=absorbed \
            CETUS_CUDA_GRAPHS=0 CETUS_CUDA_SAMPLING=host; do
            step "bisect-${sw%%=*}" 45 env "$sw" "$cli" selftest --device cuda --compare tiny --compare-only --json
            python3 -c "import json,sys; rows=json.load(open(sys.argv[1])); bad=[r['case']+' / '+r['check'] for r in rows if not r['passed']]; print('  with', sys.argv[2], len(rows), 'checks,', len(bad), 'failed:', '; '.join(bad[:6]))" \
                "$out/bisect-${sw%%=*}.out" "$sw" 2>/dev/null || echo "  with $sw: no JSON"
        done
    fi
}

memcheck() {
    if command -v compute-sanitizer >/dev/null; then
        # The tiny comparison covers every kernel: BF16 and FP8, graphs, two-chunk
        # prompts, the token-choice kernels. (No leak check: memory a library keeps
        # until exit is not a fault of the kernels.)
        step memcheck 150 compute-sanitizer --tool memcheck --print-limit 50 --error-exitcode 9 \
            "$cli" selftest --device cuda --compare tiny --compare-only
        grep -E "ERROR SUMMARY|Invalid|out of bounds" "$out/memcheck.out" | head -5
    else
        echo "== memcheck: skipped (compute-sanitizer not on the PATH)"
    fi
}
# The issue's figures: V2-Lite decode and prefill, MTP on the demo model.
bench_figures() {
    step bench-v2lite-cuda 170 "$cli" bench --device cuda --random-model v2-lite --prompt 512 --gen 128 --json
    # Prefill of a long prompt (4 layers), later against the fp32 kernels.
    step bench-prefill-2048 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 2048 --gen 0 --json
    if [ -n "$demo" ]; then
        step bench-mtp-cuda 60 "$cli" bench --device cuda --model "$demo" --gen 64 --mtp both --repeat 2 --json
        step bench-mtp-cpu 60 "$cli" bench --device cpu --threads 1 --model "$demo" --gen 64 --mtp both --repeat 2 --json
        # Drafts looked up in the context instead (verify batches of up to 5 where the demo's
        # short answers rarely repeat: mostly what a wrong guess costs on the GPU).
        step bench-lookup-cuda 60 "$cli" bench --device cuda --model "$demo" --gen 64 --mtp both --lookup --draft 4 \
            --repeat 2 --json
        for f in bench-mtp-cuda bench-mtp-cpu bench-lookup-cuda; do
            python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], 'speedup', j.get('speedup'), 'acceptance', j.get('mtp_on',{}).get('acceptance_rate'), 'decode off/on', j.get('mtp_off',{}).get('decode_tokens_per_s'), j.get('mtp_on',{}).get('decode_tokens_per_s'))" "$out/$f.out" 2>/dev/null || echo "$f: no JSON"
        done
    fi
}
# Side-by-side runs of the switches, then every bench run as README rows.
bench_comparisons() {
    # The step tuner (--tune-steps): the decode step with each switch (the decode fusions apart,
    # programmatic dependent launch, the shared experts on a second stream, the L2 prefetches)
    # timed side by side in one process, its logits checked against the built ones; then the
    # same bench as the first run with the setting it chose.
    step bench-v2lite-tune 170 "$cli" bench --device cuda --random-model v2-lite --prompt 512 --gen 128 \
        --tune-steps --json
    summarise_tuning bench-v2lite-tune
    step bench-prefill-2048-fp32 90 env CETUS_CUDA_EXPERT_MMA=0 CETUS_CUDA_ATTENTION_GEMM=0 \
        "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 2048 --gen 0 --json
    # The tensor-core experts in tiles of 128 weight rows instead of 64 (the same bits).
    step bench-prefill-2048-tile128 60 env CETUS_CUDA_EXPERT_TILE_ROWS=128 \
        "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 2048 --gen 0 --json
    # Prefill attention in the absorbed form (the expanded form is the default for long chunks).
    step bench-prefill-2048-absorbed 60 env CETUS_CUDA_PREFILL_FORM=absorbed \
        "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 2048 --gen 0 --json
    # A 32-token follow-up after 4096 tokens: the form by cost (absorbed there) against the expanded form.
    step bench-followup-4096 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 4096 --gen 0 \
        --followup 32 --json
    step bench-followup-4096-expanded 60 env CETUS_CUDA_PREFILL_FORM=expanded \
        "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 4096 --gen 0 --followup 32 --json
    for f in bench-followup-4096 bench-followup-4096-expanded; do
        python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], 'follow-up ms', j.get('followup_ms'), 'prefill tok/s', j.get('prefill_tokens_per_s'))" "$out/$f.out" 2>/dev/null || echo "$f: no JSON"
    done
    # Conversations taking turns: the prefix store's copies between device and host against prefills.
    step bench-conversations 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --conversations 3 \
        --prompt 2048 --followup 32 --repeat 2 --json
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('conversations: first token', j.get('first_token_ms_store'), 'ms with the store,', j.get('first_token_ms_no_store'), 'without')" "$out/bench-conversations.out" 2>/dev/null || echo "bench-conversations: no JSON"
    # A conversation opened again after a restart: its rows read from the prefix cache's file
    # (page cache, then one copy per layer to the device) against a full prefill.
    step bench-restart 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --restart --prompt 4096 \
        --followup 32 --repeat 2 --json
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('restart: first token', j.get('first_token_ms_disk'), 'ms from the file,', j.get('first_token_ms_prefill'), 'with a prefill,', j.get('file_bytes'), 'bytes')" "$out/bench-restart.out" 2>/dev/null || echo "bench-restart: no JSON"
    # Token probabilities: each step's logits copied to the host and a log-softmax there
    # (4 layers: the step is short, so this is an upper bound of the cost on V2-Lite).
    step bench-logprobs 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --mtp off --prompt 256 --gen 64 \
        --logprobs 5 --repeat 2 --json
    python3 -c "import json,sys; j=json.load(open(sys.argv[1]))['mtp_off']; print('logprobs: decode', j['decode_tokens_per_s'], 'tok/s without,', j['with_logprobs']['decode_tokens_per_s'], 'with 5 alternatives')" "$out/bench-logprobs.out" 2>/dev/null || echo "bench-logprobs: no JSON"
    step bench-v2lite-fp8-cuda 130 "$cli" bench --device cuda --random-model v2-lite --dtype fp8 --prompt 512 --gen 64 --json
    # GGUF blocks kept on the GPU (a Q4_K_M-like mix): decode from the blocks, prefill expanding them
    # for cuBLAS and decoding them in the tensor-core experts' tiles; then a 2048-token prefill with
    # those experts and with the fp32 expert kernel (what GGUF experts took before 2026-12-02).
    step bench-v2lite-q4km-cuda 130 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m --prompt 512 --gen 64 --json
    # The same in exact mode: its decode products decode every value to the CPU's bits, where
    # the fast mode's take codes times activations (device_math.cuh: GgmlCodes).
    step bench-v2lite-q4km-exact 130 env CETUS_CUDA_EXACT=1 "$cli" bench --device cuda --random-model v2-lite \
        --dtype q4_k_m --prompt 512 --gen 64 --json
    step bench-prefill-2048-q4km 60 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m --layers 4 \
        --prompt 2048 --gen 0 --json
    step bench-prefill-2048-q4km-fp32 90 env CETUS_CUDA_EXPERT_MMA=0 "$cli" bench --device cuda --random-model v2-lite \
        --dtype q4_k_m --layers 4 --prompt 2048 --gen 0 --json
    step bench-v2lite-fp8-nographs 110 env CETUS_CUDA_GRAPHS=0 "$cli" bench --device cuda --random-model v2-lite --dtype fp8 --prompt 64 --gen 32 --json
    # Decode at a long context with the latent cache in fp32 and in bf16, side by side.
    step bench-v2lite-8k-f32 120 "$cli" bench --device cuda --random-model v2-lite --prompt 8192 --gen 64 --repeat 2 --json
    step bench-v2lite-8k-bf16 120 "$cli" bench --device cuda --random-model v2-lite --prompt 8192 --gen 64 --repeat 2 \
        --kv-cache bf16 --json
    # The bf16 cache's attention on the CUDA cores (mla_attention.cu) instead of the tensor cores.
    step bench-v2lite-8k-bf16-cores 120 env CETUS_CUDA_ATTENTION_MMA=0 \
        "$cli" bench --device cuda --random-model v2-lite --prompt 8192 --gen 64 --repeat 2 --kv-cache bf16 --json
    # DeepSeek-V3's own shapes and weight type: its first 4 layers (3 dense, 1 MoE of 256 experts,
    # 8 active; 128 heads; 7168 wide) in FP8, about 17 GB (16,176 MiB), drawn on the device.
    step bench-v3layers-fp8 120 "$cli" bench --device cuda --random-model v3-layers --dtype fp8 --prompt 512 --gen 64 \
        --json
    runs="bench-v2lite-cuda bench-v2lite-tune bench-prefill-2048 bench-prefill-2048-fp32"
    runs="$runs bench-prefill-2048-tile128 bench-prefill-2048-absorbed"
    runs="$runs bench-v2lite-fp8-cuda bench-v2lite-q4km-cuda bench-v2lite-q4km-exact bench-prefill-2048-q4km"
    runs="$runs bench-prefill-2048-q4km-fp32"
    runs="$runs bench-v2lite-fp8-nographs bench-v2lite-8k-f32 bench-v2lite-8k-bf16"
    runs="$runs bench-v2lite-8k-bf16-cores bench-v3layers-fp8"
    summarise_bench $runs
    figures_table $runs
}

# Per kernel of an Nsight Compute report's CSV ($1): launches, share of time, mean
# time and mean DRAM throughput as a share of peak, the slowest first; $2 names it.
ncu_summary() {
    python3 - "$1" "$2" <<'PY' || true
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) < 3:
    sys.exit()
head = rows[0]
k = head.index("Kernel Name") if "Kernel Name" in head else 4
t = next(i for i, h in enumerate(head) if h.startswith("gpu__time_duration"))
# DRAM throughput as a share of peak: collected by name (ncu_gguf) or with --set basic (gpu__dram_throughput).
d = next(i for i, h in enumerate(head) if h.startswith(("dram__throughput.avg", "gpu__dram_throughput.avg")))
# First-level cache and SM throughput (% of peak), where the report has them (ncu_gguf), and the
# busiest multiprocessor's active cycles over the mean (a last block's tail, too few blocks).
extra = [i for i, h in enumerate(head) if h.startswith(("l1tex__throughput.avg", "sm__throughput.avg"))]
cyc = [next((i for i, h in enumerate(head) if h == n), None) for n in ("sm__cycles_active.max", "sm__cycles_active.avg")]
if None not in cyc:
    extra.append(-1)
agg = {}  # name: [launches, time, DRAM %, extra %...]
for r in rows[2:]:
    try:
        name = r[k].replace("(anonymous namespace)::", "").replace("cetus::cuda::", "").replace("void ", "")
        name = (name[:name.index(">(") + 1] if ">(" in name else name.split("(")[0]).replace("DeviceDtype", "")[:48]
        num = lambda i: float(r[i].replace(",", ""))
        values = [num(i) if i >= 0 else num(cyc[0]) / max(num(cyc[1]), 1.0) for i in [t, d] + extra]
        a = agg.setdefault(name, [0] + [0.0] * len(values))
        a[0] += 1
        for j, v in enumerate(values):
            a[j + 1] += v
    except (ValueError, IndexError):
        pass
total = sum(a[1] for a in agg.values()) or 1
labels = "".join(", mean " + head[i].split("__")[0] + " % of peak" if i >= 0 else ", busiest SM / mean" for i in extra)
print(sys.argv[2] + ": kernel, launches, share of time, mean time, mean DRAM % of peak" + labels)
for name, (n, time, dram, *more) in sorted(agg.items(), key=lambda x: -x[1][1])[:12]:
    more = "".join(f" {v / n:5.1f}" for v in more)
    print(f"  {name:48} {n:3} {100 * time / total:5.1f}% {time / n:9.0f} {dram / n:5.1f}{more}")
PY
}

# An Nsight Compute profile of decode kernels (4 V2-Lite layers, launched directly):
# per kernel its time and DRAM throughput as a share of peak, the slowest first.
# Every profile runs with --clock-control none: the card's clocks stay as found
# (by default ncu locks them to base clocks, a change of the card's settings).
ncu_decode() {
    command -v ncu >/dev/null || { echo "== ncu-decode: skipped (ncu not on the PATH)"; return 0; }
    step ncu-decode "$1" ncu --clock-control none --set basic --launch-skip 200 --launch-count 60 -o "$out/decode" \
        env CETUS_CUDA_GRAPHS=0 "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 64 --gen 8
    [ -f "$out/decode.ncu-rep" ] || return 0
    timeout -k 5 20 ncu --import "$out/decode.ncu-rep" --page raw --csv --print-units base \
        --metrics gpu__time_duration.sum,gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.max,sm__cycles_active.avg \
        > "$out/ncu-summary.csv" 2>/dev/null
    ncu_summary "$out/ncu-summary.csv" "ncu decode"
}

# The decode attention kernels alone at 8192 cached tokens with a bf16 cache (4
# V2-Lite layers): the tensor-core kernel, then the CUDA-core one; how close each
# comes to the DRAM's peak says whether it is bound by memory.
ncu_attention() {
    command -v ncu >/dev/null || { echo "== ncu-attention: skipped (ncu not on the PATH)"; return 0; }
    local name sw
    for name in mma cores; do
        sw=CETUS_CUDA_ATTENTION_MMA=1
        [ "$name" = cores ] && sw=CETUS_CUDA_ATTENTION_MMA=0
        step "ncu-attention-$name" "$1" ncu --clock-control none --set basic --kernel-name regex:mla_attention --launch-count 12 \
            -o "$out/attention-$name" env CETUS_CUDA_GRAPHS=0 "$sw" "$cli" bench --device cuda --random-model v2-lite \
            --layers 4 --prompt 8192 --gen 4 --kv-cache bf16
        [ -f "$out/attention-$name.ncu-rep" ] || continue
        timeout -k 5 20 ncu --import "$out/attention-$name.ncu-rep" --page raw --csv --print-units base \
            --metrics gpu__time_duration.sum,gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.max,sm__cycles_active.avg \
            > "$out/ncu-attention-$name.csv" 2>/dev/null
        ncu_summary "$out/ncu-attention-$name.csv" "ncu attention ($name, 8192 tokens, bf16 cache)"
    done
}

# The GGUF decode products alone (4 V2-Lite layers in Q4_K_M's mix, launched directly):
# DRAM, first-level cache and SM throughput as shares of their peaks say whether the
# weights' bytes, the staged activations or the decoders' arithmetic bound them.
ncu_gguf() {  # ncu_gguf SECONDS [TAG VAR=VALUE [BENCH ARGS...]]: with VAR=VALUE set (and the bench's
    # further arguments), the step and its files named -TAG
    command -v ncu >/dev/null || { echo "== ncu-gguf: skipped (ncu not on the PATH)"; return 0; }
    local metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
    metrics=$metrics,l1tex__throughput.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed
    local limit=$1 tag=${2:+-$2} setting=${3:-CETUS_CUDA_GRAPHS=0}
    shift $(( $# < 3 ? $# : 3 ))
    step "ncu-gguf$tag" "$limit" ncu --clock-control none --metrics "$metrics" --kernel-name regex:"matvec_kernel|experts_kernel" \
        --launch-skip 60 --launch-count 60 -o "$out/gguf$tag" env CETUS_CUDA_GRAPHS=0 "$setting" "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 8 "$@"
    [ -f "$out/gguf$tag.ncu-rep" ] || return 0
    timeout -k 5 20 ncu --import "$out/gguf$tag.ncu-rep" --page raw --csv --print-units base --metrics "$metrics" \
        > "$out/ncu-gguf$tag.csv" 2>/dev/null
    ncu_summary "$out/ncu-gguf$tag.csv" "ncu GGUF decode products (Q4_K_M's mix)${2:+, $2}"
}

run_mode() {
case "$1" in
pack)
    # Stripped (the kernels' code and names stay) and packed with xz -9: its 64 MiB window
    # sees the checks' kernels again in the plug-in (they link the same objects), so
    # the four checks cost little (2026-12-06: 13.1 MB with xz, 42.6 MB with gzip), with
    # the tracked files well under the device call's 64 MiB.
    # (The build first, so that what travels is the working tree's code; BUILD_INFO says which.)
    cmake --build --preset gpu-check > /dev/null || { echo "pack: the gpu-check build failed" >&2; return 1; }
    rm -rf gpu-carry && mkdir -p gpu-carry/stage
    { echo "built $(date -u +%Y-%m-%dT%H:%MZ) from $(git describe --always --dirty 2>/dev/null)"
      git status --short --untracked-files=no 2>/dev/null | head -20; } > gpu-carry/stage/BUILD_INFO
    cp build-gpu/cetus-cli build-gpu/libcetus-cuda.so build-gpu/cetus-attention-check build-gpu/cetus-experts-check \
        build-gpu/cetus-prefill-check build-gpu/cetus-ggml-check gpu-carry/stage/ || return 1
    # The OpenMP runtime it was linked with too, in case the GPU image has none (LD_LIBRARY_PATH above).
    cp "$(ldd build-gpu/cetus-cli | awk '/libgomp/ {print $3}')" gpu-carry/stage/ 2>/dev/null || true
    strip --strip-unneeded gpu-carry/stage/{cetus-*,lib*} || return 1
    # The plug-in first, then the checks: what they share is within xz's window.
    local files
    files="libcetus-cuda.so cetus-experts-check cetus-attention-check cetus-prefill-check cetus-ggml-check cetus-cli"
    files="$files $(cd gpu-carry/stage && ls libgomp* 2>/dev/null) BUILD_INFO"
    pack_carry() { (cd gpu-carry/stage && tar -cf - $files) | xz -9 -T1 > "$carried"; }
    pack_carry || return 1
    # The device call takes 64 MiB of tracked files, untracked ones git does not ignore and
    # the carry (2026-12-07: 41.9 MB + 8.2 MB, the kernels built without line tables,
    # CETUS_CUDA_LINEINFO=OFF in the gpu-check preset; with them 25.4 MB, over). Over it, the
    # prefill and GGUF checks stay behind (the kernel_checks step then fails on them, the rest
    # runs; xz finds most of their kernels in the plug-in, so that saves little).
    local tree carry limit=$((64 * 1024 * 1024 - 512 * 1024))
    tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null |
        awk '{s += $1} END {print s + 0}')
    carry=$(stat -c %s "$carried")
    if [ $((tree + carry)) -gt "$limit" ]; then
        echo "pack: $tree bytes of files and a $carry-byte carry are over the device call's 64 MiB;" \
            "leaving cetus-prefill-check and cetus-ggml-check out" >&2
        files=$(echo "$files" | tr ' ' '\n' | grep -v -e cetus-prefill-check -e cetus-ggml-check | tr '\n' ' ')
        pack_carry || return 1
        carry=$(stat -c %s "$carried")
    fi
    rm -rf gpu-carry/stage
    echo "pack: $carry bytes to carry, $((tree + carry)) with the working tree (the call takes $((64 * 1024 * 1024)))"
    [ $((tree + carry)) -le "$limit" ] || { echo "pack: still over the limit" >&2; return 1; }
    du -sh gpu-carry
    ;;
all)  # the first call of a GPU session: what matters most first, within one device call
    gpu_facts_and_selftest
    bisect_on_failures
    bench_figures
    memcheck
    selftest_pdl
    kernel_checks
    selftest_kv_bf16
    bench_comparisons
    ncu_decode 150  # when time is left: what limits decode
    ncu_gguf 90     # and the GGUF decode products
    ;;
conformance)
    gpu_facts_and_selftest
    selftest_pdl
    kernel_checks
    selftest_kv_bf16
    bisect_on_failures
    memcheck
    ;;
bench)
    bench_figures
    bench_comparisons
    ncu_attention 90  # when time is left: the decode attention's share of the DRAM's peak
    ncu_gguf 90       # and what bounds the GGUF decode products
    ;;
decode)  # decode work's loop (~6 min): the tiny conformance, decode at V2-Lite's size in each weight type
    # and at 4 layers (the profile's shape), then the decode profile with its tails and the GGUF products'
    step selftest-tiny 90 "$cli" selftest --device cuda --compare tiny --json
    summarise_selftest "$out/selftest-tiny.out"
    # The routed experts' kernels alone against double precision (their loads staged with cp.async),
    # the fused tails against their separate launches, and the attention kernels with the merge
    # fused into the value absorption.
    step experts-check 40 "$(dirname "$cli")/cetus-experts-check" --v2-lite
    grep -E "FAIL|failed" "$out/experts-check.out" | head -8
    step attention-check 30 "$(dirname "$cli")/cetus-attention-check"
    grep -E "FAIL|failed" "$out/attention-check.out" | head -8
    # The GGUF model comparison with the decode products' rows staged (CETUS_CUDA_GGUF_STAGE=1;
    # the experts check above holds the staged launches to the unstaged ones bit for bit).
    step selftest-tiny-gguf-stage 40 env CETUS_CUDA_GGUF_STAGE=1 "$cli" selftest --device cuda --compare tiny-gguf \
        --compare-only --json
    summarise_selftest "$out/selftest-tiny-gguf-stage.out"
    # And with int8 activations on both backends (the GPU's decode products in the int8 form).
    step selftest-tiny-gguf-int8 40 "$cli" selftest --device cuda --compare tiny-gguf --compare-only --int8-activations \
        --json
    summarise_selftest "$out/selftest-tiny-gguf-int8.out"
    # The shared experts on a second stream beside the routing (CETUS_CUDA_OVERLAP=1, an
    # experiment): the fast mode's comparison with the two streams really side by side.
    # And the output projection's and router's rows asked of the L2 during the attention
    # (CETUS_CUDA_PREFETCH_AHEAD=1, the same second stream).
    step selftest-tiny-overlap 60 env CETUS_CUDA_OVERLAP=1 CETUS_CUDA_PREFETCH_AHEAD=1 "$cli" selftest --device cuda \
        --compare tiny --compare-only --modes fast --json
    summarise_selftest "$out/selftest-tiny-overlap.out"
    # The step tuner: every switch (the shared experts on a second stream, the L2 prefetch ahead,
    # programmatic dependent launch, GGUF rows staged) timed side by side in one process after
    # 256 cached tokens, each setting's logits checked against the built ones; the bench then runs
    # with the setting it chose.
    step bench-v2lite-tune 120 "$cli" bench --device cuda --random-model v2-lite --prompt 512 --gen 128 \
        --tune-steps --json
    step bench-v2lite-q4km-int8-tune 90 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m --prompt 512 \
        --gen 64 --int8-activations --tune-steps --json
    summarise_tuning bench-v2lite-tune bench-v2lite-q4km-int8-tune
    step bench-v2lite-cuda 120 "$cli" bench --device cuda --random-model v2-lite --prompt 512 --gen 128 --json
    step bench-v2lite-overlap 120 env CETUS_CUDA_OVERLAP=1 CETUS_CUDA_PREFETCH_AHEAD=1 "$cli" bench --device cuda \
        --random-model v2-lite --prompt 512 --gen 128 --json
    step bench-v2lite-fp8-cuda 90 "$cli" bench --device cuda --random-model v2-lite --dtype fp8 --prompt 512 --gen 64 --json
    step bench-v2lite-q4km-cuda 90 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m --prompt 512 --gen 64 \
        --json
    # The GGUF decode products in the int8 form (--int8-activations: activations quantised per
    # block, dp4a integer sums), then also with their rows staged with two tiles in flight.
    step bench-v2lite-q4km-int8 90 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m --prompt 512 --gen 64 \
        --int8-activations --json
    step bench-v2lite-4layers-q4km-int8 40 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --int8-activations --json
    step bench-v2lite-4layers-q4km-int8-stage2 40 env CETUS_CUDA_GGUF_STAGE=2 "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 64 --repeat 3 --int8-activations --json
    step bench-v2lite-4layers 40 "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 64 --gen 64 \
        --repeat 3 --json
    step bench-v2lite-4layers-overlap 40 env CETUS_CUDA_OVERLAP=1 "$cli" bench --device cuda --random-model v2-lite \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-ahead 40 env CETUS_CUDA_PREFETCH_AHEAD=1 "$cli" bench --device cuda \
        --random-model v2-lite --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-overlap-ahead 40 env CETUS_CUDA_OVERLAP=1 CETUS_CUDA_PREFETCH_AHEAD=1 "$cli" bench \
        --device cuda --random-model v2-lite --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-q4km-int8-overlap 40 env CETUS_CUDA_OVERLAP=1 "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 64 --repeat 3 --int8-activations --json
    # The same without the decode fusions (their launches and tails apart): what the fusions give;
    # and with programmatic dependent launch (the next launch scheduled during the fused tails).
    step bench-v2lite-4layers-nofuse 40 env CETUS_CUDA_FUSE=0 "$cli" bench --device cuda --random-model v2-lite \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-pdl 40 env CETUS_CUDA_PDL=1 "$cli" bench --device cuda --random-model v2-lite \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    # At 8192 cached tokens (128 splits a token): the fused merge repeats each head's merge of
    # its splits in each of the head's value-absorption blocks; without the fusions it runs once.
    step bench-v2lite-4layers-8k 60 "$cli" bench --device cuda --random-model v2-lite --layers 4 --prompt 8192 \
        --gen 64 --repeat 2 --kv-cache bf16 --json
    step bench-v2lite-4layers-8k-nofuse 60 env CETUS_CUDA_FUSE=0 "$cli" bench --device cuda --random-model v2-lite \
        --layers 4 --prompt 8192 --gen 64 --repeat 2 --kv-cache bf16 --json
    # The L2 prefetch of the weight rows a warp is about to read (CETUS_CUDA_PREFETCH=1, an
    # experiment): in BF16 only the fused merge's value rows take it; in GGUF blocks (loaded into
    # registers, the fewest bytes in flight) every decode product.
    step bench-v2lite-4layers-prefetch 40 env CETUS_CUDA_PREFETCH=1 "$cli" bench --device cuda --random-model v2-lite \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-q4km 40 "$cli" bench --device cuda --random-model v2-lite --dtype q4_k_m \
        --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-4layers-q4km-prefetch 40 env CETUS_CUDA_PREFETCH=1 "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    # The GGUF decode products' rows staged in shared memory (CETUS_CUDA_GGUF_STAGE=1, an
    # experiment: for one or two tokens each warp's rows copied with cp.async, then decoded
    # from the copy; the same sums): at 4 layers and for the whole model, against the two
    # runs above and bench-v2lite-q4km-cuda.
    step bench-v2lite-4layers-q4km-stage 40 env CETUS_CUDA_GGUF_STAGE=1 "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-q4km-stage 90 env CETUS_CUDA_GGUF_STAGE=1 "$cli" bench --device cuda --random-model v2-lite \
        --dtype q4_k_m --prompt 512 --gen 64 --json
    # The same with the next tile's copies in flight while a tile is decoded (CETUS_CUDA_GGUF_STAGE=2:
    # two buffers a slot; V2-Lite's rows of 2,048 and 1,408 values are two tiles, so whole rows at once).
    step bench-v2lite-4layers-q4km-stage2 40 env CETUS_CUDA_GGUF_STAGE=2 "$cli" bench --device cuda \
        --random-model v2-lite --dtype q4_k_m --layers 4 --prompt 64 --gen 64 --repeat 3 --json
    step bench-v2lite-q4km-stage2 90 env CETUS_CUDA_GGUF_STAGE=2 "$cli" bench --device cuda --random-model v2-lite \
        --dtype q4_k_m --prompt 512 --gen 64 --json
    local runs="bench-v2lite-tune bench-v2lite-q4km-int8-tune bench-v2lite-cuda bench-v2lite-overlap bench-v2lite-fp8-cuda bench-v2lite-q4km-cuda bench-v2lite-q4km-int8"
    runs="$runs bench-v2lite-4layers-q4km-int8 bench-v2lite-4layers-q4km-int8-stage2 bench-v2lite-4layers"
    runs="$runs bench-v2lite-4layers-overlap bench-v2lite-4layers-ahead bench-v2lite-4layers-overlap-ahead"
    runs="$runs bench-v2lite-4layers-q4km-int8-overlap"
    runs="$runs bench-v2lite-4layers-nofuse bench-v2lite-4layers-pdl bench-v2lite-4layers-8k"
    runs="$runs bench-v2lite-4layers-8k-nofuse bench-v2lite-4layers-prefetch bench-v2lite-4layers-q4km"
    runs="$runs bench-v2lite-4layers-q4km-prefetch bench-v2lite-4layers-q4km-stage bench-v2lite-q4km-stage"
    runs="$runs bench-v2lite-4layers-q4km-stage2 bench-v2lite-q4km-stage2"
    summarise_bench $runs
    figures_table $runs
    ncu_decode 120
    ncu_gguf 90
    ncu_gguf 60 int8 CETUS_CUDA_GRAPHS=0 --int8-activations  # (the int8 form: what holds the products then)
    ncu_gguf 60 staged CETUS_CUDA_GGUF_STAGE=1  # (their rows staged: what holds the products then)
    ncu_gguf 60 staged2 CETUS_CUDA_GGUF_STAGE=2  # (and with two tiles in flight)
    ;;
full)
    step selftest-cuda-full 400 "$cli" selftest --device cuda --compare full --json
    summarise_selftest "$out/selftest-cuda-full.out"
    if command -v compute-sanitizer >/dev/null; then  # shared-memory races (block reductions, tiles)
        step racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 \
            "$cli" selftest --device cuda --compare tiny --compare-only
        grep -E "ERROR SUMMARY|hazard" "$out/racecheck.out" | head -5
    fi
    ncu_decode 240
    ;;
*)
    echo "usage: installer/gpu-check.sh pack|all|conformance|bench|decode|full" >&2
    return 2
    ;;
esac
}

if [ -n "${OUT:-}" ] && [ "$mode" != pack ]; then
    run_mode "$mode" 2>&1 | tee "$out/summary.txt" "$OUT/summary.txt"
else
    run_mode "$mode" 2>&1 | tee "$out/summary.txt"
fi
rc=$?
# Exit 1 when a step failed (a selftest with failures, a bench that did not run).
if [ "$mode" != pack ] && [ "$rc" -eq 0 ] && [ -s "$out/failed-steps.txt" ]; then  # (pack keeps gpu-out/ as it was)
    echo "failed steps: $(tr '\n' ' ' < "$out/failed-steps.txt")" | tee -a "$out/summary.txt"
    rc=1
fi
if [ -n "${OUT:-}" ] && [ "$mode" != pack ]; then
    timeout -k 5 20 tar -czf "$OUT/gpu-check.tar.gz" -C "$out" .
    cp "$out/summary.txt" "$OUT/"
    [ -f "$out/figures.md" ] && cp "$out/figures.md" "$OUT/"
fi
exit $rc
