#!/usr/bin/env python3
"""Byte-level BPE tokenizer for the Cetus demo model (HF `tokenizers`).

Uses DeepSeek-V3's own normalizer / pre_tokenizer / post_processor / decoder blocks (copied
from tests/data/tokenizer/deepseek-v3/tokenizer.json) and its special-token strings and flags,
so the engine's one tokenizer path serves this model and real DeepSeek files. Writes
tokenizer.json and tokenizer_config.json (DeepSeek-V3 chat template) into --out.

    python3 train_tokenizer.py --corpus ~/.cache/cetus-recipe/corpus/train.jsonl --out DIR --vocab 4096
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer, trainers, pre_tokenizers

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
DS_DIR = REPO / "tests" / "data" / "tokenizer" / "deepseek-v3"

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
SPECIALS = [BOS, EOS, PAD, USER, ASSISTANT]  # ids 0..4


def render(row):
    """DeepSeek-V3 chat template text of one corpus row (tokenizer training only)."""
    if "text" in row:
        return row["text"]
    sys_ = "".join(m["content"] for m in row["messages"] if m["role"] == "system")
    out = [sys_]
    for m in row["messages"]:
        if m["role"] == "user":
            out.append(USER + m["content"])
        elif m["role"] == "assistant":
            out.append(ASSISTANT + m["content"] + EOS)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--max-rows", type=int, default=200000)
    args = ap.parse_args()
    ds = json.loads((DS_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    skeleton = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                "normalizer": ds["normalizer"], "pre_tokenizer": ds["pre_tokenizer"],
                "post_processor": ds["post_processor"], "decoder": ds["decoder"],
                "model": {"type": "BPE", "dropout": None, "unk_token": None,
                          "continuing_subword_prefix": None, "end_of_word_suffix": None,
                          "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                          "vocab": {}, "merges": []}}
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, min_frequency=2, show_progress=False,
                                  special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def texts():
        with open(args.corpus, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= args.max_rows:
                    break
                yield render(json.loads(line))

    tok.train_from_iterator(texts(), trainer=trainer)
    j = json.loads(tok.to_str())
    # Same blocks and added-token flags as DeepSeek-V3's file (the trainer rewrites some).
    for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        j[k] = ds[k]
    ds_added = {a["content"]: a for a in ds["added_tokens"]}
    j["added_tokens"] = [dict(ds_added[s], id=i) for i, s in enumerate(SPECIALS)]
    for i, s in enumerate(SPECIALS):
        assert j["model"]["vocab"][s] == i, s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False, indent=1), encoding="utf-8")

    cfg = json.loads((DS_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["added_tokens_decoder"] = {str(i): {k: v for k, v in dict(ds_added[s]).items()
                                            if k not in ("id", "content")} | {"content": s}
                                   for i, s in enumerate(SPECIALS)}
    cfg["model_max_length"] = 2048  # = max_position_embeddings of the presets
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1),
                                               encoding="utf-8")
    t2 = Tokenizer.from_file(str(out / "tokenizer.json"))
    sample = "<｜User｜>What is 7 + 5?<｜Assistant｜>7 + 5 = 12.<｜end▁of▁sentence｜>"
    ids = t2.encode(sample, add_special_tokens=False).ids
    assert t2.decode(ids, skip_special_tokens=False) == sample
    print(f"vocab {t2.get_vocab_size()}; sample -> {ids}")


if __name__ == "__main__":
    main()
