#!/usr/bin/env bash
# The GPU check (docs: gpu-checks.md), run on the GPU machine from the repository
# root with the Qt-free build-gpu/ folder carried over:
#   cmake --preset gpu-check && cmake --build --preset gpu-check    # on a development machine
#   installer/gpu-check.sh                                            # on the GPU machine
# Results go to $OUT (the device tool's output folder) or gpu-out/.
set -uo pipefail
out="${OUT:-gpu-out}"
mkdir -p "$out"
cli=build-gpu/cetus-cli
demo=$(ls -d resources/models/*/ 2>/dev/null | head -1)
{ nvidia-smi; nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv; } > "$out/gpu.txt" 2>&1
"$cli" --version > "$out/version.txt" 2>&1
"$cli" selftest --device cuda --json > "$out/selftest-cuda.json" 2> "$out/selftest-cuda.log"
echo "selftest cuda: exit $?"; tail -1 "$out/selftest-cuda.log"
"$cli" selftest --device cpu > "$out/selftest-cpu.log" 2>&1
echo "selftest cpu: exit $?"; tail -1 "$out/selftest-cpu.log"
for dev in cuda cpu; do
    "$cli" bench --device "$dev" --random-model v2-lite --prompt 512 --gen 64 --json > "$out/bench-v2lite-$dev.json" 2> "$out/bench-v2lite-$dev.log"
    echo "bench v2-lite $dev: exit $?"
done
if [ -n "$demo" ]; then
    "$cli" bench --device auto --model "$demo" --prompt 64 --gen 128 --mtp both --json > "$out/bench-mtp.json" 2> "$out/bench-mtp.log"
    echo "bench mtp ($demo): exit $?"
fi
exit 0
