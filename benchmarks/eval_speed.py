"""Evaluation throughput at WikiText-2's vocabulary: perplexity() of a recurrent NADE, chunked and stream.

    python benchmarks/eval_speed.py [--threads 1] [--tokens 17920]

Random token ids (no data needed), H = 256, V = 33,278, float32, 64 windows of 35 tokens per call.
Prints one JSON line per mode with tokens/s (forward only: logits, log-softmax, gather).
"""
import argparse
import sys

from scratchnade.blas_env import prepare_blas

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--threads", type=int, default=None, help="BLAS threads (default: the library's)")
p.add_argument("--tokens", type=int, default=2240 * 8)
p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
args = p.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
prepare_blas(args.threads)  # before NumPy loads its BLAS

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from scratchnade.evaluate import perplexity  # noqa: E402
from scratchnade.models import RecurrentNADE  # noqa: E402

V = 33_278

def seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    model = RecurrentNADE(V, H=256, seed=0)
    ids = np.random.default_rng(0).integers(0, V, args.tokens)
    for mode in ("chunked", "stream"):
        best = min(seconds(lambda: perplexity(model, ids, 35, mode=mode)) for _ in range(args.repeats))
        print(json.dumps({"benchmark": "eval_speed", "mode": mode, "tokens": int(ids.size), "V": V, "H": 256,
                          "threads": args.threads or "default", "tok_s": round(ids.size / best)}), flush=True)
