"""DeepSeek-V3 architecture in plain PyTorch, for training the Cetus demo model.

Module names equal the Hugging Face checkpoint names (per-expert form), so `state_dict()` is
the checkpoint: MLA with q-LoRA and YaRN, dense first layers, DeepSeekMoE (sigmoid scores,
e_score_correction_bias used only for choosing, noaux_tc group-limited top-k, one shared
expert), and the MTP module at index num_hidden_layers. Formulas: shared/docs/
deepseek-architecture.md §3-§7. Inference is the engine's job; this file only trains.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# Size presets. "auto" in train.py picks among these from a measured tokens/s.
def base_config(**over):
    c = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": 4096, "hidden_size": 192, "intermediate_size": 512,
        "moe_intermediate_size": 96, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": 96, "kv_lora_rank": 64,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
        "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 2,
        "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_nextn_predict_layers": 1,
        "rope_theta": 10000.0, "max_position_embeddings": 2048,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        "torch_dtype": "bfloat16", "use_cache": True,
    }
    c.update(over)
    return c


PRESETS = {
    # ~4 M params: the 2-core CPU model (doc §7.1 (a)), sized down after measuring ~640 tok/s
    # for a 6.2 M-param d=192/4-layer variant on a shared 2-core machine.
    "cpu": base_config(hidden_size=160, intermediate_size=432, moe_intermediate_size=80,
                       num_hidden_layers=3, q_lora_rank=80, kv_lora_rank=48,
                       qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=24),
    # ~9 M params: a longer CPU run or a small GPU run
    "cpu-large": base_config(hidden_size=256, intermediate_size=640, moe_intermediate_size=128,
                             num_hidden_layers=5, q_lora_rank=128, kv_lora_rank=96),
    # ~15 M params, 8k vocab: the GPU model of doc §7.2 (b), sized so the stored file (with the
    # MTP layer's own copies of embedding and head, as V3 stores them) is 38 MB in bf16, under
    # the 40 MB the bundled model may take.
    "gpu": base_config(vocab_size=8192, hidden_size=256, intermediate_size=640,
                       moe_intermediate_size=112, num_hidden_layers=6, num_attention_heads=5,
                       num_key_value_heads=5, q_lora_rank=128, kv_lora_rank=64,
                       qk_nope_head_dim=48, qk_rope_head_dim=16, v_head_dim=48,
                       n_routed_experts=16, num_experts_per_tok=2, n_group=4, topk_group=2),
}


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def yarn_get_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_tables(cfg, max_pos, device):
    """inv_freq (§4.2, YaRN) and the cos/sin magnitude; returns cos, sin [max_pos, d_r/2]."""
    dim, base = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv = 1.0 / pos_freqs
    mag = 1.0
    rs = cfg.get("rope_scaling")
    if rs:
        factor = rs["factor"]
        orig = rs["original_max_position_embeddings"]
        bf, bs = rs.get("beta_fast", 32), rs.get("beta_slow", 1)

        def cd(r):
            return dim * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))
        low, high = max(math.floor(cd(bf)), 0), min(math.ceil(cd(bs)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp
        inv = (1.0 / (factor * pos_freqs)) * (1 - keep) + inv * keep
        m, mad = rs.get("mscale"), rs.get("mscale_all_dim")
        mag = yarn_get_mscale(factor, m) / yarn_get_mscale(factor, mad) if m and mad else \
            yarn_get_mscale(factor)
    ang = torch.arange(max_pos, dtype=torch.float32)[:, None] * inv[None, :]
    return (ang.cos() * mag).to(device), (ang.sin() * mag).to(device)


def apply_rope(x, cos, sin):
    """Adjacent-pair rotation (§4.3). x [..., T, d_r]; cos/sin [B, T, d_r/2] broadcastable."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    y1 = x1 * cos - x2 * sin
    y2 = x1 * sin + x2 * cos
    return torch.stack((y1, y2), -1).flatten(-2)


