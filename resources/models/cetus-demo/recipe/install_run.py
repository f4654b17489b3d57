#!/usr/bin/env python3
"""Install a trained model folder (e.g. the one gpu_train.sh returns) as the bundled demo
model, then measure it: copies the weights, config and tokenizer into the model folder, the
training logs and corpus manifest into recipe/, runs evaluate.py (quality bars, expert load,
MTP, engine vs transformers, loss curves) and regenerates the golden fixture. MODEL_CARD.md
is then updated by hand from recipe/eval_results.json.

    python3 resources/models/cetus-demo/recipe/install_run.py RUN_DIR [--heldout F]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent
REPO = HERE.parents[3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--heldout", default=str(REPO / "recipe-carry" / "heldout.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    src = Path(args.run_dir)
    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json"):
        shutil.copyfile(src / f, MODEL / f)
    logs = []
    for f in ("train_log.jsonl", "train_log_sft.jsonl"):
        if (src / f).exists():
            shutil.copyfile(src / f, HERE / f)
            logs.append(str(HERE / f))
    if (src / "manifest.json").exists():
        shutil.copyfile(src / "manifest.json", HERE / "corpus_manifest.json")
    subprocess.run([sys.executable, str(HERE / "evaluate.py"), "--model", str(MODEL), "--heldout", args.heldout,
                    "--threads", str(args.threads), "--train-log", *logs], check=True)
    subprocess.run([sys.executable, str(REPO / "tests" / "golden" / "make_demo_golden.py")], check=True)
    print("installed; now update MODEL_CARD.md (and DATA_SOURCES.md if the corpus changed) "
          "from recipe/eval_results.json")


if __name__ == "__main__":
    main()
