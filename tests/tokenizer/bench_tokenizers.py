#!/usr/bin/env python3
"""Encode throughput of the Python `tokenizers` library on a text file, for the README's
comparison with `cetus-cli bench --tokenizer` (same file, same machine, same run).

Measures what our benchmark measures: one thread, the file's bytes decoded as UTF-8
("replace" for invalid bytes, outside the timing), encode without special-token
post-processing, one discarded warm-up, the median of the measured runs; MB = 10^6 bytes.
RAYON_NUM_THREADS=1 keeps the Rust side on one thread (encode() of one text is serial anyway).

  python3 tests/tokenizer/bench_tokenizers.py --model DIR --text-file F [--cetus-cli build/cetus-cli]
  python3 tests/tokenizer/bench_tokenizers.py --make-corpus F   # writes the README's test text

With --cetus-cli it also runs `cetus-cli bench --tokenizer --json` on the same file and
prints both results side by side.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import Tokenizer  # noqa: E402  (after RAYON_NUM_THREADS)


def make_corpus(path):
    """A reproducible mixed text of about 4 MB: this Python's standard-library sources (code
    and English comments) followed by the multilingual hard corpus of the fixtures, repeated."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_tokenizer_fixtures import corpus  # noqa: E402

    stdlib = Path(os.__file__).parent
    parts, size = [], 0
    for f in sorted(stdlib.glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size > 3_000_000:
            break
    multilingual = "\n".join(raw.decode("utf-8") for name, raw in corpus() if not name.startswith("invalid"))
    while size < 4_000_000:
        parts.append(multilingual)
        size += len(multilingual.encode("utf-8"))
    Path(path).write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {path}: {Path(path).stat().st_size} bytes")


def bench_python(model_dir, text_file, repeats):
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    load_ms = (time.perf_counter() - t0) * 1e3
    raw = Path(text_file).read_bytes()
    text = raw.decode("utf-8", "replace")
    n_tokens = len(tok.encode(text, add_special_tokens=False).ids)  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n_tokens = len(tok.encode(text, add_special_tokens=False).ids)
        runs.append((time.perf_counter() - t0) * 1e3)
    median_ms = statistics.median(runs)
    return {
        "benchmark": "tokenizer", "implementation": "python tokenizers " + __import__("tokenizers").__version__,
        "model": model_dir, "text_file": text_file, "bytes": len(raw), "tokens": n_tokens, "threads": 1,
        "repeats": repeats, "load_ms": load_ms, "encode_ms_median": median_ms,
        "mb_per_s": len(raw) / 1e6 / (median_ms / 1e3), "tokens_per_s": n_tokens / (median_ms / 1e3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="folder with tokenizer.json")
    ap.add_argument("--text-file", help="text to encode")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cetus-cli", help="path to cetus-cli, to measure ours in the same run")
    ap.add_argument("--make-corpus", metavar="F", help="write the mixed benchmark text to F and exit")
    args = ap.parse_args()
    if args.make_corpus:
        make_corpus(args.make_corpus)
        return
    if not args.model or not args.text_file:
        ap.error("--model and --text-file are required")

    results = [bench_python(args.model, args.text_file, args.repeats)]
    if args.cetus_cli:
        out = subprocess.run([args.cetus_cli, "bench", "--tokenizer", "--model", args.model,
                              "--text-file", args.text_file, "--json"], check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout))
    for r in results:
        print(f"{r['implementation']:>28}: {r['mb_per_s']:7.2f} MB/s  {r['tokens_per_s']:12.0f} tokens/s  "
              f"({r['bytes']} bytes -> {r['tokens']} tokens, median {r['encode_ms_median']:.1f} ms, "
              f"load {r['load_ms']:.0f} ms)")
    if len(results) == 2 and results[0]["tokens"] != results[1]["tokens"]:
        print("warning: the two implementations produced different token counts", file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
