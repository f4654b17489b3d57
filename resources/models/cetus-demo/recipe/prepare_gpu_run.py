#!/usr/bin/env python3
"""Prepare the GPU training run of the demo model (the `gpu` preset: ~15 M params, 8k vocab, 38 MB stored)
on a development machine, so the scarce GPU time goes to training only.

Builds the larger corpus (--scale 10, 1,500 lemmas) and the 8,192-entry tokenizer into the
work folder, then packs what the GPU machine needs into <repo>/recipe-carry/ (git-ignored,
~32 MB: train.jsonl.gz, heldout.jsonl, tokenizer.json, tokenizer_config.json, manifest.json),
which the device tool carries over. Then, on the GPU machine, from the repository root:

    resources/models/cetus-demo/recipe/gpu_train.sh        # STAGE1_MIN=4 STAGE2_MIN=2 by default

and back here, with the returned folder F (config.json, model.safetensors, ...):

    python3 resources/models/cetus-demo/recipe/install_run.py F   # copy in, evaluate, golden
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]


def run(*a):
    print("+", " ".join(map(str, a)), flush=True)
    subprocess.run([sys.executable, *map(str, a)], check=True, cwd=HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/cetus-recipe-gpu"))
    ap.add_argument("--out", default=str(REPO / "recipe-carry"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=float, default=10)
    ap.add_argument("--lemmas", type=int, default=1500)
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    run("build_corpus.py", "--work", work, "--seed", args.seed, "--scale", args.scale, "--lemmas", args.lemmas)
    run("train_tokenizer.py", "--corpus", work / "corpus" / "train.jsonl", "--out", work / "tokenizer",
        "--vocab", args.vocab)
    out.mkdir(parents=True, exist_ok=True)
    with open(work / "corpus" / "train.jsonl", "rb") as src, gzip.open(out / "train.jsonl.gz", "wb", 6) as dst:
        shutil.copyfileobj(src, dst)
    shutil.copyfile(work / "corpus" / "heldout.jsonl", out / "heldout.jsonl")
    shutil.copyfile(work / "corpus" / "manifest.json", out / "manifest.json")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(work / "tokenizer" / f, out / f)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"packed {out} ({size:.1f} MiB); carry it with the device tool: carry=[\"recipe-carry\"]")


if __name__ == "__main__":
    main()
