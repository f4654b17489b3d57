#!/usr/bin/env bash
# The demo model's GPU run (the `gpu` preset), on the GPU machine from the repository root
# with recipe-carry/ (made by prepare_gpu_run.py) carried over. Both stages as rebuild.py
# runs them: the whole corpus, then the chat stage; each with its own time budget.
#   STAGE1_MIN=4 STAGE2_MIN=2 resources/models/cetus-demo/recipe/gpu_train.sh
# Writes $OUT/cetus-demo-gpu/ (model folder + both training logs) or gpu-train-out/.
set -euo pipefail
recipe="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="${CARRY:-recipe-carry}"
out="${OUT:-gpu-train-out}/cetus-demo-gpu"
device="${DEVICE:-cuda}"
work="$(mktemp -d)"
mkdir -p "$out"
gunzip -c "$carry/train.jsonl.gz" > "$work/train.jsonl"
common=(--corpus "$work/train.jsonl" --heldout "$carry/heldout.jsonl" --tokenizer "$carry/tokenizer.json"
        --device "$device" --seq "${SEQ:-512}" --batch "${BATCH:-128}" --threads "${THREADS:-8}")
python3 "$recipe/train.py" "${common[@]}" --out "$work/stage1" --preset gpu --budget-minutes "${STAGE1_MIN:-4}" \
    2>&1 | grep -E '"event": "(measure|corpus|start|done|heldout)"|Error|error' || true
[ -f "$work/stage1/final/model.safetensors" ] || { echo "stage 1 produced no model" >&2; exit 1; }
python3 "$recipe/train.py" "${common[@]}" --out "$work/stage2" --init-from "$work/stage1/final" --chats-only \
    --balance-sources --lr 5e-4 --warmup 20 --budget-minutes "${STAGE2_MIN:-2}" \
    2>&1 | grep -E '"event": "(start|done|heldout)"|Error|error' || true
[ -f "$work/stage2/final/model.safetensors" ] || { echo "stage 2 produced no model" >&2; exit 1; }
cp "$work/stage2/final/"{config.json,model.safetensors,generation_config.json} "$out/"
cp "$carry/"{tokenizer.json,tokenizer_config.json,manifest.json} "$out/"
cp "$work/stage1/train_log.jsonl" "$out/train_log.jsonl"
cp "$work/stage2/train_log.jsonl" "$out/train_log_sft.jsonl"
ls -la "$out"
rm -rf "$work"
