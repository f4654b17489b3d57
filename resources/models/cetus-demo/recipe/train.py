#!/usr/bin/env python3
"""Train the Cetus demo model (DeepSeek-V3 architecture) on the recipe corpus, CPU or GPU.

Training as DeepSeek-V3 trains (shared/docs/deepseek-architecture.md §6.4, §7.2):
aux-loss-free balancing (correction bias += gamma * sign(mean load - load) after every step,
gamma = 0.001, frozen for the last --freeze-frac of the budget), the sequence-wise balance loss
(alpha = 1e-4), the MTP loss with weight lambda = 0.3, loss on assistant tokens (+ EOS) only
for chats and on all tokens for plain text. The LR schedule is driven by a wall-clock budget
(warm-up, cosine to 10% ending at the deadline). Logs JSON lines; checkpoints as it goes.

    python3 train.py --corpus DIR/train.jsonl --tokenizer DIR/tokenizer.json --out RUN \
        --budget-minutes 35 [--preset cpu|cpu-large|gpu|auto] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

from model import PRESETS, DeepseekV3, checkpoint_state

BOS, EOS, USER, ASSISTANT = 0, 1, 3, 4
GAMMA = 0.001        # bias update speed (V3 paper)
SEQ_ALPHA = 1e-4     # sequence-wise balance loss weight (V3 paper)
MTP_LAMBDA = 0.3     # MTP loss weight (V3 paper, first 10 T tokens)


def encode_rows(path, tok, max_rows=None, max_len=None):
    """Each row -> (ids, mask, src). mask[j] = 1 if token j is a training target."""
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    if max_rows:
        rows = rows[:max_rows]
    segs = []  # (row index, text, kind)
    for i, r in enumerate(rows):
        if "text" in r:
            segs.append((i, r["text"], "plain"))
            continue
        sys_ = "".join(m["content"] for m in r["messages"] if m["role"] == "system")
        if sys_:
            segs.append((i, sys_, "system"))
        for m in r["messages"]:
            if m["role"] in ("user", "assistant"):
                segs.append((i, m["content"], m["role"]))
    enc = tok.encode_batch([s[1] for s in segs], add_special_tokens=False)
    docs = [[[BOS], [0]] for _ in rows]
    for (i, _, kind), e in zip(segs, enc):
        ids, mk = docs[i]
        if kind == "plain":
            ids += e.ids + [EOS]
            mk += [1] * (len(e.ids) + 1)
        elif kind == "system":
            ids += e.ids
            mk += [0] * len(e.ids)
        elif kind == "user":
            ids += [USER] + e.ids
            mk += [0] * (len(e.ids) + 1)
        else:
            ids += [ASSISTANT] + e.ids + [EOS]
            mk += [0] + [1] * (len(e.ids) + 1)
    out = []
    for r, (ids, mk) in zip(rows, docs):
        if max_len:
            ids, mk = ids[:max_len], mk[:max_len]
        out.append((ids, mk, r["src"]))
    return out


def balanced(docs, rng):
    """Equal rows per source: the mean source size, drawn without replacement where a source
    has enough rows, with replacement otherwise."""
    by = {}
    for d in docs:
        by.setdefault(d[2], []).append(d)
    n = len(docs) // len(by)
    out = []
    for src in sorted(by):
        rows = by[src]
        out += rng.sample(rows, n) if len(rows) >= n else [rng.choice(rows) for _ in range(n)]
    return out


def pack(docs, seq, rng):
    """Greedy packing of shuffled documents into rows of `seq` tokens (pad id 2, no loss)."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    rows, cur = [], ([], [], [], [])
    for i in order:
        ids, mk, _ = docs[i]
        if len(cur[0]) + len(ids) > seq:
            rows.append(cur)
            cur = ([], [], [], [])
        d = cur[3][-1] + 1 if cur[3] else 0
        cur[0].extend(ids); cur[1].extend(mk)
        cur[2].extend(range(len(ids))); cur[3].extend([d] * len(ids))
    rows.append(cur)
    T = seq
    ids = torch.full((len(rows), T), 2, dtype=torch.long)
    mk = torch.zeros((len(rows), T), dtype=torch.bool)
    pos = torch.zeros((len(rows), T), dtype=torch.long)
    doc = torch.full((len(rows), T), 10_000, dtype=torch.long)
    for r, (a, b, c, d) in enumerate(rows):
        n = len(a)
        ids[r, :n] = torch.tensor(a); mk[r, :n] = torch.tensor(b, dtype=torch.bool)
        pos[r, :n] = torch.tensor(c); doc[r, :n] = torch.tensor(d)
        if n < T:  # padding: its own "document", positions continue
            pos[r, n:] = torch.arange(T - n)
    return ids, mk, pos, doc


