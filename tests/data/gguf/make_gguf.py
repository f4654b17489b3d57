#!/usr/bin/env python3
"""GGUF fixtures for test_gguf, written with llama.cpp's own `gguf` Python package
(PyPI: gguf, with numpy and safetensors), never with Cetus code:

- v2-greedy.gguf: tests/data/golden/v2-greedy as llama.cpp's converter writes a
  DeepSeek model (architecture deepseek2, F32): kv_b_proj split into attn_k_b
  (transposed per head) and attn_v_b, the routed experts stacked, no MTP layer.
  The engine must give transformers' logits of golden.safetensors.
- v2-greedy-both.gguf: v2-greedy.gguf with attn_kv_b kept beside attn_k_b / attn_v_b.
- v3-noaux.gguf: tests/data/golden/v3-noaux with the older single attn_kv_b, its
  MTP layer kept as blk.3.nextn.* (nextn_predict_layers = 1), sigmoid gating with
  the correction bias and expert groups. GGUF keeps one YaRN mscale, so its twin
  is the folder with mscale = mscale_all_dim (the test writes that config).
- v2-greedy-q.gguf: v2-greedy with block-quantised matrices (Q8_0, Q4_0, Q4_1,
  Q5_0, Q5_1, quantised by gguf), and v2-greedy-q-twin/: the same weights as
  gguf.quants.dequantize gives them, in float32 (the engine reads the blocks in
  place with those values; a kv_b_proj merged from two quantised halves would be
  rounded to bfloat16, as the engine expands it), in a safetensors folder.
- split/v2-greedy-q-0000{1,2,3}-of-00003.gguf: v2-greedy-q.gguf in three parts
  (gguf's split writer, as llama.cpp's gguf-split names and marks them).
- dequant.gguf / dequant.safetensors: one tensor per readable ggml type with
  random blocks (scales kept finite), and gguf.quants.dequantize's floats.
- v3-tokenizer.gguf: DeepSeek-V3's vocabulary (tests/data/tokenizer/deepseek-v3)
  as the converter's get_vocab_base + SpecialVocab write it: added tokens that are
  special or look special as CONTROL, others USER_DEFINED, ids past the tokenizer
  up to config vocab_size 129280 as UNUSED "[PADn]".
- golden_deepseek_llm.json: the ids HF tokenizers (PyPI: tokenizers) gives the valid
  UTF-8 cases of tests/data/tokenizer/golden_v3.json with DeepSeek-V3's vocabulary and
  DeepSeek-LLM's pre-tokenizer (V2's, GGUF "deepseek-llm"; taken from the engine's
  gguf.cpp, whose pattern text was checked against llama.cpp's list): the engine must
  split and merge as HF tokenizers does for such files. (--llm-golden writes only this.)
- tests/fuzz/corpus/gguf/: small valid files, the seeds of the fuzz_gguf target.

Run from the repository root: python3 tests/data/gguf/make_gguf.py
For benchmarks (not committed): python3 tests/data/gguf/make_gguf.py --bench q4_k_m|bf16 FILE.gguf
writes cetus-cli bench's random model medium-cpu in that form; --bench v2-lite FILE.gguf [LAYERS]
writes DeepSeek-V2-Lite's shapes in BF16 with V3's vocabulary, a file llama.cpp also runs (and
its llama-quantize turns into the quantised forms users download).
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests/data/gguf"
GOLDEN = ROOT / "tests/data/golden"


def write_config(w: gguf.GGUFWriter, c: dict, nextn: int, mla_split: bool):
    layers = c["num_hidden_layers"]
    w.add_block_count(layers + nextn)
    if nextn:
        w.add_uint32("deepseek2.nextn_predict_layers", nextn)
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(1 if mla_split else c["num_attention_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_expert_used_count(c["num_experts_per_tok"])
    w.add_leading_dense_block_count(c["first_k_dense_replace"])
    w.add_vocab_size(c["vocab_size"])
    if c.get("q_lora_rank"):
        w.add_q_lora_rank(c["q_lora_rank"])
    w.add_kv_lora_rank(c["kv_lora_rank"])
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    if mla_split:  # current converter
        w.add_key_length(c["kv_lora_rank"] + c["qk_rope_head_dim"])
        w.add_value_length(c["kv_lora_rank"])
        w.add_key_length_mla(qk)
        w.add_value_length_mla(c["v_head_dim"])
    else:  # older files
        w.add_key_length(qk)
        w.add_value_length(c["v_head_dim"])
    w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    w.add_expert_count(c["n_routed_experts"])
    w.add_expert_shared_count(c["n_shared_experts"])
    w.add_expert_weights_scale(c["routed_scaling_factor"])
    if c.get("norm_topk_prob"):
        w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if c["scoring_func"] == "sigmoid"
                             else gguf.ExpertGatingFuncType.SOFTMAX)
    if c.get("n_group", 1) > 1:
        w.add_expert_group_count(c["n_group"])
        w.add_expert_group_used_count(c["topk_group"])
    w.add_rope_dimension_count(c["qk_rope_head_dim"])
    rs = c["rope_scaling"]
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(rs["factor"])
    w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    w.add_rope_scaling_yarn_beta_fast(rs["beta_fast"])
    w.add_rope_scaling_yarn_beta_slow(rs["beta_slow"])
    w.add_rope_scaling_yarn_log_mul(0.1 * rs["mscale_all_dim"])
    w.add_bos_token_id(c["bos_token_id"])
    w.add_eos_token_id(c["eos_token_id"])


BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.kv_b_proj.weight": "attn_kv_b.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
    "eh_proj.weight": "nextn.eh_proj.weight",
    "embed_tokens.weight": "nextn.embed_tokens.weight",
    "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight",
    "shared_head.head.weight": "nextn.shared_head_head.weight",
    "shared_head.norm.weight": "nextn.shared_head_norm.weight",
}


def gguf_tensors(c: dict, w8: dict, nextn: int, mla_split: bool):
    """(gguf name, float32 array in torch order) as the converter would emit them."""
    out = [("token_embd.weight", w8["model.embed_tokens.weight"]),
           ("output_norm.weight", w8["model.norm.weight"]),
           ("output.weight", w8["lm_head.weight"])]
    E = c["n_routed_experts"]
    for l in range(c["num_hidden_layers"] + nextn):
        p = f"model.layers.{l}."
        names = sorted(k[len(p):] for k in w8 if k.startswith(p))
        for n in names:
            if ".experts." in n:
                continue
            t = w8[p + n]
            if n == "self_attn.kv_b_proj.weight" and mla_split:
                h, dn, dv = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
                kv = t.reshape(h, dn + dv, t.shape[-1])
                out.append((f"blk.{l}.attn_k_b.weight", np.ascontiguousarray(kv[:, :dn, :].transpose(0, 2, 1))))
                out.append((f"blk.{l}.attn_v_b.weight", np.ascontiguousarray(kv[:, dn:, :])))
                if mla_split != "both":
                    continue
            out.append((f"blk.{l}.{BLOCK[n]}", t))
        if any(".experts.0." in n for n in names):
            for proj, g in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
                out.append((f"blk.{l}.{g}.weight",
                            np.stack([w8[f"{p}mlp.experts.{e}.{proj}.weight"] for e in range(E)])))
    return out


def bf16_round(a: np.ndarray) -> np.ndarray:
    b = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
    return b.astype(np.uint32).view(np.float32)


def save_mixed(tensors: dict, bf16: set, path: Path):
    """A safetensors file with the named tensors as BF16 (exact: their values are already
    bf16-rounded) and the rest as F32; numpy has no bfloat16, so the file is written here."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if name in bf16:
            assert np.array_equal(a, bf16_round(a)), name
            raw = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": "BF16" if name in bf16 else "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for b in blobs:
            f.write(b)


