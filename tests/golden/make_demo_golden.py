#!/usr/bin/env python3
"""Golden outputs of transformers on the bundled demo model (resources/models/cetus-demo),
for the engine's conformance suite: tests/data/golden/cetus-demo/{golden.safetensors,
manifest.json}. The manifest's "model_dir" points at the model, so the weights are not
copied. Reuses make_fixtures.py (reference model in fp32 on the file's exact weights, the
MTP reference of the architecture doc, router recording). Run from the repository root:

    python3 tests/golden/make_demo_golden.py
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import make_fixtures as mf  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "resources/models/cetus-demo"
OUT = ROOT / "tests/data/golden/cetus-demo"
CHATS = [
    "<｜begin▁of▁sentence｜><｜User｜>What is the capital of France?<｜Assistant｜>",
    "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜>Hello! How can I help you today?"
    "<｜end▁of▁sentence｜><｜User｜>What does the word generous mean?<｜Assistant｜>",
]


@torch.no_grad()
def main():
    cfg = json.loads((MODEL / "config.json").read_text())
    ref = mf.read_reference_from_file(MODEL / "model.safetensors")
    model = mf.build_reference_model(cfg, ref)
    mtp = mf.MtpReference(cfg, ref)
    rec = mf.Recorder(model, mtp, cfg)
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    golden, prompts = {}, []
    for k, chat in enumerate(CHATS):
        ids = tok.encode(chat, add_special_tokens=False).ids
        ok, res, margins, _ = mf.run_prompt(model, mtp, rec, cfg, ids)
        for key in ("ids", "logits", "hidden", "mtp_logits", "greedy"):
            golden[f"prompt.{k}.{key}"] = res[key].contiguous()
        for name, t in res.items():
            if name.startswith("router"):
                golden[f"prompt.{k}.{name}"] = t.contiguous()
        prompts.append({"text": chat, "length": len(ids), "margins": margins,
                        "margins_ok": bool(ok)})
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(golden, str(OUT / "golden.safetensors"), metadata={"format": "pt"})
    manifest = {
        "case": "cetus-demo",
        "about": "The bundled demo model (trained, BF16) against transformers' DeepseekV3ForCausalLM in fp32 on "
                 "the exact BF16 weights; MTP logits from make_fixtures.MtpReference; greedy = 16 argmax tokens "
                 "without an end-of-sequence stop.",
        "model_dir": "../../../../resources/models/cetus-demo",
        "regenerate": "python3 tests/golden/make_demo_golden.py (after retraining the model)",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "prompts": prompts,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print("wrote", OUT, {k: v["margins"]["logit"] for k, v in enumerate(prompts)})


if __name__ == "__main__":
    main()