def softmax_scale(cfg):
    d_qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    s = d_qk ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and rs.get("mscale_all_dim"):
        s *= yarn_get_mscale(rs["factor"], rs["mscale_all_dim"]) ** 2
    return s


class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nh, self.dn, self.dr, self.dv = nh, cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.dc = cfg["kv_lora_rank"]
        dqk = self.dn + self.dr
        self.q_a_proj = nn.Linear(H, cfg["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"], 1e-6)
        self.q_b_proj = nn.Linear(cfg["q_lora_rank"], nh * dqk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(H, self.dc + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.dc, 1e-6)
        self.kv_b_proj = nn.Linear(self.dc, nh * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(nh * self.dv, H, bias=False)
        self.scale = softmax_scale(cfg)

    def forward(self, a, cos, sin, mask):
        B, T, _ = a.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(a)))
        q = q.view(B, T, self.nh, self.dn + self.dr).transpose(1, 2)        # [B, nh, T, dqk]
        q_nope, q_pe = q.split([self.dn, self.dr], -1)
        kv = self.kv_a_proj_with_mqa(a)                                        # [B, T, dc+dr]
        c_kv, k_pe = kv.split([self.dc, self.dr], -1)
        q_pe = apply_rope(q_pe, cos[:, None], sin[:, None])
        k_pe = apply_rope(k_pe[:, None], cos[:, None], sin[:, None])           # [B, 1, T, dr]
        u = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(B, T, self.nh, self.dn + self.dv)
        u = u.transpose(1, 2)
        k_nope, v = u.split([self.dn, self.dv], -1)
        Q = torch.cat([q_nope, q_pe], -1)
        K = torch.cat([k_nope, k_pe.expand(B, self.nh, T, self.dr)], -1)
        o = F.scaled_dot_product_attention(Q, K, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nh * self.dv))


