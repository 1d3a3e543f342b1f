"""The elementwise passes of a training step on every core: our thread pool against numexpr.

    python benchmarks/elementwise_threads.py [--threads 2] [--repeats 9]

Times, in one process with the variants alternating, the two elementwise workloads that dominate a
word-level step outside the matmuls, at WikiText-2's sizes in float32:

- softmax cross-entropy, forward and gradient, over (N, V) = (35 * 32, 33,278) logits
  (scratchnade.functional: max-shift, exp, normalise, then w * softmax);
- one Adam step (host kernel: moments, folded bias corrections, the update) over 16.8M
  parameters (a 33,278 x 256 output layer and two more of its size, ~200 MB of state).

Variants: `serial` (scratchnade.parallel with 1 thread: the blocked loop as before), `pool`
(scratchnade.parallel with --threads threads: the same blocks, the same bits), and `numexpr` (the
same formulas as numexpr expressions on --threads threads; numexpr is not a dependency, so this
variant is skipped when it is not installed).  Prints one JSON line per workload: milliseconds per
call (median), the speed-up of each over serial, and the largest difference from serial's result
(0 for the pool by construction).
"""
import argparse
import json
import os
import sys

from scratchnade.blas_env import prepare_blas
import time

args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
args.add_argument("--threads", type=int, default=2)
args.add_argument("--repeats", type=int, default=9)
args = args.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
prepare_blas(args.threads)  # before NumPy loads its BLAS
os.environ["NUMEXPR_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402

from scratchnade import functional as F  # noqa: E402
from scratchnade import parallel  # noqa: E402
from scratchnade.optim import Adam  # noqa: E402

try:
    import numexpr as ne
    ne.set_num_threads(args.threads)
except ImportError:                                           # not a dependency
    ne = None


def softmax_ce_numexpr(f, y):
    """The same softmax cross-entropy and gradient (mean over rows) with numexpr for the big passes."""
    n = f.shape[0]
    target = f[np.arange(n), y]
    m = f.max(axis=1, keepdims=True)                          # NumPy: numexpr has no row max
    ne.evaluate("exp(f - m)", out=f)
    z = f.sum(axis=1, keepdims=True)
    w = np.float32(1.0 / n)
    scale = w / z                                             # (n, 1): w / z per row
    loss = float(((m + np.log(z))[:, 0] - target).mean())
    ne.evaluate("f * scale", out=f)                           # dlogits = w softmax ...
    f[np.arange(n), y] -= w                                   # ... - w onehot
    return loss, f


def softmax_ce_ours(f, y):
    loss, cache = F.softmax_cross_entropy(f, y, inplace=True)
    return float(loss), F.softmax_cross_entropy_backward(1.0, cache, out=cache.probs)


def adam_numexpr(state, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Adam's host kernel (bias corrections folded, as scratchnade.optim_host) as numexpr passes."""
    c1, s2 = 1.0 - b1 ** t, (1.0 - b2 ** t) ** 0.5
    one = {"b1": np.float32(b1), "b2": np.float32(b2), "a1": np.float32(1 - b1), "a2": np.float32(1 - b2),
           "e": np.float32(eps * s2), "k": np.float32(lr * s2 / c1)}
    for w, g, m, v in state:
        ne.evaluate("b1 * m + a1 * g", local_dict={"m": m, "g": g, **one}, out=m)
        ne.evaluate("b2 * v + a2 * (g * g)", local_dict={"v": v, "g": g, **one}, out=v)
        ne.evaluate("w - k * (m / (sqrt(v) + e))", local_dict={"w": w, "m": m, "v": v, **one}, out=w)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def softmax_workload():
    rng = np.random.default_rng(0)
    f0, y = rng.normal(0, 3, (35 * 32, 33_278)).astype(np.float32), rng.integers(0, 33_278, 35 * 32)
    buf = np.empty_like(f0)
    variants = {"serial": 1, "pool": args.threads}
    times, results = {k: [] for k in [*variants, *(["numexpr"] if ne else [])]}, {}
    for r in range(args.repeats + 1):
        for name in (list(times) if r % 2 else list(times)[::-1]):
            np.copyto(buf, f0)
            if name == "numexpr":
                dt, out = timed(lambda: softmax_ce_numexpr(buf, y))
            else:
                parallel.set_threads(variants[name])
                dt, out = timed(lambda: softmax_ce_ours(buf, y))
                parallel.set_threads(None)
            if r:
                times[name].append(dt)
            results[name] = (out[0], out[1].copy())
    return times, {k: float(np.abs(v[1] - results["serial"][1]).max()) for k, v in results.items()}


def adam_workload():
    rng = np.random.default_rng(1)
    shapes = [(33_278, 256)] * 3
    w0 = [rng.normal(size=s).astype(np.float32) for s in shapes]
    gs = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(2)]
    names = ["serial", "pool", *(["numexpr"] if ne else [])]
    params = {n: {f"W{i}": w.copy() for i, w in enumerate(w0)} for n in names}
    opts = {n: Adam(1e-3) for n in names}
    ne_state = [(params["numexpr"][f"W{i}"], None, np.zeros_like(w), np.zeros_like(w))
                for i, w in enumerate(w0)] if ne else []
    times = {n: [] for n in names}
    for r in range(args.repeats + 1):
        g = {f"W{i}": a for i, a in enumerate(gs[r % 2])}
        for name in (names if r % 2 else names[::-1]):
            if name == "numexpr":
                state = [(w, g[f"W{i}"], m, v) for i, (w, _, m, v) in enumerate(ne_state)]
                dt, _ = timed(lambda: adam_numexpr(state, r + 1))
            else:
                parallel.set_threads(1 if name == "serial" else args.threads)
                dt, _ = timed(lambda: opts[name].step(params[name], g))
                parallel.set_threads(None)
            if r:
                times[name].append(dt)
    diff = {n: max(float(np.abs(params[n][k] - params["serial"][k]).max()) for k in params[n]) for n in names}
    return times, diff


def report(workload, times, diff):
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(json.dumps({"benchmark": "elementwise_threads", "workload": workload, "threads": args.threads,
                      **{f"{k}_ms": round(v, 1) for k, v in ms.items()},
                      **{f"{k}_speedup": round(ms["serial"] / v, 2) for k, v in ms.items() if k != "serial"},
                      **{f"{k}_max_diff": v for k, v in diff.items() if k != "serial"},
                      "numexpr": ne.__version__ if ne else None}), flush=True)


if __name__ == "__main__":
    report("softmax_cross_entropy", *softmax_workload())
    report("adam_step", *adam_workload())
