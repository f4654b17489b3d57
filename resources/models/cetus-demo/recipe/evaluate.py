#!/usr/bin/env python3
"""Evaluate a Cetus demo model folder with the engine (cetus-cli) and transformers.

1. Greedy answers to the fixed prompt list (issue 7 item 4 / corpus doc §9) via
   `cetus-cli generate --temperature 0 --max-tokens 64 --json`, incl. a 3-turn conversation
   (rendered with the DeepSeek-V3 template and passed as --ids).
2. Quality bars: EOS within 64 tokens, honest refusals (weather, made-up word).
3. Per-layer expert load max/mean: teacher-forced over the held-out chats in PyTorch
   (model.py, the trained correction bias), and over the engine's own greedy routing.
4. MTP: `cetus-cli bench --mtp both --json`, and acceptance over greedy answers to the
   held-out chats' first user turns (`generate --mtp on --json`).
5. Parity: `cetus-cli logits` vs transformers' DeepseekV3ForCausalLM (float32, eager) on two
   chat prompts; max |difference| relative to max |logit|, and argmax agreement.
6. Loss curves (train_log.jsonl -> loss_curves.png) when --train-log is given.

    python3 evaluate.py --model DIR [--cli build/cetus-cli] [--heldout F] [--train-log F [F_SFT]]
Writes DIR/recipe/eval_results.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(HERE))

BOS, EOS, USER, ASSISTANT = 0, 1, 3, 4

PROMPTS = [
    ("greeting", "Hello"),
    ("identity", "Who are you?"),
    ("greeting_identity", "Hello! Who are you?"),
    ("abilities", "What can you do?"),
    ("definition", "What does happy mean?"),
    ("synonym", "What is another word for big?"),
    ("opposite", "What is the opposite of hot?"),
    ("example", "Use the word river in a sentence."),
    ("kind_of", "What is a zebra?"),
    ("capital", "What is the capital of France?"),
    ("chemical_symbol", "What is the chemical symbol for gold?"),
    ("arithmetic", "What is 7 + 5?"),
    ("spelling", "Spell the word cat."),
    ("decline_weather", "What's the weather today?"),
    ("decline_news", "What's the latest news?"),
    ("made_up_word", "What does florbic mean?"),
]
CONVERSATION = ["Hello", "What is the capital of France?", "Thanks, bye"]


def run_cli(cli, args):
    r = subprocess.run([cli] + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr[-2000:]}")
    return r.stdout


def generate(cli, model, threads, prompt=None, ids=None, mtp="off", max_tokens=64):
    a = ["generate", "--model", model, "--temperature", "0", "--max-tokens", str(max_tokens),
         "--mtp", mtp, "--json", "--threads", str(threads)]
    a += ["--prompt", prompt] if prompt is not None else ["--ids", ",".join(map(str, ids))]
    lines = [json.loads(l) for l in run_cli(cli, a).splitlines() if l.startswith("{")]
    toks, summary = lines[:-1], lines[-1]
    text = "".join(t.get("text", "") for t in toks)
    return text, toks, summary


def chat_ids(tok, turns):
    """DeepSeek-V3 template: BOS + (<User> u <Assistant> a EOS)* + <User> u <Assistant>."""
    ids = [BOS]
    for i, t in enumerate(turns):
        if i % 2 == 0:
            ids += [USER] + tok.encode(t, add_special_tokens=False).ids + [ASSISTANT]
        else:
            ids += tok.encode(t, add_special_tokens=False).ids + [EOS]
    return ids


def engine_loads(all_toks, n_experts):
    counts = None
    for t in all_toks:
        for li, r in enumerate(t.get("routing", [])):
            if counts is None:
                counts = np.zeros((len(t["routing"]), n_experts))
            for e in r["experts"]:
                counts[li, e] += 1
    if counts is None:
        return {}
    return {f"moe{li}": round(float(c.max() / c.mean()), 3) for li, c in enumerate(counts)}


def torch_loads(model_dir, heldout, tok):
    from safetensors.torch import load_file
    from model import DeepseekV3
    from train import encode_rows
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    m = DeepseekV3(cfg, max_pos=1024).eval()
    sd = {k: v.float() for k, v in load_file(str(Path(model_dir) / "model.safetensors")).items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    names = [f"model.layers.{i}" for i, l in enumerate(m.model.layers) if l.moe]
    loads = torch.zeros(len(names), cfg["n_routed_experts"])
    docs = encode_rows(heldout, tok, max_len=256)
    with torch.no_grad():
        for ids, _, _ in docs:
            x = torch.tensor([ids])
            pos = torch.arange(len(ids))[None]
            m(x, pos, torch.zeros_like(x))
            for i, mo in enumerate(m.moe_layers()):
                loads[i] += mo.last[0]
    return {n: round(float(l.max() / l.mean()), 3) for n, l in zip(names, loads)}


def parity(cli, model_dir, tok, prompts):
    from transformers import DeepseekV3ForCausalLM
    hf = DeepseekV3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    V = hf.config.vocab_size
    out = []
    for p in prompts:
        ids = chat_ids(tok, p)
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0].numpy()
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "l.bin")
            run_cli(cli, ["logits", "--model", model_dir, "--ids", ",".join(map(str, ids)), "--out", f])
            eng = np.fromfile(f, dtype=np.float32).reshape(len(ids), V)
        diff = np.abs(eng - ref)
        out.append({"prompt": p, "n_tokens": len(ids), "max_abs_diff": float(diff.max()),
                    "max_abs_logit": float(np.abs(ref).max()),
                    "max_rel_diff": float(diff.max() / np.abs(ref).max()),
                    "argmax_agree": float((eng.argmax(-1) == ref.argmax(-1)).mean())})
    return out


def plot(train_logs, png):
    """Loss and expert load over training tokens; a second log (the chat stage) continues
    the first one's token axis, with a line where it starts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    st, starts, offset, stage_at = [], [], 0.0, []
    for k, path in enumerate(train_logs):
        rows = [json.loads(l) for l in open(path)]
        steps = [r for r in rows if r.get("event") == "step"]
        if len([r for r in rows if r.get("event") == "start"]) > 1:  # resumed/appended logs
            steps = steps[[i for i, r in enumerate(steps) if r["step"] == 10][-1]:]
        if k:
            stage_at.append(offset)
        st += [dict(r, tokens=r["tokens"] + offset) for r in steps]
        offset = st[-1]["tokens"]
        starts.append([r for r in rows if r.get("event") == "start"][-1])
    tk = [r["tokens"] / 1e6 for r in st]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(tk, [r["loss"] for r in st], label="main loss (assistant tokens + plain text)")
    ax[0].plot(tk, [r["mtp_loss"] for r in st], label="MTP loss (depth 1)")
    ax[0].set_xlabel("training tokens (M)"); ax[0].set_ylabel("cross-entropy (nats)")
    ax[0].set_ylim(0, max(6, min(r["loss"] for r in st) + 3)); ax[0].grid(alpha=.3)
    mtp_name = f"layer{starts[0]['config']['num_hidden_layers']}"
    for n in st[0]["load_max_over_mean"]:
        ax[1].plot(tk, [r["load_max_over_mean"][n] for r in st],
                   label=n + (" (MTP)" if n == mtp_name else ""))
    ax[1].axhline(1.5, color="k", ls="--", lw=.8, label="bar 1.5")
    for i, x in enumerate(stage_at):
        for a in ax:
            a.axvline(x / 1e6, color="grey", ls=":", lw=1)
        ax[0].text(x / 1e6, 5.6 - 0.4 * i, " chat stage" + (f" {i + 1}" if i else ""), color="grey")
    ax[0].legend()
    ax[1].set_xlabel("training tokens (M)"); ax[1].set_ylabel("expert load max/mean (per 10 steps)")
    ax[1].set_ylim(1, 4); ax[1].legend(); ax[1].grid(alpha=.3)
    fig.tight_layout(); fig.savefig(png, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE.parent))
    ap.add_argument("--cli", default=str(REPO / "build" / "cetus-cli"))
    ap.add_argument("--heldout", default=os.path.expanduser("~/.cache/cetus-recipe/corpus/heldout.jsonl"))
    ap.add_argument("--train-log", nargs="+", help="stage 1 log, then the chat stage's log if any")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-heldout", type=int, default=150)
    ap.add_argument("--out")
    args = ap.parse_args()
    md = args.model
    tok = Tokenizer.from_file(str(Path(md) / "tokenizer.json"))
    cfg = json.loads((Path(md) / "config.json").read_text())
    res = {"answers": [], "bars": {}}
    all_toks = []
    for name, p in PROMPTS:
        text, toks, s = generate(args.cli, md, args.threads, prompt=p)
        all_toks += toks
        res["answers"].append({"id": name, "prompt": p, "answer": text, "n_tokens": s["n_tokens"],
                               "finish": s["finish_reason"]})
    turns = []
    for u in CONVERSATION:
        turns.append(u)
        text, toks, s = generate(args.cli, md, args.threads, ids=chat_ids(tok, turns))
        all_toks += toks
        turns.append(text)
        res["answers"].append({"id": "conversation", "prompt": u, "answer": text,
                               "n_tokens": s["n_tokens"], "finish": s["finish_reason"]})
    a = {r["id"]: r for r in res["answers"]}
    res["bars"]["eos_within_64"] = sum(r["finish"] == "eos" and r["n_tokens"] <= 64
                                       for r in res["answers"]) / len(res["answers"])
    res["bars"]["weather_refused"] = "can't" in a["decline_weather"]["answer"].lower()
    res["bars"]["made_up_word_unknown"] = "don't know" in a["made_up_word"]["answer"].lower()
    res["bars"]["greeting_identity_answered"] = "cetus demo" in a["greeting_identity"]["answer"].lower()
    # MTP acceptance over held-out chats (greedy, the model's own continuations).
    held = [json.loads(l) for l in open(args.heldout)][: args.n_heldout]
    acc = prop = 0
    secs = {"on": 0.0, "off": 0.0}
    ntok = {"on": 0, "off": 0}
    same = 0
    for r in held:
        u = [m["content"] for m in r["messages"] if m["role"] == "user"][0]
        texts = {}
        for mode in ("off", "on"):
            texts[mode], toks, s = generate(args.cli, md, args.threads, prompt=u, mtp=mode)
            if s["decode_tokens_per_s"] > 0:
                secs[mode] += s["n_tokens"] / s["decode_tokens_per_s"]
                ntok[mode] += s["n_tokens"]
        same += texts["on"] == texts["off"]
        acc += s["drafts_accepted"]; prop += s["drafts_proposed"]
        all_toks += toks
    tps = {m: ntok[m] / max(secs[m], 1e-9) for m in secs}
    res["mtp_heldout"] = {"chats": len(held), "drafts_proposed": prop, "drafts_accepted": acc,
                          "acceptance": round(acc / max(prop, 1), 4),
                          "decode_tokens_per_s_off": round(tps["off"], 1),
                          "decode_tokens_per_s_on": round(tps["on"], 1),
                          "speedup": round(tps["on"] / max(tps["off"], 1e-9), 3),
                          "greedy_outputs_identical": f"{same}/{len(held)}"}
    bench = json.loads(run_cli(args.cli, ["bench", "--model", md, "--prompt", "64", "--gen", "64",
                                          "--mtp", "both", "--json", "--threads", str(args.threads),
                                          "--repeat", "3"]))
    res["bench"] = {"acceptance_rate": bench["mtp_on"]["acceptance_rate"],
                    "decode_tokens_per_s_off": round(bench["mtp_off"]["decode_tokens_per_s"], 1),
                    "decode_tokens_per_s_on": round(bench["mtp_on"]["decode_tokens_per_s"], 1),
                    "speedup": round(bench["speedup"], 3), "threads": bench["threads"]}
    res["expert_load_engine_generated"] = engine_loads(all_toks, cfg["n_routed_experts"])
    res["expert_load_heldout_teacher_forced"] = torch_loads(md, args.heldout, tok)
    res["bars"]["expert_load_le_1.5"] = all(v <= 1.5 for v in res["expert_load_heldout_teacher_forced"].values())
    res["bars"]["mtp_acceptance_ge_0.7"] = res["mtp_heldout"]["acceptance"] >= 0.7
    res["parity"] = parity(args.cli, md, tok, [["What is the capital of France?"],
                                               ["Hello", "Hello! How can I help you today?",
                                                "What does happy mean?"]])
    if args.train_log:
        plot(args.train_log, str(Path(md) / "loss_curves.png"))
    out = args.out or str(Path(md) / "recipe" / "eval_results.json")
    Path(out).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