class MLP(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E = cfg["n_routed_experts"]
        self.weight = nn.Parameter(torch.empty(E, cfg["hidden_size"]))
        self.register_buffer("e_score_correction_bias", torch.zeros(E, dtype=torch.float32))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.E, self.K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        self.G, self.TG = cfg["n_group"], cfg["topk_group"]
        self.scaling, self.norm = cfg["routed_scaling_factor"], cfg["norm_topk_prob"]
        H, I = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList([MLP(H, I) for _ in range(self.E)])
        self.shared_experts = MLP(H, I * cfg["n_shared_experts"])
        self.last = None  # (expert loads [E], seq-balance loss) of the last forward

    def forward(self, x, valid=None):
        B, T, H = x.shape
        xf = x.reshape(-1, H)
        z = F.linear(xf.float(), self.gate.weight.float())                    # [N, E]
        s = z.sigmoid()
        with torch.no_grad():                                                  # §6.2 noaux_tc
            c = s + self.gate.e_score_correction_bias
            gs = c.view(-1, self.G, self.E // self.G).topk(2, -1).values.sum(-1)   # [N, G]
            gidx = gs.topk(self.TG, -1).indices
            gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
            emask = gmask[:, :, None].expand(-1, -1, self.E // self.G).reshape(-1, self.E)
            c = c.masked_fill(emask == 0, float("-inf"))
            idx = c.topk(self.K, -1).indices                                   # [N, K]
        w = s.gather(1, idx)
        if self.norm and self.K > 1:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = (w * self.scaling).to(x.dtype)
        out = torch.zeros_like(xf)
        flat = idx.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.E)
        tok = order // self.K
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            t = tok[start:start + n]
            ww = w.reshape(-1)[order[start:start + n]]
            out.index_add_(0, t, self.experts[e](xf[t]) * ww[:, None])
            start += n
        out = out + self.shared_experts(xf)
        # Loads for the bias update and the sequence-wise balance loss (§6.4).
        sel = torch.zeros(B * T, self.E, device=x.device).scatter_(1, idx, 1.0)
        if valid is not None:
            vm = valid.reshape(-1, 1).float()
            sel = sel * vm
        else:
            vm = torch.ones(B * T, 1, device=x.device)
        sp = s / s.sum(-1, keepdim=True)
        ntok = vm.view(B, T).sum(1).clamp(min=1)                              # [B]
        f = sel.view(B, T, self.E).sum(1) * (self.E / (self.K * ntok[:, None]))
        P = (sp * vm).view(B, T, self.E).sum(1) / ntok[:, None]
        bal = (f.detach() * P).sum(-1).mean()
        self.last = (sel.sum(0).detach(), bal)
        return out.view(B, T, H)


class Block(nn.Module):
    def __init__(self, cfg, moe):
        super().__init__()
        H, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.mlp = MoE(cfg) if moe else MLP(H, cfg["intermediate_size"])
        self.moe = moe

    def forward(self, x, cos, sin, mask, valid):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        b = self.post_attention_layernorm(x)
        return x + (self.mlp(b, valid) if self.moe else self.mlp(b))


class SharedHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)


class MTPLayer(Block):
    """Block + enorm/hnorm/eh_proj/embed_tokens/shared_head (§2.3, §7.1)."""

    def __init__(self, cfg):
        super().__init__(cfg, moe=cfg["num_hidden_layers"] >= cfg["first_k_dense_replace"])
        H, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.enorm = RMSNorm(H, eps)
        self.hnorm = RMSNorm(H, eps)
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], H)
        self.shared_head = SharedHead(cfg)


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        L = cfg["num_hidden_layers"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Block(cfg, l >= cfg["first_k_dense_replace"]) for l in range(L)]
                                    + [MTPLayer(cfg) for _ in range(cfg["num_nextn_predict_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class DeepseekV3(nn.Module):
    def __init__(self, cfg, max_pos=1024):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        # The MTP module shares embedding and output head with the main model (paper §2.2);
        # the checkpoint stores copies under the MTP names (see checkpoint_state()).
        mtp = self.model.layers[cfg["num_hidden_layers"]]
        mtp.embed_tokens.weight = self.model.embed_tokens.weight
        mtp.shared_head.head.weight = self.lm_head.weight
        cos, sin = rope_tables(cfg, max_pos, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        std = cfg["initializer_range"]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0, std)
            elif isinstance(m, Gate):
                nn.init.normal_(m.weight, 0, std)

    def moe_layers(self):
        return [l.mlp for l in self.model.layers if l.moe]

    def forward(self, ids, pos, doc):
        """ids, pos, doc [B, T] (doc = document index inside a packed row; attention is
        block-diagonal causal, positions restart at 0 for every document).
        Returns main logits [B, T, V] and MTP logits [B, T-1, V] (entry i predicts t_{i+2})."""
        L = self.cfg["num_hidden_layers"]
        B, T = ids.shape
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]                    # [B, T, dr/2]
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        mask = (causal[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]  # [B, 1, T, T]
        valid = torch.ones_like(ids, dtype=torch.bool)
        x = self.model.embed_tokens(ids)
        for l in range(L):
            x = self.model.layers[l](x, cos, sin, mask, valid)
        h = self.model.norm(x)
        logits = self.lm_head(h)
        mtp = self.model.layers[L]
        e = mtp.enorm(self.model.embed_tokens(ids[:, 1:]))
        g = mtp.hnorm(h[:, :-1])
        y = mtp.eh_proj(torch.cat([e, g], -1))
        y = mtp(y, cos[:, :-1], sin[:, :-1], mask[:, :, :-1, :-1], valid[:, :-1])
        mlogits = mtp.shared_head.head(mtp.shared_head.norm(y))
        return logits, mlogits


def checkpoint_state(model: DeepseekV3, dtype=torch.bfloat16):
    """HF checkpoint tensors (exact V3 names, per-expert form, MTP copies of embed/head)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {}
    for k, v in sd.items():
        if k.endswith("e_score_correction_bias"):
            out[k] = v.float().contiguous()
        else:
            out[k] = v.to(dtype).contiguous()
    return out