def losses(model, ids, mk, pos, doc):
    logits, mlogits = model(ids, pos, doc)
    V = logits.shape[-1]
    tgt, m1 = ids[:, 1:], mk[:, 1:] & (doc[:, 1:] == doc[:, :-1])
    l_main = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), tgt.reshape(-1), reduction="none")
    l_main = (l_main * m1.reshape(-1)).sum() / m1.sum().clamp(min=1)
    tgt2, m2 = ids[:, 2:], mk[:, 2:] & (doc[:, 2:] == doc[:, :-2])
    l_mtp = F.cross_entropy(mlogits[:, :-1].float().reshape(-1, V), tgt2.reshape(-1), reduction="none")
    l_mtp = (l_mtp * m2.reshape(-1)).sum() / m2.sum().clamp(min=1)
    bal = sum(mo.last[1] for mo in model.moe_layers())
    return l_main, l_mtp, bal


def export(model, cfg, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.clone() for k, v in checkpoint_state(model).items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    c = dict(cfg)
    c["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    gen = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "do_sample": False,
           "max_new_tokens": 64}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def measure(cfg, device, batch, seq, steps=3):
    torch.manual_seed(0)
    m = DeepseekV3(cfg, max_pos=seq).to(device)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    ids = torch.randint(5, cfg["vocab_size"], (batch, seq), device=device)
    mk = torch.ones_like(ids, dtype=torch.bool)
    pos = torch.arange(seq, device=device)[None].expand(batch, -1)
    doc = torch.zeros_like(ids)
    for i in range(steps + 1):
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            a, b, c = losses(m, ids, mk, pos, doc)
        (a + b).backward()
        opt.step(); opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * seq * steps / (time.time() - t0)


def n_params(cfg):
    m = DeepseekV3(cfg, max_pos=8)
    return sum(p.numel() for p in m.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--heldout")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-minutes", type=float, default=35)
    ap.add_argument("--preset", default="cpu", help="cpu | cpu-large | gpu | auto")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--freeze-frac", type=float, default=0.1, help="bias frozen for this last share")
    ap.add_argument("--tokens-per-param", type=float, default=0.5,
                    help="auto preset: largest one whose projected tokens >= this x params")
    ap.add_argument("--checkpoint-minutes", type=float, default=5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init-from", help="stage 2: start from this model folder (config.json + "
                    "model.safetensors of an earlier run) instead of random weights")
    ap.add_argument("--chats-only", action="store_true",
                    help="train on chat rows only (drop plain_* text): the chat fine-tuning stage")
    ap.add_argument("--balance-sources", action="store_true",
                    help="every epoch draws the same number of rows from each source (task-balanced "
                         "mixture, as the held-out set and users see it)")
    args = ap.parse_args()
    t_start = time.time()
    torch.set_num_threads(args.threads)
    dev = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a")

    def emit(d):
        d["t"] = round(time.time() - t_start, 1)
        log.write(json.dumps(d) + "\n"); log.flush()
        print(json.dumps(d), flush=True)

    tok = Tokenizer.from_file(args.tokenizer)
    V = tok.get_vocab_size()
    presets = ["cpu", "cpu-large", "gpu"] if args.preset == "auto" else [args.preset]
    budget_s = args.budget_minutes * 60
    chosen, tps = None, None
    for p in presets:
        cfg = dict(PRESETS[p], vocab_size=max(V, 8) if p != "gpu" else max(V, 8))
        r = measure(cfg, dev, args.batch, args.seq)
        npar = n_params(cfg)
        emit({"event": "measure", "preset": p, "tokens_per_s": round(r), "params": npar,
              "projected_tokens": round(r * budget_s)})
        if chosen is None or r * budget_s >= args.tokens_per_param * npar:
            chosen, tps = (p, cfg), r
    preset, cfg = chosen
    cfg["vocab_size"] = V
    if args.init_from:
        cfg = json.loads((Path(args.init_from) / "config.json").read_text())
        cfg.pop("torch_dtype", None)
        preset = "init:" + str(args.init_from)
    docs = encode_rows(args.corpus, tok, max_len=args.seq)
    if args.chats_only:
        docs = [d for d in docs if not d[2].startswith("plain")]
    n_tok = sum(len(d[0]) for d in docs)
    n_tgt = sum(sum(d[1]) for d in docs)
    emit({"event": "corpus", "docs": len(docs), "tokens": n_tok, "target_tokens": n_tgt})
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    model = DeepseekV3(cfg, max_pos=max(args.seq, 1024))
    if args.init_from:
        from safetensors.torch import load_file
        sd = {k: v.float() for k, v in load_file(str(Path(args.init_from) / "model.safetensors")).items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
    model = model.to(dev)
    npar = sum(p.numel() for p in model.parameters())
    emit({"event": "start", "preset": preset, "params_unique": npar, "config": cfg,
          "measured_tokens_per_s": round(tps), "budget_s": budget_s})
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.dim() < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    moes = model.moe_layers()
    moe_names = [f"layer{i}" for i, l in enumerate(model.model.layers) if l.moe]
    # Training time left after setup; the schedule ends at the deadline.
    t0 = time.time()
    train_s = budget_s - (t0 - t_start) if args.preset == "auto" else budget_s
    step, epoch, seen = 0, 0, 0
    loads = torch.zeros(len(moes), cfg["n_routed_experts"])
    acc = {"loss": 0.0, "mtp": 0.0, "bal": 0.0, "n": 0}
    last_ckpt = time.time()
    done = False
    while not done:
        ids_all, mk_all, pos_all, doc_all = pack(balanced(docs, rng) if args.balance_sources else docs,
                                                 args.seq, rng)
        epoch += 1
        perm = torch.randperm(len(ids_all))
        for b0 in range(0, len(perm) - args.batch + 1, args.batch):
            frac = (time.time() - t0) / train_s
            if frac >= 1.0:
                done = True
                break
            lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            sel = perm[b0:b0 + args.batch]
            ids, mk, pos, doc = (x[sel].to(dev) for x in (ids_all, mk_all, pos_all, doc_all))
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                l_main, l_mtp, bal = losses(model, ids, mk, pos, doc)
            loss = l_main + MTP_LAMBDA * l_mtp + SEQ_ALPHA * bal
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            # Aux-loss-free balancing: nudge each expert's bias by the sign of its load error.
            frozen = frac >= 1.0 - args.freeze_frac
            with torch.no_grad():
                for i, mo in enumerate(moes):
                    ld = mo.last[0].float().cpu()
                    loads[i] += ld
                    if not frozen:
                        mo.gate.e_score_correction_bias += GAMMA * torch.sign(ld.mean() - ld).to(dev)
            step += 1
            seen += int((ids != 2).sum())
            acc["loss"] += l_main.item(); acc["mtp"] += l_mtp.item(); acc["bal"] += float(bal.detach()); acc["n"] += 1
            if step % 10 == 0:
                lm = {n: round(float(l.max() / l.mean()), 3) for n, l in zip(moe_names, loads)}
                emit({"event": "step", "step": step, "epoch": epoch, "tokens": seen, "lr": round(lr, 6),
                      "loss": round(acc["loss"] / acc["n"], 4), "mtp_loss": round(acc["mtp"] / acc["n"], 4),
                      "seq_bal": round(acc["bal"] / acc["n"], 4), "load_max_over_mean": lm,
                      "bias_frozen": frozen})
                loads.zero_()
                acc = {"loss": 0.0, "mtp": 0.0, "bal": 0.0, "n": 0}
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                export(model, cfg, out / "checkpoint")
                torch.save({"step": step, "model": model.state_dict()}, out / "checkpoint" / "state.pt")
                last_ckpt = time.time()
                emit({"event": "checkpoint", "step": step})
    export(model, cfg, out / "final")
    emit({"event": "done", "steps": step, "tokens": seen, "train_s": round(time.time() - t0, 1),
          "epochs_started": epoch})
    if args.heldout:
        model.eval()
        hd = encode_rows(args.heldout, tok, max_len=args.seq)
        per = {}
        with torch.no_grad():
            for d in hd:
                ids = torch.tensor([d[0]], device=dev)
                mk = torch.tensor([d[1]], dtype=torch.bool, device=dev)
                pos = torch.arange(ids.shape[1], device=dev)[None]
                l, m, _ = losses(model, ids, mk, pos, torch.zeros_like(ids))
                per.setdefault(d[2], []).append((l.item(), m.item()))
        emit({"event": "heldout", "per_src": {k: [round(sum(x[0] for x in v) / len(v), 3),
                                                  round(sum(x[1] for x in v) / len(v), 3)]
                                              for k, v in sorted(per.items())}})


if __name__ == "__main__":
    main()
