#!/usr/bin/env python3
"""Golden fixtures for the Cetus engine: small random DeepSeek-V2/V3 checkpoints and
the outputs Hugging Face transformers (native DeepseekV2/V3ForCausalLM) gives for them.

    python3 tests/golden/make_fixtures.py            # all cases
    python3 tests/golden/make_fixtures.py v3-fp8     # only the named cases

Writes tests/data/golden/<case>/{config.json, model.safetensors, golden.safetensors,
manifest.json}. Everything is seeded; a rerun with the pinned versions (see PINNED)
reproduces the files byte for byte (the manifest records their sha256).

Reference = HF in float32, eager attention, loaded with exactly the values the
checkpoint holds (BF16 -> F32 is exact; FP8 is dequantised as float(Q) * scale in F32).
HF has no DeepSeek MTP module of its own for our layer index, so the MTP reference is
the short module `MtpReference` below, written from docs/deepseek-architecture.md §7.1
and reusing transformers' own decoder layer. Two further checks run on every case:
an independent float64 implementation of the architecture doc (`DocReference`) and,
where it loads, transformers' generic `MtpModel`. See tests/golden/README.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

# The versions the committed fixtures were made with. Other versions run (with a warning);
# the manifest records what was actually used.
PINNED = {"torch": "2.15", "transformers": "5.24.0", "safetensors": "0.8.0"}

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "data" / "golden"

PROMPT_LENS = (5, 17, 40)  # the longest exceeds original_max_position_embeddings (32)
N_GREEDY = 16
LOGIT_MARGIN = 1e-3  # top-1 minus top-2 logit, every checked position
ROUTER_MARGIN = 1e-4  # selection-score gap at every top-k / top-group boundary
MAX_PROMPT_ATTEMPTS = 2000

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------------------
# Cases. `config` is written verbatim as config.json (the layout of the real DeepSeek
# releases: `rope_scaling` + top-level `rope_theta`, no `head_dim`).
# ----------------------------------------------------------------------------------------

_YARN_V2 = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
            "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
_YARN_V3 = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}


def _v2_config(**over):
    c = {
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
        "vocab_size": 384, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 8,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": None, "kv_lora_rank": 32,
        "qk_nope_head_dim": 24, "qk_rope_head_dim": 16, "v_head_dim": 16,
        "n_routed_experts": 16, "n_shared_experts": 2, "num_experts_per_tok": 4,
        "n_group": 1, "topk_group": 1, "topk_method": "greedy", "scoring_func": "softmax",
        "norm_topk_prob": False, "routed_scaling_factor": 1.0,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_nextn_predict_layers": 1,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "rope_scaling": dict(_YARN_V2),
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
        "torch_dtype": "float32",
    }
    c.update(over)
    return c


def _v3_config(**over):
    c = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": 384, "hidden_size": 64, "intermediate_size": 160, "moe_intermediate_size": 8,
        "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 3,
        "q_lora_rank": 48, "kv_lora_rank": 32,
        "qk_nope_head_dim": 16, "qk_rope_head_dim": 32, "v_head_dim": 24,
        "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4,
        "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_nextn_predict_layers": 1,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "rope_scaling": dict(_YARN_V3),
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
        "torch_dtype": "float32",
    }
    c.update(over)
    return c


FP8_QUANT_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                    "weight_block_size": [128, 128]}

CASES = {
    "v2-greedy": {
        "about": "deepseek_v2, q_proj (no q-LoRA), softmax + greedy (V2-Lite routing), "
                 "norm_topk_prob false, routed_scaling_factor 1.0, YaRN mscale 0.707/0.707 "
                 "(cos/sin magnitude 1, softmax multiplier != 1), FP32 weights, MTP layer.",
        "config": _v2_config(),
        "storage": "f32", "weight_seed": 101, "prompt_seed": 10_000, "bos_first": False,
    },
    "v2-group": {
        "about": "deepseek_v2, q_proj, softmax + group_limited_greedy (4 groups, 2 kept, "
                 "16 experts, top-4), routed_scaling_factor 16, 2 shared experts, FP32, MTP.",
        "config": _v2_config(n_group=4, topk_group=2, topk_method="group_limited_greedy",
                             routed_scaling_factor=16.0),
        "storage": "f32", "weight_seed": 202, "prompt_seed": 20_000, "bos_first": False,
    },
    "v3-noaux": {
        "about": "deepseek_v3, q-LoRA, sigmoid + noaux_tc with N(0,0.1) correction bias, "
                 "16 experts in 4 groups (2 kept), top-4, norm_topk_prob, scaling 2.5, "
                 "YaRN mscale 1.0 / mscale_all_dim 0.707 (both YaRN scalings), first layer "
                 "dense, FP32, MTP.",
        "config": _v3_config(),
        "storage": "f32", "weight_seed": 303, "prompt_seed": 30_000, "bos_first": True,
    },
    "v3-bf16": {
        "about": "v3-noaux's architecture and base weights, every tensor stored as BF16 "
                 "(the correction bias too). Reference runs in FP32 on the BF16 values.",
        "config": _v3_config(torch_dtype="bfloat16"),
        "storage": "bf16", "weight_seed": 303, "prompt_seed": 30_000, "bos_first": True,
    },
    "v3-fp8": {
        "about": "v3-noaux's architecture except q_lora_rank 136 (so q_b_proj [144, 136] has a "
                 "2x2 scale grid and q_a_proj [136, 64] a 2x1 one; dense MLP 160 gives 2x1 / 1x2); "
                 "attention projections, dense MLP, routed and shared experts stored as F8_E4M3 "
                 "with 128x128 F32 `weight_scale_inv` blocks (partial edge blocks everywhere, "
                 "per-block scales deliberately different); the rest BF16, correction bias F32. "
                 "Reference runs in FP32 on float(Q)*scale.",
        "config": _v3_config(q_lora_rank=136, torch_dtype="bfloat16",
                             quantization_config=dict(FP8_QUANT_CONFIG)),
        "storage": "fp8", "weight_seed": 303, "prompt_seed": 30_000, "bos_first": True,
    },
    "v3-nointerleave": {
        "about": "small deepseek_v3 with rope_interleave false (HF applies rotate-half to the "
                 "un-permuted RoPE channels: pairs (j, j + d_r/2)); 2 layers, vocab 256, FP32, MTP.",
        "config": _v3_config(vocab_size=256, num_hidden_layers=2, intermediate_size=96,
                             rope_interleave=False),
        "storage": "f32", "weight_seed": 404, "prompt_seed": 40_000, "bos_first": True,
    },
}

# ----------------------------------------------------------------------------------------
# Checkpoint layout (real DeepSeek release names), built from the config alone.
# ----------------------------------------------------------------------------------------

ATTN_MATRICES = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")


def is_moe_layer(cfg, layer):
    return (cfg.get("n_routed_experts") is not None and layer >= cfg["first_k_dense_replace"]
            and layer % cfg.get("moe_layer_freq", 1) == 0)


def block_spec(cfg, p, moe):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    dc, dq = cfg["kv_lora_rank"], cfg["q_lora_rank"]
    s = {p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,)}
    a = p + "self_attn."
    if dq is None:
        s[a + "q_proj.weight"] = (nh * (dn + dr), H)
    else:
        s[a + "q_a_proj.weight"] = (dq, H)
        s[a + "q_a_layernorm.weight"] = (dq,)
        s[a + "q_b_proj.weight"] = (nh * (dn + dr), dq)
    s[a + "kv_a_proj_with_mqa.weight"] = (dc + dr, H)
    s[a + "kv_a_layernorm.weight"] = (dc,)
    s[a + "kv_b_proj.weight"] = (nh * (dn + dv), dc)
    s[a + "o_proj.weight"] = (H, nh * dv)
    m = p + "mlp."
    if moe:
        E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
        Is = I * cfg["n_shared_experts"]
        s[m + "gate.weight"] = (E, H)
        if cfg["topk_method"] == "noaux_tc":
            s[m + "gate.e_score_correction_bias"] = (E,)
        for e in range(E):
            s[m + f"experts.{e}.gate_proj.weight"] = (I, H)
            s[m + f"experts.{e}.up_proj.weight"] = (I, H)
            s[m + f"experts.{e}.down_proj.weight"] = (H, I)
        s[m + "shared_experts.gate_proj.weight"] = (Is, H)
        s[m + "shared_experts.up_proj.weight"] = (Is, H)
        s[m + "shared_experts.down_proj.weight"] = (H, Is)
    else:
        I = cfg["intermediate_size"]
        s[m + "gate_proj.weight"] = (I, H)
        s[m + "up_proj.weight"] = (I, H)
        s[m + "down_proj.weight"] = (H, I)
    return s


def checkpoint_spec(cfg):
    V, H, L = cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"]
    s = {"model.embed_tokens.weight": (V, H)}
    for layer in range(L):
        s.update(block_spec(cfg, f"model.layers.{layer}.", is_moe_layer(cfg, layer)))
    s["model.norm.weight"] = (H,)
    s["lm_head.weight"] = (V, H)
    for k in range(cfg.get("num_nextn_predict_layers", 0)):
        p = f"model.layers.{L + k}."
        s.update(block_spec(cfg, p, True))  # the MTP block is an MoE block (L >= first_k_dense_replace)
        s[p + "enorm.weight"] = (H,)
        s[p + "hnorm.weight"] = (H,)
        s[p + "eh_proj.weight"] = (H, 2 * H)
        s[p + "embed_tokens.weight"] = (V, H)
        s[p + "shared_head.norm.weight"] = (H,)
        s[p + "shared_head.head.weight"] = (V, H)
    return s


def make_weights(cfg, seed):
    """Random FP32 weights under the checkpoint names. Norm weights 1 + 0.2 N(0,1),
    correction bias N(0, 0.1), embeddings N(0, 1), lm_head N(0, (2/sqrt(H))^2), every
    other matrix N(0, 1/in_features). MTP embed/head are copies of the main ones."""
    spec = checkpoint_spec(cfg)
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    g = torch.Generator().manual_seed(seed)
    w = {}
    copies = {}
    for name in sorted(spec):
        shape = spec[name]
        if name.endswith(".embed_tokens.weight") and name != "model.embed_tokens.weight":
            copies[name] = "model.embed_tokens.weight"
            continue
        if name.endswith(".shared_head.head.weight"):
            copies[name] = "lm_head.weight"
            continue
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("norm.weight"):
            x = 1.0 + 0.2 * x
        elif name.endswith("e_score_correction_bias"):
            x = 0.1 * x
        elif name == "model.embed_tokens.weight":
            pass
        elif name == "lm_head.weight":
            x = x * (2.0 / math.sqrt(H))
        else:
            assert len(shape) == 2, name
            x = x / math.sqrt(shape[1])
        w[name] = x.contiguous()
    for name, src in copies.items():
        w[name] = w[src].clone()
    assert set(w) == set(spec)
    return w


# ----------------------------------------------------------------------------------------
# Storage formats.
# ----------------------------------------------------------------------------------------

def fp8_quantized(name):
    """Tensors the V3 release stores as FP8: attention projections and every MLP matrix
    (dense, routed experts, shared experts), MTP block included. Not: embeddings, lm_head,
    norms, the router, the bias, eh_proj, shared_head."""
    if not name.endswith(".weight") or ".shared_head." in name or name.endswith("eh_proj.weight"):
        return False
    leaf = name.split(".")[-2]
    if leaf in ATTN_MATRICES:
        return True
    return ".mlp." in name and leaf in ("gate_proj", "up_proj", "down_proj")


def quantize_fp8(w, g, block=128):
    """Block FP8 (E4M3) quantisation over [out, in] with 128x128 blocks. Each block's
    scale is amax/448 times a random factor in [1, 4), so neighbouring blocks have clearly
    different scales and a wrong block index shows. Returns (Q, scale_inv, dequantised)."""
    out_f, in_f = w.shape
    nb_o, nb_i = -(-out_f // block), -(-in_f // block)
    s = torch.empty(nb_o, nb_i, dtype=torch.float32)
    u = 1.0 + 3.0 * torch.rand(nb_o, nb_i, generator=g, dtype=torch.float32)
    for i in range(nb_o):
        for j in range(nb_i):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            s[i, j] = blk.abs().max() / 448.0 * u[i, j]
    s_full = s.repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    q = (w / s_full).to(torch.float8_e4m3fn)
    assert torch.isfinite(q.float()).all()
    deq = q.to(torch.float32) * s_full  # the dequantisation rule, in F32
    return q.contiguous(), s.contiguous(), deq


def to_storage(w, storage, seed):
    """Returns (tensors to write to model.safetensors, FP32 reference weights)."""
    stored, ref = {}, {}
    g = torch.Generator().manual_seed(seed + 7)
    for name in sorted(w):
        x = w[name]
        if storage == "f32":
            stored[name] = x
            ref[name] = x.clone()
        elif storage == "bf16":
            b = x.to(torch.bfloat16)
            stored[name] = b
            ref[name] = b.to(torch.float32)
        elif storage == "fp8":
            if fp8_quantized(name):
                q, s, deq = quantize_fp8(x, g)
                stored[name] = q
                stored[name + "_scale_inv"] = s
                ref[name] = deq
            elif name.endswith("e_score_correction_bias"):
                stored[name] = x
                ref[name] = x.clone()
            else:
                b = x.to(torch.bfloat16)
                stored[name] = b
                ref[name] = b.to(torch.float32)
        else:
            raise ValueError(storage)
    return stored, ref


def read_reference_from_file(path):
    """Reads model.safetensors back and applies the engine's rules: BF16 -> F32, and
    F8_E4M3 -> float(Q) * scale_inv[i//128][j//128] in F32."""
    out = {}
    with safe_open(path, framework="pt") as f:
        names = list(f.keys())
        for name in names:
            if name.endswith("_scale_inv"):
                continue
            t = f.get_tensor(name)
            if t.dtype == torch.float8_e4m3fn:
                s = f.get_tensor(name + "_scale_inv")
                o, i = t.shape
                sf = s.repeat_interleave(128, 0)[:o].repeat_interleave(128, 1)[:, :i]
                out[name] = t.to(torch.float32) * sf
            else:
                out[name] = t.to(torch.float32)
    return out


# ----------------------------------------------------------------------------------------
# HF model construction and weight loading (per-expert names -> HF's fused experts).
# ----------------------------------------------------------------------------------------

def hf_classes(model_type):
    if model_type == "deepseek_v2":
        from transformers.models.deepseek_v2 import modeling_deepseek_v2 as mod
        from transformers import DeepseekV2Config as Cfg
        return Cfg, mod.DeepseekV2ForCausalLM, mod.DeepseekV2DecoderLayer, mod.DeepseekV2RMSNorm, \
            mod.DeepseekV2RotaryEmbedding
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as mod
    from transformers import DeepseekV3Config as Cfg
    return Cfg, mod.DeepseekV3ForCausalLM, mod.DeepseekV3DecoderLayer, mod.DeepseekV3RMSNorm, \
        mod.DeepseekV3RotaryEmbedding


def hf_config(cfg):
    Cfg = hf_classes(cfg["model_type"])[0]
    kw = {k: copy.deepcopy(v) for k, v in cfg.items()
          if k not in ("model_type", "torch_dtype", "quantization_config")}
    c = Cfg(**kw)
    c._attn_implementation = "eager"
    return c


def fuse_block(ref, src_prefix, dst_prefix, cfg, moe):
    """Checkpoint tensors of one decoder block -> HF module state (fused experts)."""
    out = {}
    for name, t in ref.items():
        if not name.startswith(src_prefix):
            continue
        rest = name[len(src_prefix):]
        if rest.startswith("mlp.experts."):
            continue
        if rest.split(".")[0] in ("enorm", "hnorm", "eh_proj", "embed_tokens", "shared_head"):
            continue
        out[dst_prefix + rest] = t
    if moe:
        E = cfg["n_routed_experts"]
        gate_up, down = [], []
        for e in range(E):
            p = f"{src_prefix}mlp.experts.{e}."
            gate_up.append(torch.cat([ref[p + "gate_proj.weight"], ref[p + "up_proj.weight"]], 0))
            down.append(ref[p + "down_proj.weight"])
        out[dst_prefix + "mlp.experts.gate_up_proj"] = torch.stack(gate_up)
        out[dst_prefix + "mlp.experts.down_proj"] = torch.stack(down)
    return out


def build_reference_model(cfg, ref):
    _, CausalLM, *_ = hf_classes(cfg["model_type"])
    torch.manual_seed(0)
    model = CausalLM(hf_config(cfg)).eval()
    sd = {"model.embed_tokens.weight": ref["model.embed_tokens.weight"],
          "model.norm.weight": ref["model.norm.weight"], "lm_head.weight": ref["lm_head.weight"]}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        sd.update(fuse_block(ref, p, p, cfg, is_moe_layer(cfg, layer)))
    have = model.state_dict()
    assert set(sd) == set(have), (set(sd) ^ set(have))
    for k in sd:
        assert sd[k].shape == have[k].shape, (k, sd[k].shape, have[k].shape)
    model.load_state_dict(sd, strict=True)
    # generate() merges model.generation_config into the one passed; without this it would
    # stop at eos_token_id (1). Prompts whose greedy tokens contain EOS are rejected anyway.
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    model.generation_config.pad_token_id = None
    return model


class MtpReference(nn.Module):
    """DeepSeek MTP module, docs/deepseek-architecture.md §7.1:

        e = enorm(embed_tokens(t_{i+1}))       # the MTP layer's own embedding copy
        g = hnorm(h_i)                          # h_i: main hidden AFTER model.norm
        x = eh_proj(cat([e, g], -1))            # embedding FIRST
        y = DecoderBlock(x, positions i)        # transformers' own decoder layer, layer_idx = L (MoE)
        logits = shared_head.head(shared_head.norm(y))

    Causal over the entries (one entry per main position i = 0..T-2)."""

    def __init__(self, cfg, ref):
        super().__init__()
        _, _, Layer, RMSNorm, Rotary = hf_classes(cfg["model_type"])
        hc = hf_config(cfg)
        H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        eps = cfg["rms_norm_eps"]
        self.embed_tokens = nn.Embedding(V, H)
        self.enorm = RMSNorm(H, eps=eps)
        self.hnorm = RMSNorm(H, eps=eps)
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.block = Layer(hc, layer_idx=L)
        assert L >= cfg["first_k_dense_replace"]  # so the block is built as MoE
        self.shared_head_norm = RMSNorm(H, eps=eps)
        self.shared_head_head = nn.Linear(H, V, bias=False)
        self.rotary = Rotary(hc)
        p = f"model.layers.{L}."
        sd = {"embed_tokens.weight": ref[p + "embed_tokens.weight"],
              "enorm.weight": ref[p + "enorm.weight"], "hnorm.weight": ref[p + "hnorm.weight"],
              "eh_proj.weight": ref[p + "eh_proj.weight"],
              "shared_head_norm.weight": ref[p + "shared_head.norm.weight"],
              "shared_head_head.weight": ref[p + "shared_head.head.weight"]}
        sd.update(fuse_block(ref, p, "block.", cfg, True))
        self.load_state_dict(sd, strict=True)
        self.eval()

    @torch.no_grad()
    def forward(self, hidden, next_ids, positions):
        # hidden [1, n, H] (post-norm main hidden h_0..h_{n-1}), next_ids [1, n] (t_1..t_n)
        e = self.enorm(self.embed_tokens(next_ids))
        g = self.hnorm(hidden)
        x = self.eh_proj(torch.cat([e, g], dim=-1))
        n = x.shape[1]
        mask = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
        pe = self.rotary(x, positions)
        y = self.block(x, attention_mask=mask, position_ids=positions, position_embeddings=pe)
        return self.shared_head_head(self.shared_head_norm(y))


# ----------------------------------------------------------------------------------------
# An independent float64 implementation of docs/deepseek-architecture.md §3-§7 (naive
# MLA form, YaRN §4.2, interleaved RoPE §4.3, scale §4.4, routing §6.2 with -inf group
# masking). Used only as a cross-check of HF and of MtpReference; not written to fixtures.
# ----------------------------------------------------------------------------------------

class DocReference:
    def __init__(self, cfg, ref):
        self.c = cfg
        self.w = {k: v.to(torch.float64) for k, v in ref.items()}
        rs = cfg.get("rope_scaling")
        dr, theta = cfg["qk_rope_head_dim"], cfg["rope_theta"]
        i = torch.arange(dr // 2, dtype=torch.float64)
        f_extra = 1.0 / theta ** (2 * i / dr)
        self.mag, mult = 1.0, 1.0
        if rs:
            factor, L0 = rs["factor"], rs["original_max_position_embeddings"]
            cd = lambda r: dr * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(theta))
            low = max(math.floor(cd(rs.get("beta_fast", 32))), 0)
            high = min(math.ceil(cd(rs.get("beta_slow", 1))), dr - 1)
            if low == high:
                high += 0.001
            ramp = ((i - low) / (high - low)).clamp(0, 1)
            keep = 1 - ramp
            f_extra = (f_extra / factor) * (1 - keep) + f_extra * keep
            gfn = lambda s, m: 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
            ms, msa = rs.get("mscale"), rs.get("mscale_all_dim")
            self.mag = gfn(factor, ms) / gfn(factor, msa) if (ms and msa) else gfn(factor, 1.0)
            if msa:
                mult = gfn(factor, msa) ** 2
        self.inv_freq = f_extra
        self.scale = (cfg["qk_nope_head_dim"] + dr) ** -0.5 * mult
        self.interleave = cfg.get("rope_interleave", True)

    def norm(self, x, name, eps=None):
        eps = self.c["rms_norm_eps"] if eps is None else eps
        return self.w[name] * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def lin(self, x, name):
        return x @ self.w[name].T

    def rope(self, x, pos):  # x [..., T, dr]
        ang = pos[:, None].to(torch.float64) * self.inv_freq[None, :]  # [T, dr/2]
        cos, sin = torch.cos(ang) * self.mag, torch.sin(ang) * self.mag
        if self.interleave:
            a, b = x[..., 0::2], x[..., 1::2]
            y = torch.empty_like(x)
            y[..., 0::2] = a * cos - b * sin
            y[..., 1::2] = a * sin + b * cos
            return y
        h = x.shape[-1] // 2
        a, b = x[..., :h], x[..., h:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    def mla(self, a, p, pos):
        c = self.c
        nh, dn, dr, dv, dc = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                              c["v_head_dim"], c["kv_lora_rank"])
        T = a.shape[0]
        if c["q_lora_rank"] is None:
            q = self.lin(a, p + "q_proj.weight")
        else:
            q = self.lin(self.norm(self.lin(a, p + "q_a_proj.weight"), p + "q_a_layernorm.weight", 1e-6),
                         p + "q_b_proj.weight")
        q = q.view(T, nh, dn + dr).transpose(0, 1)  # [nh, T, dqk]
        q_nope, q_pe = q[..., :dn], self.rope(q[..., dn:], pos)
        kv = self.lin(a, p + "kv_a_proj_with_mqa.weight")
        c_kv = self.norm(kv[:, :dc], p + "kv_a_layernorm.weight", 1e-6)  # latent-norm eps: 1e-6 (HF)
        k_pe = self.rope(kv[:, dc:], pos)  # [T, dr], shared by all heads
        u = self.lin(c_kv, p + "kv_b_proj.weight").view(T, nh, dn + dv).transpose(0, 1)
        k_nope, v = u[..., :dn], u[..., dn:]
        s = (q_nope @ k_nope.transpose(1, 2) + q_pe @ k_pe.T[None]) * self.scale
        s = s + torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
        o = torch.softmax(s, -1) @ v  # [nh, T, dv]
        return self.lin(o.transpose(0, 1).reshape(T, nh * dv), p + "o_proj.weight")

    def mlp(self, x, p):
        return self.lin(torch.nn.functional.silu(self.lin(x, p + "gate_proj.weight"))
                        * self.lin(x, p + "up_proj.weight"), p + "down_proj.weight")

    def route(self, z, bias):
        c = self.c
        E, K, G, TG = c["n_routed_experts"], c["num_experts_per_tok"], c["n_group"], c["topk_group"]
        key = (c["scoring_func"], c["topk_method"])
        if key == ("softmax", "greedy"):
            s = torch.softmax(z, -1)
            choice = s
        elif key == ("softmax", "group_limited_greedy"):
            s = torch.softmax(z, -1)
            gs = s.view(-1, G, E // G).max(-1).values
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(TG, -1).indices, 1.0).bool()
            choice = s.masked_fill(~keep.repeat_interleave(E // G, 1), float("-inf"))
        elif key == ("sigmoid", "noaux_tc"):
            s = torch.sigmoid(z)
            cb = s + bias
            gs = cb.view(-1, G, E // G).topk(2, -1).values.sum(-1)
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(TG, -1).indices, 1.0).bool()
            choice = cb.masked_fill(~keep.repeat_interleave(E // G, 1), float("-inf"))
        else:
            raise ValueError(key)
        idx = choice.topk(K, -1).indices.sort(-1).values
        wts = s.gather(1, idx)
        if c["norm_topk_prob"] and K > 1:
            wts = wts / (wts.sum(-1, keepdim=True) + 1e-20)
        return idx, wts * c["routed_scaling_factor"]

    def moe(self, b, p):
        idx, wts = self.route(self.lin(b, p + "gate.weight"), self.w.get(p + "gate.e_score_correction_bias"))
        out = torch.zeros_like(b)
        for t in range(b.shape[0]):
            for j in range(idx.shape[1]):
                out[t] += wts[t, j] * self.mlp(b[t:t + 1], f"{p}experts.{int(idx[t, j])}.")[0]
        return out + self.mlp(b, p + "shared_experts."), (idx, wts)

    def block(self, x, p, pos, moe):
        x = x + self.mla(self.norm(x, p + "input_layernorm.weight"), p + "self_attn.", pos)
        b = self.norm(x, p + "post_attention_layernorm.weight")
        if moe:
            m, route = self.moe(b, p + "mlp.")
            return x + m, route
        return x + self.mlp(b, p + "mlp."), None

    def forward(self, ids):
        x = self.w["model.embed_tokens.weight"][ids]
        pos = torch.arange(len(ids))
        routers, layers = {}, {}
        for layer in range(self.c["num_hidden_layers"]):
            x, route = self.block(x, f"model.layers.{layer}.", pos, is_moe_layer(self.c, layer))
            layers[layer] = x
            if route is not None:
                routers[layer] = route
        h = self.norm(x, "model.norm.weight")
        return self.lin(h, "lm_head.weight"), h, routers, layers

    def mtp(self, h, next_ids):
        p = f"model.layers.{self.c['num_hidden_layers']}."
        e = self.norm(self.w[p + "embed_tokens.weight"][next_ids], p + "enorm.weight")
        x = self.lin(torch.cat([e, self.norm(h, p + "hnorm.weight")], -1), p + "eh_proj.weight")
        y, _ = self.block(x, p, torch.arange(len(next_ids)), True)
        return self.lin(self.norm(y, p + "shared_head.norm.weight"), p + "shared_head.head.weight")


# ----------------------------------------------------------------------------------------
# Running the reference, with hooks on the routers.
# ----------------------------------------------------------------------------------------

def router_margins(cfg, logits, bias):
    """Smallest selection-score gaps at the group boundary and the expert boundary, per token."""
    E, K, G, TG = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"]
    z = logits.to(torch.float64)
    if cfg["topk_method"] == "noaux_tc":
        s = torch.sigmoid(z) + bias.to(torch.float64)
        gs = s.view(-1, G, E // G).topk(2, -1).values.sum(-1)
    else:
        s = torch.softmax(z, -1)
        gs = s.view(-1, G, E // G).max(-1).values
    margins = torch.full((s.shape[0],), float("inf"), dtype=torch.float64)
    choice = s
    if G > 1 and TG < G:
        g_sorted = gs.sort(-1, descending=True).values
        margins = torch.minimum(margins, g_sorted[:, TG - 1] - g_sorted[:, TG])
        keep = torch.zeros_like(gs).scatter_(1, gs.topk(TG, -1).indices, 1.0).bool()
        choice = s.masked_fill(~keep.repeat_interleave(E // G, 1), float("-inf"))
    c_sorted = choice.sort(-1, descending=True).values
    margins = torch.minimum(margins, c_sorted[:, K - 1] - c_sorted[:, K])
    return margins


class Recorder:
    def __init__(self, model, mtp, cfg):
        self.cfg, self.handles, self.gates, self.layers = cfg, [], {}, {}
        for layer, dec in enumerate(model.model.layers):
            self.handles.append(dec.register_forward_hook(self._layer_hook(layer)))
            if is_moe_layer(cfg, layer):
                self.handles.append(dec.mlp.gate.register_forward_hook(self._gate_hook(layer, dec.mlp.gate)))
        L = cfg["num_hidden_layers"]
        self.handles.append(mtp.block.mlp.gate.register_forward_hook(self._gate_hook(L, mtp.block.mlp.gate)))

    def _layer_hook(self, layer):
        def f(mod, args, out):
            self.layers[layer] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return f

    def _gate_hook(self, layer, gate):
        def f(mod, args, out):
            logits, wts, idx = out
            bias = getattr(gate, "e_score_correction_bias", None)
            self.gates[layer] = (logits.detach().clone(), wts.detach().clone(), idx.detach().clone(), bias)
        return f

    def clear(self):
        self.gates, self.layers = {}, {}

    def sorted_router(self, layer):
        logits, wts, idx, bias = self.gates[layer]
        order = idx.argsort(-1)
        return idx.gather(1, order), wts.gather(1, order), logits, bias


def top2_margin(logits):
    t = logits.to(torch.float64).topk(2, -1).values
    return (t[..., 0] - t[..., 1])


@torch.no_grad()
def run_prompt(model, mtp, rec, cfg, ids):
    """Everything recorded for one prompt, plus the margins used to reject near-ties."""
    from transformers import GenerationConfig
    T = len(ids)
    x = torch.tensor(ids)[None]
    L = cfg["num_hidden_layers"]
    moe_layers = [layer for layer in range(L) if is_moe_layer(cfg, layer)]

    rec.clear()
    out = model(input_ids=x, use_cache=False)
    logits = out.logits[0].clone()
    hidden = model.model(input_ids=x, use_cache=False).last_hidden_state[0].clone()
    assert torch.equal(model.lm_head(hidden), logits)
    res = {"ids": x[0].to(torch.int32), "logits": logits, "hidden": hidden}
    for layer in range(L):
        res[f"layer.{layer}"] = rec.layers[layer][0]
    margins = {"logit": top2_margin(logits).min().item(), "router": float("inf")}
    usage = {}
    for layer in moe_layers:
        idx, wts, rl, bias = rec.sorted_router(layer)
        res[f"router.{layer}"] = idx.to(torch.int32)
        res[f"router_weights.{layer}"] = wts.to(torch.float32)
        margins["router"] = min(margins["router"], router_margins(cfg, rl, bias).min().item())
        usage[layer] = torch.bincount(idx.flatten(), minlength=cfg["n_routed_experts"]).tolist()

    # MTP over entries (h_i, t_{i+1}) at positions i = 0..T-2.
    rec.clear()
    mtp_logits = mtp(hidden[None, :-1], x[:, 1:], torch.arange(T - 1)[None])[0]
    res["mtp_logits"] = mtp_logits
    midx, _, mrl, mbias = rec.sorted_router(L)
    res["mtp_router"] = midx.to(torch.int32)
    margins["mtp_logit"] = top2_margin(mtp_logits).min().item()
    margins["mtp_router"] = router_margins(cfg, mrl, mbias).min().item()

    # Greedy continuation with HF generate (KV cache path), checked against argmax of one
    # full forward; the full forward also gives the margins at the generated positions.
    gc = GenerationConfig(do_sample=False, max_new_tokens=N_GREEDY, eos_token_id=None,
                          pad_token_id=None, bos_token_id=None)
    gen = model.generate(x, generation_config=gc)[0, T:]
    assert gen.numel() == N_GREEDY
    res["greedy"] = gen.to(torch.int32)
    rec.clear()
    full = model(input_ids=torch.cat([x[0], gen[:-1]])[None], use_cache=False).logits[0]
    arg = full[T - 1:].argmax(-1)
    greedy_consistent = torch.equal(arg, gen)
    margins["greedy_logit"] = top2_margin(full[T - 1:]).min().item()
    margins["greedy_router"] = min(
        router_margins(cfg, rec.gates[layer][0], rec.gates[layer][3]).min().item() for layer in moe_layers)
    margins["prompt_vs_full_logits"] = (full[:T] - logits).abs().max().item()

    ok = (greedy_consistent and margins["logit"] >= LOGIT_MARGIN and margins["mtp_logit"] >= LOGIT_MARGIN
          and margins["greedy_logit"] >= LOGIT_MARGIN and margins["router"] >= ROUTER_MARGIN
          and margins["mtp_router"] >= ROUTER_MARGIN and margins["greedy_router"] >= ROUTER_MARGIN
          and cfg["eos_token_id"] not in gen.tolist())
    return ok, res, margins, usage


def make_prompt(seed, T, V, bos_first):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (T,), generator=g).tolist()  # 0/1 (BOS/EOS) never inside
    if bos_first:
        ids[0] = 0
    return ids


# ----------------------------------------------------------------------------------------
# Cross-checks.
# ----------------------------------------------------------------------------------------

@torch.no_grad()
def check_reload(case_dir, cfg, prompts):
    """HF from_pretrained of the written folder must give the same logits."""
    _, CausalLM, *_ = hf_classes(cfg["model_type"])
    res = {}
    try:
        m = CausalLM.from_pretrained(case_dir, dtype=torch.float32, attn_implementation="eager").eval()
    except Exception as e:  # noqa: BLE001 - recorded in the manifest
        return {"loaded": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}, None
    res["loaded"] = True
    res["config_rope_parameters_seen_by_hf"] = dict(m.config.rope_parameters)
    d = 0.0
    for p in prompts:
        d = max(d, (m(input_ids=p["ids"].long()[None]).logits[0] - p["logits"]).abs().max().item())
    res["max_abs_logit_diff_vs_reference"] = d
    return res, m


@torch.no_grad()
def check_hf_mtp(main, cfg, prompts):
    """transformers 5.24's generic MtpModel, pointed at our layer index, vs MtpReference."""
    from transformers.modeling_layers import MtpModel
    L = cfg["num_hidden_layers"]
    try:
        main._keys_to_ignore_on_load_unexpected = [rf"model\.layers\.{L}\..*"]
        if getattr(main.config, "num_mtp_layers", None) is None:
            main.config.num_mtp_layers = cfg["num_nextn_predict_layers"]
        mtp = MtpModel.from_pretrained(main).eval()
        d = 0.0
        for p in prompts:
            T = len(p["ids"])
            ids = p["ids"].long()[None]
            y = mtp.forward_layer(0, p["hidden"][None, :-1], torch.arange(T - 1)[None], None,
                                  input_ids=ids[:, 1:])
            d = max(d, (mtp._project_to_logits(y)[0] - p["mtp_logits"]).abs().max().item())
        return {"ran": True, "max_abs_mtp_logit_diff_vs_reference": d}
    except Exception as e:  # noqa: BLE001 - recorded in the manifest
        return {"ran": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


@torch.no_grad()
def check_doc_reference(cfg, ref, prompts):
    doc = DocReference(cfg, ref)
    dl = dh = dm = dw = dlay = 0.0
    routers_equal = True
    for p in prompts:
        ids = p["ids"].long()
        lg, h, routers, layers = doc.forward(ids)
        dl = max(dl, (lg - p["logits"].double()).abs().max().item())
        dh = max(dh, (h - p["hidden"].double()).abs().max().item())
        for layer, x in layers.items():
            dlay = max(dlay, (x - p[f"layer.{layer}"].double()).abs().max().item())
        for layer, (idx, wts) in routers.items():
            routers_equal &= torch.equal(idx.to(torch.int32), p[f"router.{layer}"])
            dw = max(dw, (wts - p[f"router_weights.{layer}"].double()).abs().max().item())
        ml = doc.mtp(p["hidden"].double()[:-1], ids[1:])
        dm = max(dm, (ml - p["mtp_logits"].double()).abs().max().item())
    return {"max_abs_logit_diff": dl, "max_abs_hidden_diff": dh, "max_abs_layer_output_diff": dlay,
            "max_abs_router_weight_diff": dw, "max_abs_mtp_logit_diff": dm,
            "router_ids_equal": bool(routers_equal)}


# ----------------------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


HF_NOTES = [
    "HF native deepseek_v2 applies the YaRN softmax multiplier g(factor, mscale_all_dim)^2 "
    "(modeling_deepseek_v2.py yarn_apply_mscale, used by DeepseekV2Attention.__init__: "
    "self.scaling = yarn_apply_mscale(config.rope_parameters, self.qk_head_dim ** (-0.5))); "
    "so v2 cases keep V2-Lite's mscale 0.707/0.707 and the engine's §4.4 formula agrees with HF.",
    "HF native deepseek_v3 noaux_tc masks the excluded groups with -inf "
    "(DeepseekV3TopkRouter.forward: scores_for_choice.masked_fill(~score_mask.bool(), float('-inf'))), "
    "not 0.0 as older versions did; deepseek_v2 group_limited_greedy masks with 0.0 "
    "(softmax scores are > 0, so that is equivalent).",
    "q_a_layernorm / kv_a_layernorm are built without an eps argument "
    "(DeepseekV3RMSNorm(self.q_lora_rank), DeepseekV3RMSNorm(config.kv_lora_rank)), i.e. the "
    "default 1e-6, whatever rms_norm_eps says; all cases use rms_norm_eps 1e-6, so both rules agree.",
    "HF ignores scoring_func / topk_method for deepseek_v3 (always sigmoid + noaux_tc) and "
    "scoring_func / norm_topk_prob for deepseek_v2 (always softmax, never renormalised); the "
    "cases use configs where the config fields say the same thing.",
    "HF holds routed experts fused (mlp.experts.gate_up_proj [E, 2I, H], gate rows first; "
    "mlp.experts.down_proj [E, H, I]); its save_pretrained writes per-expert names again. "
    "model.safetensors here is written directly with per-expert names.",
    "save_pretrained would write `rope_parameters` (with rope_theta and rope_type inside) plus "
    "`head_dim` = qk_rope_head_dim and `qk_head_dim`; config.json here is written by hand with "
    "`rope_scaling` + top-level `rope_theta` as in the real releases, and HF reads it back "
    "identically (reload check). `head_dim` in an HF-written DeepSeek config is the RoPE width, "
    "not the attention head width.",
    "DeepseekV3PreTrainedModel._keys_to_ignore_on_load_unexpected is hard-coded to "
    "model\\.layers\\.61.*; for these small models the MTP layer (index num_hidden_layers) is "
    "reported as unexpected keys by from_pretrained, and ignored (load still succeeds).",
    "HF deepseek_v3 rope_interleave=true rotates even/odd channel pairs directly "
    "(apply_rotary_pos_emb_interleave) and keeps q_pe/k_pe in de-interleaved order "
    "[rotated evens, rotated odds]; deepseek_v2 uses complex multiplication on adjacent pairs "
    "(interleaved order kept). rope_interleave=false applies rotate-half to pairs (j, j + d_r/2).",
    "The MoE in transformers 5.24 accumulates the weighted expert outputs in the activation "
    "dtype (float32 here), then adds the shared experts; router logits and gate weights are FP32.",
    "HF's FP8 path cannot load v3-fp8: without a GPU it falls back to dequantising, which needs "
    "`accelerate` (quantizer_finegrained_fp8.py), and integrations/finegrained_fp8.py "
    "Fp8Dequantize._dequantize_one derives the block size as rows // scale_rows, so it raises for "
    "shapes not divisible by the scale grid and silently uses wrong blocks for partial-edge shapes "
    "that are (e.g. [144, 136] with a 2x2 grid -> 72x68 blocks). The v3-fp8 reference is therefore "
    "checked by reading model.safetensors back with the engine's rule "
    "(float(Q) * scale_inv[i//128][j//128]).",
    "generate() merges model.generation_config into the one passed, so eos_token_id=None in the "
    "call does not stop EOS termination; the script clears the model's generation config and "
    "rejects prompts whose greedy tokens contain EOS.",
    "transformers' generic MtpModel (modeling_layers.py) feeds the MTP block the positions of "
    "the shifted tokens (i+1); this reference uses position i (vLLM). RoPE scores depend only "
    "on position differences, so both give the same logits up to rounding.",
]


def run_case(name, case):
    cfg = case["config"]
    case_dir = OUT_DIR / name
    case_dir.mkdir(parents=True, exist_ok=True)

    w = make_weights(cfg, case["weight_seed"])
    stored, ref = to_storage(w, case["storage"], case["weight_seed"])
    model = build_reference_model(cfg, ref)
    mtp = MtpReference(cfg, ref)
    rec = Recorder(model, mtp, cfg)

    # Prompts, reseeded until no near-ties.
    prompts, prompt_info, all_margins, usage_all = [], [], [], {}
    for k, T in enumerate(PROMPT_LENS):
        for attempt in range(MAX_PROMPT_ATTEMPTS):
            seed = case["prompt_seed"] + 1000 * k + attempt
            ok, res, margins, usage = run_prompt(model, mtp, rec, cfg,
                                                 make_prompt(seed, T, cfg["vocab_size"], case["bos_first"]))
            if ok:
                break
        else:
            raise RuntimeError(f"{name}: no tie-free prompt of length {T} found")
        prompts.append(res)
        prompt_info.append({"index": k, "length": T, "seed": seed, "attempts": attempt + 1})
        all_margins.append(margins)
        for layer, u in usage.items():
            usage_all.setdefault(layer, [0] * cfg["n_routed_experts"])
            usage_all[layer] = [a + b for a, b in zip(usage_all[layer], u)]

    # Files.
    model_path = case_dir / "model.safetensors"
    save_file(stored, str(model_path), metadata={"format": "pt"})
    os.chmod(model_path, 0o644)
    (case_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    golden = {}
    for k, p in enumerate(prompts):
        for key in ("ids", "logits", "hidden", "mtp_logits", "greedy", "mtp_router"):
            golden[f"prompt.{k}.{key}"] = p[key]
        for key in p:
            if key.startswith(("router.", "router_weights.", "layer.")):
                golden[f"prompt.{k}.{key}"] = p[key]
    golden = {k: v.contiguous() for k, v in golden.items()}
    assert all(v.dtype in (torch.float32, torch.int32) for v in golden.values())
    golden_path = case_dir / "golden.safetensors"
    save_file(golden, str(golden_path), metadata={"format": "pt"})
    os.chmod(golden_path, 0o644)

    # Checks.
    back = read_reference_from_file(str(model_path))
    file_matches_reference = set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    assert file_matches_reference, "model.safetensors does not hold the reference weights"
    reload, hf_main = check_reload(str(case_dir), cfg, prompts)
    if case["storage"] != "fp8":
        assert reload["loaded"] and reload["max_abs_logit_diff_vs_reference"] <= 1e-5, reload
    hf_mtp = (check_hf_mtp(hf_main, cfg, prompts) if hf_main is not None
              else {"ran": False, "error": "needs the HF main model, which from_pretrained could not load"})
    doc = check_doc_reference(cfg, ref, prompts)
    assert doc["router_ids_equal"] and doc["max_abs_logit_diff"] < 1e-3 and doc["max_abs_mtp_logit_diff"] < 1e-3, doc

    # Summary numbers.
    dtypes = {}
    with safe_open(str(model_path), framework="pt") as f:
        for n in f.keys():
            dt = str(f.get_slice(n).get_dtype())
            dtypes[dt] = dtypes.get(dt, 0) + 1
    max_logit = max(p["logits"].abs().max().item() for p in prompts)
    logit_std = float(torch.cat([p["logits"].flatten() for p in prompts]).std())
    mins = {key: min(m[key] for m in all_margins) for key in all_margins[0]}

    hc = hf_config(cfg)
    rope_mod = model.model.rotary_emb
    manifest = {
        "case": name,
        "about": case["about"],
        "regenerate": "python3 tests/golden/make_fixtures.py " + name,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__, "pinned": PINNED},
        "seeds": {"weights": case["weight_seed"], "fp8_scale_factors": case["weight_seed"] + 7,
                  "prompts": prompt_info,
                  "rule": "prompt k seed = prompt_seed + 1000*k + attempt; an attempt is rejected on a "
                          "near-tie (see tie_rules), on an EOS in the greedy tokens, or when HF generate "
                          "disagrees with the argmax of one full forward"},
        "config": cfg,
        "storage": {"f32": "every tensor F32",
                    "bf16": "every tensor BF16 (correction bias included)",
                    "fp8": "F8_E4M3 + F32 weight_scale_inv for attention projections, dense MLP, routed "
                           "and shared experts (MTP block included); e_score_correction_bias F32; "
                           "everything else BF16"}[case["storage"]],
        "model_safetensors_dtypes": dtypes,
        "init": "norm weights 1+0.2*N(0,1); e_score_correction_bias 0.1*N(0,1); embed_tokens N(0,1); "
                "lm_head N(0,1)*2/sqrt(H); other matrices N(0,1)/sqrt(in_features); MTP embed_tokens and "
                "shared_head.head are copies of model.embed_tokens and lm_head; fp8 block scale = "
                "amax(block)/448 * U[1,4)",
        "prompt_lengths": list(PROMPT_LENS),
        "reference": {
            "main": "transformers DeepseekV{2,3}ForCausalLM, float32, eager attention, no cache for the "
                    "recorded forward, positions 0..T-1, weights = exactly the checkpoint values as F32 "
                    "(BF16 widened; FP8 = float(Q)*scale_inv in F32)",
            "hidden": "model.model(...).last_hidden_state, i.e. after model.norm (the lm_head input)",
            "layer": "output of decoder layer l (residual stream, before the final norm), forward hook",
            "router": "hook on mlp.gate (TopkRouter) outputs (router_logits, topk_weights, topk_indices); "
                      "ids sorted ascending, weights (after norm_topk_prob and routed_scaling_factor) in the "
                      "same order",
            "mtp": "MtpReference in make_fixtures.py (§7.1): enorm(embed(t_{i+1})) first, hnorm(h_i) second, "
                   "h_i = post-model.norm hidden, eh_proj, transformers decoder layer with layer_idx = "
                   "num_hidden_layers (MoE), causal over entries i = 0..T-2 at RoPE positions i, "
                   "shared_head.norm then shared_head.head; the MTP layer's own embed/head copies",
            "greedy": "model.generate(do_sample=False, max_new_tokens=16, no EOS stop) after the prompt; "
                      "equals the argmax chain of one uncached forward",
        },
        "rope": {"inv_freq": [float(v) for v in rope_mod.inv_freq],
                 "attention_factor_cos_sin": float(rope_mod.attention_scaling),
                 "softmax_scale": float(model.model.layers[0].self_attn.scaling),
                 "rope_interleave": bool(getattr(hc, "rope_interleave", True)),
                 "hf_rope_parameters": dict(hc.rope_parameters)},
        "tie_rules": {"logit_top2_margin_min": LOGIT_MARGIN, "router_boundary_margin_min": ROUTER_MARGIN,
                      "checked": "main logits at prompt and generated positions, MTP logits, router group and "
                                 "expert boundaries (selection scores: softmax scores, or sigmoid+bias) in the "
                                 "main MoE layers (prompt and generated positions) and the MTP block"},
        "margins_min": mins,
        "stats": {"max_abs_logit": max_logit, "logit_std": logit_std,
                  "expert_use_counts_per_moe_layer": {str(k): v for k, v in usage_all.items()}},
        "checks": {
            "model_safetensors_reread_equals_reference": file_matches_reference,
            "hf_from_pretrained_reload": reload,
            "hf_generic_MtpModel": hf_mtp,
            "doc_reference_float64": doc,
        },
        "hf_behaviour": HF_NOTES,
        "golden_tensors": {k: {"dtype": "F32" if v.dtype == torch.float32 else "I32", "shape": list(v.shape)}
                           for k, v in sorted(golden.items())},
        "files": {},
    }
    for fn in ("config.json", "model.safetensors", "golden.safetensors"):
        manifest["files"][fn] = {"bytes": (case_dir / fn).stat().st_size, "sha256": sha256(case_dir / fn)}
    (case_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(f.stat().st_size for f in case_dir.iterdir())
    print(f"{name:16s} {size / 1e6:6.3f} MB  max|logit| {max_logit:6.2f}  std {logit_std:5.2f}  "
          f"min margins: logit {mins['logit']:.4f} mtp {mins['mtp_logit']:.4f} greedy {mins['greedy_logit']:.4f}"
          f"  router {min(mins['router'], mins['greedy_router']):.2e} mtp-router {mins['mtp_router']:.2e}  "
          f"attempts {[p['attempts'] for p in prompt_info]}")
    print(f"{'':16s} reload {reload.get('max_abs_logit_diff_vs_reference', reload.get('error'))}  "
          f"hf-mtp {hf_mtp.get('max_abs_mtp_logit_diff_vs_reference', hf_mtp.get('error'))}  "
          f"doc64 logits {doc['max_abs_logit_diff']:.2e} mtp {doc['max_abs_mtp_logit_diff']:.2e}  "
          f"experts used {[sum(1 for c in u if c) for u in usage_all.values()]}")
    return size


def main(argv):
    for k, v in PINNED.items():
        have = {"torch": torch.__version__, "transformers": transformers.__version__,
                "safetensors": safetensors.__version__}[k]
        if not have.startswith(v):
            print(f"warning: {k} {have} differs from the pinned {v}; outputs may differ", file=sys.stderr)
    import logging
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = argv[1:] or list(CASES)
    for n in names:
        if n not in CASES:
            sys.exit(f"unknown case {n}; known: {', '.join(CASES)}")
    total = 0
    for n in names:
        total += run_case(n, CASES[n])
    print(f"total {total / 1e6:.3f} MB in {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv)
