#!/usr/bin/env python3
"""Rebuild the Cetus demo model from nothing: corpus -> tokenizer -> training -> model folder
-> evaluation. One command; see README.md.

    python3 resources/models/cetus-demo/recipe/rebuild.py --budget-minutes 35
    python3 resources/models/cetus-demo/recipe/rebuild.py --budget-minutes 4 --device cuda \
        --preset gpu --vocab 8192 --scale 10 --seq 512 --batch 128 --skip-eval

Work files (downloaded .debs, unpacked packages, corpus, training runs) go to --work
(default ~/.cache/cetus-recipe), never into the repository. The model folder (--model-dir,
default: this recipe's parent) receives config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json and, after evaluation, loss_curves.png and
recipe/eval_results.json. DATA_SOURCES.md and MODEL_CARD.md are written by hand from those.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(*a):
    print("+", " ".join(map(str, a)), flush=True)
    subprocess.run([sys.executable, *map(str, a)], check=True, cwd=HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-minutes", type=float, default=35)
    ap.add_argument("--device", default=None)
    ap.add_argument("--preset", default="cpu", help="cpu | cpu-large | gpu | auto")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/cetus-recipe"))
    ap.add_argument("--model-dir", default=str(HERE.parent))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=float, default=0.7, help="corpus size (0.7 ~ 2.1 M tokens)")
    ap.add_argument("--lemmas", type=int, default=800)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    corpus = work / "corpus"
    run("build_corpus.py", "--work", work, "--seed", args.seed, "--scale", args.scale,
        "--lemmas", args.lemmas)
    tokdir = work / "tokenizer"
    run("train_tokenizer.py", "--corpus", corpus / "train.jsonl", "--out", tokdir, "--vocab", args.vocab)
    runs = work / ("run-" + time.strftime("%Y%m%d-%H%M%S"))
    t = ["train.py", "--corpus", corpus / "train.jsonl", "--heldout", corpus / "heldout.jsonl",
         "--tokenizer", tokdir / "tokenizer.json", "--out", runs, "--budget-minutes",
         args.budget_minutes, "--preset", args.preset, "--seq", args.seq, "--batch", args.batch,
         "--threads", args.threads]
    if args.device:
        t += ["--device", args.device]
    run(*t)
    md = Path(args.model_dir)
    md.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copyfile(runs / "final" / f, md / f)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokdir / f, md / f)
    if md == HERE.parent:
        shutil.copyfile(runs / "train_log.jsonl", md / "recipe" / "train_log.jsonl")
    if not args.skip_eval:
        run("evaluate.py", "--model", md, "--heldout", corpus / "heldout.jsonl",
            "--train-log", runs / "train_log.jsonl", "--threads", args.threads)


if __name__ == "__main__":
    main()