def convert(case: str, out_name: str, nextn: int, mla_split: bool, quant: dict | None = None, twin: str | None = None,
            split_max_tensors: int = 0):
    src = GOLDEN / case
    c = json.loads((src / "config.json").read_text())
    w8 = load_file(src / "model.safetensors")
    (OUT / out_name).parent.mkdir(exist_ok=True)
    w = gguf.GGUFWriter(OUT / out_name, "deepseek2", split_max_tensors=split_max_tensors)
    write_config(w, c, nextn, mla_split)
    twin_tensors = {}
    quantised = set()
    for name, t in gguf_tensors(c, w8, nextn, mla_split):
        t = t.astype(np.float32)
        qtype = None
        if quant and t.ndim >= 2:
            for key, qt in quant.items():
                if key in name and t.shape[-1] % 32 == 0:
                    qtype = qt
                    break
        if qtype is None:
            w.add_tensor(name, t)
            twin_tensors[name] = t
        else:
            q = gguf.quants.quantize(t, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
            twin_tensors[name] = gguf.quants.dequantize(q, qtype).reshape(t.shape).astype(np.float32)
            quantised.add(name)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if twin:
        # Back to checkpoint names and layout: the folder the GGUF file must equal.
        inv = {v: k for k, v in BLOCK.items()}
        hf = {"model.embed_tokens.weight": twin_tensors["token_embd.weight"],
              "model.norm.weight": twin_tensors["output_norm.weight"],
              "lm_head.weight": twin_tensors["output.weight"]}
        # Stored as BF16 where the engine expands to BF16 (kv_b_proj when both halves are
        # quantised), so that the engine runs the same products on both; quantised matrices
        # as their float32 values, which the engine's block decoders must give.
        bf16 = set()
        for name, t in twin_tensors.items():
            if not name.startswith("blk."):
                continue
            l, rest = name[4:].split(".", 1)
            p = f"model.layers.{l}."
            if rest.endswith("_exps.weight"):
                proj = {"ffn_gate_exps.weight": "gate_proj", "ffn_up_exps.weight": "up_proj",
                        "ffn_down_exps.weight": "down_proj"}[rest]
                for e in range(t.shape[0]):
                    hf[f"{p}mlp.experts.{e}.{proj}.weight"] = np.ascontiguousarray(t[e])
            elif rest == "attn_k_b.weight":
                v_name = f"blk.{l}.attn_v_b.weight"
                v = twin_tensors[v_name]
                hf[p + "self_attn.kv_b_proj.weight"] = np.ascontiguousarray(
                    np.concatenate([t.transpose(0, 2, 1), v], axis=1).reshape(-1, t.shape[1]))
                if name in quantised and v_name in quantised:
                    hf[p + "self_attn.kv_b_proj.weight"] = bf16_round(hf[p + "self_attn.kv_b_proj.weight"])
                    bf16.add(p + "self_attn.kv_b_proj.weight")
            elif rest == "attn_v_b.weight":
                continue
            else:
                hf[p + inv[rest]] = np.ascontiguousarray(t)
        d = OUT / twin
        d.mkdir(exist_ok=True)
        tc = dict(c)
        tc["num_nextn_predict_layers"] = nextn
        (d / "config.json").write_text(json.dumps(tc, indent=2) + "\n")
        save_mixed(hf, bf16, d / "model.safetensors")


def dequant_fixture():
    rng = np.random.default_rng(2026)
    types = [Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K,
             Q.IQ4_NL, Q.IQ4_XS]
    w = gguf.GGUFWriter(OUT / "dequant.gguf", "deepseek2")
    expected = {}
    for qt in types:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        n_blocks = 6
        if qt in (Q.F16, Q.BF16):
            x = rng.standard_normal(256 * 2).astype(np.float32)
            q = gguf.quants.quantize(x.reshape(2, 256), qt)
        else:
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            # The f16 scale fields at their offsets: finite values of either sign.
            f16_at = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
                      Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
                      Q.IQ4_NL: [0], Q.IQ4_XS: [0]}[qt]
            for off in f16_at:
                vals = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
                raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
            q = raw.reshape(2, n_blocks // 2 * size)
        name = f"t.{qt.name}"
        w.add_tensor(name, q, raw_dtype=qt)
        expected[name] = gguf.quants.dequantize(q, qt).astype(np.float32).reshape(-1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(expected, OUT / "dequant.safetensors")


def deepseek_llm_golden():
    import base64
    import re
    import tokenizers
    src = (ROOT / "engine/src/gguf.cpp").read_text(encoding="utf-8")
    pre = re.search(r'k_deepseek_llm_pre = R"json\((.*?)\)json"', src, re.S).group(1)
    tj = json.loads((ROOT / "tests/data/tokenizer/deepseek-v3/tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"] = json.loads(pre)
    tok = tokenizers.Tokenizer.from_str(json.dumps(tj))
    golden = json.loads((ROOT / "tests/data/tokenizer/golden_v3.json").read_text(encoding="utf-8"))
    cases = []
    for c in golden["cases"]:
        if not c["valid_utf8"]:
            continue
        text = base64.b64decode(c["bytes"]).decode("utf-8")
        cases.append({"name": c["name"], "ids": tok.encode(text, add_special_tokens=False).ids})
    out = {"manifest": {"generator": "tests/data/gguf/make_gguf.py", "tokenizers": tokenizers.__version__,
                        "vocabulary": "tests/data/tokenizer/deepseek-v3", "cases": "tests/data/tokenizer/golden_v3.json"},
           "cases": cases}
    (OUT / "golden_deepseek_llm.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")


def looks_special(t: str) -> bool:
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<｜") and t.endswith("｜>")))


def add_v3_vocabulary(w: gguf.GGUFWriter, vocab_size: int = 129280, special_ids: bool = True):
    """DeepSeek-V3's vocabulary (tests/data/tokenizer/deepseek-v3) as the converter's get_vocab_base +
    SpecialVocab write it: added tokens that are special or look special as CONTROL, others
    USER_DEFINED, ids past the tokenizer up to vocab_size (config's 129280) as UNUSED "[PADn]"."""
    d = ROOT / "tests/data/tokenizer/deepseek-v3"
    tj = json.loads((d / "tokenizer.json").read_text())
    tc = json.loads((d / "tokenizer_config.json").read_text())
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            a = added[i]
            t = a["content"]
            if a["special"] or looks_special(t):
                types.append(gguf.TokenType.CONTROL)
            else:
                t = t.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
            tokens.append(t)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_types(types)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_token_merges(merges)
    ids = {t: i for i, t in enumerate(tokens)}
    bos = tc["bos_token"]["content"] if isinstance(tc["bos_token"], dict) else tc["bos_token"]
    eos = tc["eos_token"]["content"] if isinstance(tc["eos_token"], dict) else tc["eos_token"]
    if special_ids:
        w.add_bos_token_id(ids[bos])
        w.add_eos_token_id(ids[eos])
    if "add_bos_token" in tc:
        w.add_add_bos_token(bool(tc["add_bos_token"]))
    if tc.get("chat_template"):
        w.add_chat_template(tc["chat_template"])


def tokenizer_fixture():
    w = gguf.GGUFWriter(OUT / "v3-tokenizer.gguf", "deepseek2")
    add_v3_vocabulary(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-character map: the 256 single-byte tokens of a byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def fuzz_seeds():
    """Small valid files for tests/fuzz/fuzz_gguf: a model's metadata with a few tensors,
    a small byte-level vocabulary with DeepSeek-V3's specials and chat template, and
    the block formats (dequant.gguf)."""
    d = ROOT / "tests/fuzz/corpus/gguf"
    d.mkdir(parents=True, exist_ok=True)
    for case, nextn, split in (("v2-greedy", 0, True), ("v3-noaux", 1, False)):
        c = json.loads((GOLDEN / case / "config.json").read_text())
        w = gguf.GGUFWriter(d / f"{case}-metadata.gguf", "deepseek2")
        write_config(w, c, nextn, split)
        w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
        w.add_tensor("blk.0.attn_k_b.weight", gguf.quants.quantize(np.ones((2, 64), np.float32), Q.Q8_0),
                     raw_dtype=Q.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    tc = json.loads((ROOT / "tests/data/tokenizer/deepseek-v3/tokenizer_config.json").read_text())
    tokens = byte_tokens() + ["Ġt", "he", "Ġthe", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                              "<｜User｜>", "<｜Assistant｜>", "<think>", "[PAD]"]
    types = [gguf.TokenType.NORMAL] * 259 + [gguf.TokenType.CONTROL] * 4 + [gguf.TokenType.USER_DEFINED,
                                                                            gguf.TokenType.UNUSED]
    w = gguf.GGUFWriter(d / "tokenizer.gguf", "deepseek2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(259)
    w.add_eos_token_id(260)
    w.add_add_bos_token(True)
    w.add_chat_template(tc["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (d / "types.gguf").write_bytes((OUT / "dequant.gguf").read_bytes())


# The random model "medium-cpu" of cetus-cli bench (engine/src/random_model.cpp), for --bench.
MEDIUM_CPU = {"model_type": "deepseek_v3", "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048,
              "moe_intermediate_size": 384, "num_hidden_layers": 8, "num_attention_heads": 12, "q_lora_rank": 256,
              "kv_lora_rank": 192, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
              "n_routed_experts": 32, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
              "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True,
              "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "rope_theta": 10000.0,
              "max_position_embeddings": 16384,
              "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
              "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1}


def random_checkpoint(c: dict, rng) -> dict:
    """Random weights of config c under their checkpoint names (no MTP layer)."""
    H, I, mI, E = c["hidden_size"], c["intermediate_size"], c["moe_intermediate_size"], c["n_routed_experts"]
    nh, dn, dr, dv = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    ql, kl = c["q_lora_rank"], c["kv_lora_rank"]

    def m(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * shape[-1] ** -0.5).astype(np.float32)

    w = {"model.embed_tokens.weight": m(c["vocab_size"], H), "model.norm.weight": np.ones(H, np.float32),
         "lm_head.weight": m(c["vocab_size"], H)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w |= {p + "input_layernorm.weight": np.ones(H, np.float32),
              p + "post_attention_layernorm.weight": np.ones(H, np.float32),
              p + "self_attn.q_a_proj.weight": m(ql, H), p + "self_attn.q_a_layernorm.weight": np.ones(ql, np.float32),
              p + "self_attn.q_b_proj.weight": m(nh * (dn + dr), ql),
              p + "self_attn.kv_a_proj_with_mqa.weight": m(kl + dr, H),
              p + "self_attn.kv_a_layernorm.weight": np.ones(kl, np.float32),
              p + "self_attn.kv_b_proj.weight": m(nh * (dn + dv), kl), p + "self_attn.o_proj.weight": m(H, nh * dv)}
        if l < c["first_k_dense_replace"]:
            w |= {p + "mlp.gate_proj.weight": m(I, H), p + "mlp.up_proj.weight": m(I, H),
                  p + "mlp.down_proj.weight": m(H, I)}
            continue
        ns = c["n_shared_experts"]
        w |= {p + "mlp.gate.weight": m(E, H), p + "mlp.gate.e_score_correction_bias": np.zeros(E, np.float32),
              p + "mlp.shared_experts.gate_proj.weight": m(mI * ns, H),
              p + "mlp.shared_experts.up_proj.weight": m(mI * ns, H),
              p + "mlp.shared_experts.down_proj.weight": m(H, mI * ns)}
        for e in range(E):
            w |= {f"{p}mlp.experts.{e}.gate_proj.weight": m(mI, H), f"{p}mlp.experts.{e}.up_proj.weight": m(mI, H),
                  f"{p}mlp.experts.{e}.down_proj.weight": m(H, mI)}
    return w


def random_blocks(qt, shape, rng) -> np.ndarray:
    """Random K-quant blocks (gguf cannot quantise to K-quants) with small finite scales."""
    block, size = gguf.GGML_QUANT_SIZES[qt]
    n = int(np.prod(shape)) // block
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off, scale in {Q.Q4_K: [(0, 2e-3), (2, 2e-3)], Q.Q6_K: [(208, 5e-4)]}[qt]:
        raw[:, off:off + 2] = np.full(n, scale, np.float16).view(np.uint8).reshape(n, 2)
    return raw.reshape(*shape[:-1], shape[-1] // block * size)


def bench_model(path: Path, kind: str):
    """medium-cpu's shapes, random weights, as a Q4_K_M-like mix (Q4_K where rows are whole 256-blocks,
    else Q8_0; the output head Q6_K) or all BF16: the same model twice for cetus-cli bench's load_s."""
    rng = np.random.default_rng(1)
    c = MEDIUM_CPU
    w = gguf.GGUFWriter(path, "deepseek2")
    write_config(w, c, 0, True)
    for name, t in gguf_tensors(c, random_checkpoint(c, rng), 0, True):
        if t.ndim == 1:
            w.add_tensor(name, t)
        elif kind == "bf16":
            w.add_tensor(name, gguf.quants.quantize(t, Q.BF16), raw_dtype=Q.BF16)
        elif name == "output.weight":
            w.add_tensor(name, random_blocks(Q.Q6_K, t.shape, rng), raw_dtype=Q.Q6_K)
        elif t.shape[-1] % 256 == 0:
            w.add_tensor(name, random_blocks(Q.Q4_K, t.shape, rng), raw_dtype=Q.Q4_K)
        else:
            w.add_tensor(name, gguf.quants.quantize(t, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# DeepSeek-V2-Lite's config.json, for --bench v2-lite (the vocabulary is V3's 129,280 tokens, not
# V2's 102,400: no machine here has V2's tokenizer, and llama.cpp needs one in the file).
V2_LITE = {"model_type": "deepseek_v2", "vocab_size": 129280, "hidden_size": 2048, "intermediate_size": 10944,
           "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16, "q_lora_rank": None,
           "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
           "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1,
           "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": False,
           "routed_scaling_factor": 1.0, "first_k_dense_replace": 1, "rope_theta": 10000.0,
           "max_position_embeddings": 163840,
           "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
           "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1}


def v2_lite_shapes(c: dict):
    """(gguf name, shape in torch order) of V2-Lite's tensors as the current converter writes them:
    kv_b_proj split into attn_k_b and attn_v_b, the routed experts stacked, the router in F32."""
    H, I, mI, E, V = (c["hidden_size"], c["intermediate_size"], c["moe_intermediate_size"], c["n_routed_experts"],
                      c["vocab_size"])
    nh, dn, dr, dv, kl = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                          c["kv_lora_rank"])
    out = [("token_embd.weight", (V, H)), ("output_norm.weight", (H,)), ("output.weight", (V, H))]
    for l in range(c["num_hidden_layers"]):
        b = f"blk.{l}."
        out += [(b + "attn_norm.weight", (H,)), (b + "attn_q.weight", (nh * (dn + dr), H)),
                (b + "attn_kv_a_mqa.weight", (kl + dr, H)), (b + "attn_kv_a_norm.weight", (kl,)),
                (b + "attn_k_b.weight", (nh, kl, dn)), (b + "attn_v_b.weight", (nh, dv, kl)),
                (b + "attn_output.weight", (H, nh * dv)), (b + "ffn_norm.weight", (H,))]
        if l < c["first_k_dense_replace"]:
            out += [(b + "ffn_gate.weight", (I, H)), (b + "ffn_up.weight", (I, H)), (b + "ffn_down.weight", (H, I))]
            continue
        sI = mI * c["n_shared_experts"]
        out += [(b + "ffn_gate_inp.weight", (E, H)), (b + "ffn_gate_shexp.weight", (sI, H)),
                (b + "ffn_up_shexp.weight", (sI, H)), (b + "ffn_down_shexp.weight", (H, sI)),
                (b + "ffn_gate_exps.weight", (E, mI, H)), (b + "ffn_up_exps.weight", (E, mI, H)),
                (b + "ffn_down_exps.weight", (E, H, mI))]
    return out


def v2_lite_bench(path: Path, layers: int):
    """DeepSeek-V2-Lite's shapes (its first `layers` layers), random BF16 weights with V3's vocabulary,
    written tensor by tensor (the whole model is 31 GB): the common input of cetus-cli bench and
    llama.cpp's llama-bench, or of llama-quantize for their quantised forms. Norms are ones, the
    router F32; a matrix's values have random signs and mantissas and magnitudes in [2^-9, 2^-5)."""
    c = dict(V2_LITE, num_hidden_layers=layers)
    w = gguf.GGUFWriter(path, "deepseek2")
    write_config(w, c, 0, True)
    add_v3_vocabulary(w, c["vocab_size"], special_ids=False)
    shapes = v2_lite_shapes(c)
    for name, shape in shapes:
        f32 = len(shape) == 1 or "gate_inp" in name
        n = int(np.prod(shape))
        w.add_tensor_info(name, shape, np.float32 if f32 else np.uint16, n * (4 if f32 else 2),
                          None if f32 else Q.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (name, shape) in enumerate(shapes):
        rng = np.random.default_rng(i)
        if len(shape) == 1:
            w.write_tensor_data(np.ones(shape, np.float32))
            continue
        r = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
        bits = (r & 0x807F) | ((118 + ((r >> 7) & 3)) << 7).astype(np.uint16)
        if "gate_inp" in name:
            w.write_tensor_data((bits.astype(np.uint32) << 16).view(np.float32))
        else:
            w.write_tensor_data(bits)
        print(f"{name} {shape}", file=sys.stderr)
    w.close()


V2_QUANT = {"attn_q.": Q.Q8_0, "attn_kv_a_mqa": Q.Q5_1, "attn_output": Q.Q4_1, "ffn_gate": Q.Q4_0,
            "ffn_up": Q.Q5_0, "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0, "output.": Q.Q4_0, "attn_v_b": Q.Q8_0}


def main():
    if len(sys.argv) in (4, 5) and sys.argv[1:3] == ["--bench", "v2-lite"]:
        v2_lite_bench(Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else V2_LITE["num_hidden_layers"])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--bench":
        bench_model(Path(sys.argv[3]), sys.argv[2])
        return
    if len(sys.argv) == 2 and sys.argv[1] == "--llm-golden":
        deepseek_llm_golden()
        return
    OUT.mkdir(exist_ok=True)
    convert("v2-greedy", "v2-greedy.gguf", nextn=0, mla_split=True)
    convert("v3-noaux", "v3-noaux.gguf", nextn=1, mla_split=False)
    convert("v2-greedy", "v2-greedy-q.gguf", nextn=0, mla_split=True, quant=V2_QUANT, twin="v2-greedy-q-twin")
    # Both forms of kv_b_proj, as some converters (ik_llama.cpp's) keep attn_kv_b beside the halves.
    convert("v2-greedy", "v2-greedy-both.gguf", nextn=0, mla_split="both")
    # The same in three parts, as gguf-split writes a model too large for one file.
    convert("v2-greedy", "split/v2-greedy-q.gguf", nextn=0, mla_split=True, quant=V2_QUANT, split_max_tensors=20)
    dequant_fixture()
    tokenizer_fixture()
    deepseek_llm_golden()
    fuzz_seeds()
    print("gguf", getattr(gguf, "__version__", "?"), "numpy", np.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()
