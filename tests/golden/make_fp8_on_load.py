#!/usr/bin/env python3
"""Reference data for FP8 on load (EngineOptions::fp8_on_load, `cetus-cli --fp8`), from
PyTorch alone (not needed to run the tests):

    python3 tests/golden/make_fp8_on_load.py

- tests/data/fp8-on-load/v3-bf16-fp8/: the v3-bf16 golden checkpoint with the tensors
  DeepSeek-V3's FP8 release stores as FP8 (make_fixtures.fp8_quantized: attention
  projections and every MLP/expert matrix, the MTP block's included) quantised the way
  that release is: per 128x128 block scale_inv = amax / 448 in float32 (1 for an all-zero
  block; the engine also raises a scale under the smallest normal float to it, which
  BF16 data never reaches), codes = (w / scale_inv).to(torch.float8_e4m3fn). Everything
  else is copied.
  The engine quantising v3-bf16 on load must give exactly these tensors.
- tests/data/fp8-on-load/matrices/: BF16 matrices of many and partial blocks (260x400,
  129x1, 1x129, 256x256 with an all-zero block and tiny values) with torch's codes and
  scales for each (`name`, `name.q`, `name.s`).
- tests/data/fp8-on-load/e4m3_cases.json: float32 values (as bit patterns) and the code
  torch's float8_e4m3fn cast gives each (round to nearest even): every code's value,
  every midpoint between neighbours and its float neighbours, subnormals, random values.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import make_fixtures  # fp8_quantized: which tensors the FP8 release quantises

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests/data/golden/v3-bf16"
OUT = ROOT / "tests/data/fp8-on-load"


def quantise(w: torch.Tensor, block: int = 128):
    w = w.to(torch.float32)
    rows, cols = w.shape
    nb_r, nb_c = -(-rows // block), -(-cols // block)
    s = torch.empty(nb_r, nb_c, dtype=torch.float32)
    for i in range(nb_r):
        for j in range(nb_c):
            amax = w[i * block:(i + 1) * block, j * block:(j + 1) * block].abs().max()
            s[i, j] = amax / 448.0 if amax > 0 else torch.tensor(1.0)
    full = s.repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return (w / full).to(torch.float8_e4m3fn).contiguous(), s.contiguous()


def checkpoint():
    dst = OUT / "v3-bf16-fp8"
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {}
    with safe_open(SRC / "model.safetensors", framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if make_fixtures.fp8_quantized(name) and t.dim() == 2:
                q, s = quantise(t)
                tensors[name] = q
                tensors[name + "_scale_inv"] = s
            else:
                tensors[name] = t
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((SRC / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [128, 128]}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def matrices():
    """BF16 matrices with many and partial blocks (and one zero block, and rows of
    tiny values) next to torch's quantisation of each: <name>, <name>.q, <name>.s."""
    g = torch.Generator().manual_seed(9)
    out = {}
    for name, (r, c) in {"a": (260, 400), "b": (129, 1), "c": (1, 129), "d": (256, 256)}.items():
        w = (torch.randn(r, c, generator=g) * torch.exp2(torch.randint(-8, 4, (r, 1), generator=g))).to(torch.bfloat16)
        if name == "d":
            w[:128, 128:256] = 0  # an all-zero block: scale 1
            w[128:, :128] *= 1e-30  # tiny values: subnormal codes and small scales
        q, s = quantise(w)
        out[name] = w.contiguous()
        out[name + ".q"] = q
        out[name + ".s"] = s
    dst = OUT / "matrices"
    dst.mkdir(parents=True, exist_ok=True)
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})


def bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def from_bits(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


def encoder_cases():
    codes = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32).tolist()
    values = set()
    for v in codes:
        values.add(v)
    for a, b in zip(codes, codes[1:]):
        mid = (a + b) / 2  # exact in float32: neighbours differ in the last few bits
        for x in (mid, from_bits(bits(mid) - 1), from_bits(bits(mid) + 1)):
            values.add(x)
    values.update([2.0 ** -10, 2.0 ** -9 * 0.5, 2.0 ** -9 * 1.5, 2.0 ** -6 * 0.999, 447.0, 448.0, 463.0])
    g = torch.Generator().manual_seed(5)
    values.update((torch.randn(2000, generator=g) * torch.exp2(torch.randint(-12, 9, (2000,), generator=g))).tolist())
    values = sorted(v for v in values if abs(v) < 448.0 or abs(v) == 448.0)
    xs = torch.tensor(values + [-v for v in values if v != 0], dtype=torch.float32)
    q = xs.to(torch.float8_e4m3fn).view(torch.uint8)
    cases = [[bits(float(x)), int(c)] for x, c in zip(xs.tolist(), q.tolist())]
    (OUT / "e4m3_cases.json").write_text(json.dumps({
        "about": "float32 bit pattern -> torch float8_e4m3fn cast code (tests/golden/make_fp8_on_load.py)",
        "torch": torch.__version__, "cases": cases}) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    checkpoint()
    matrices()
    encoder_cases()
    print("wrote", OUT)
