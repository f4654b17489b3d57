#!/usr/bin/env python3
"""Rebuild the Cetus demo model from nothing: corpus -> tokenizer -> training -> model folder
-> evaluation. One command; see README.md.

    python3 resources/models/cetus-demo/recipe/rebuild.py --budget-minutes 40 --sft-minutes 30
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
    ap.add_argument("--budget-minutes", type=float, default=35, help="stage 1: the whole corpus")
    ap.add_argument("--sft-minutes", type=float, default=30,
                    help="stage 2: chats only, every source equally often (0: skip)")
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
    final = runs / "final"
    if args.sft_minutes > 0:
        # Stage 2: chat fine-tuning from stage 1's weights, task-balanced, with the
        # bias balancing running again (and frozen at the end) on chat traffic.
        sft = work / (runs.name + "-sft")
        s = ["train.py", "--corpus", corpus / "train.jsonl", "--heldout", corpus / "heldout.jsonl",
             "--tokenizer", tokdir / "tokenizer.json", "--out", sft, "--budget-minutes", args.sft_minutes,
             "--init-from", final, "--chats-only", "--balance-sources", "--lr", "5e-4", "--warmup", "20",
             "--seq", args.seq, "--batch", args.batch, "--threads", args.threads]
        if args.device:
            s += ["--device", args.device]
        run(*s)
        final = sft / "final"
    md = Path(args.model_dir)
    md.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copyfile(final / f, md / f)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokdir / f, md / f)
    logs = [runs / "train_log.jsonl"] + ([final.parent / "train_log.jsonl"] if final.parent != runs else [])
    if md == HERE.parent:
        shutil.copyfile(logs[0], md / "recipe" / "train_log.jsonl")
        if len(logs) > 1:
            shutil.copyfile(logs[1], md / "recipe" / "train_log_sft.jsonl")
    if not args.skip_eval:
        run("evaluate.py", "--model", md, "--heldout", corpus / "heldout.jsonl",
            "--train-log", *logs, "--threads", args.threads)


if __name__ == "__main__":
    main()
