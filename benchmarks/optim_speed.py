"""Optimizer step time on the host: the three habits of scratchnade.optim_host, each against its absence.

    python benchmarks/optim_speed.py [--threads 1] [--repeats 3] [--sparse-steps 1500]

blocks     one NADE-sized weight (p V H = 8 x 33,278 x 256 float32 = 68M floats), dense gradient:
           cache-sized blocks (the default) against the rule run once over the whole array.
zero_grad  an embedding-shaped weight (33,278 x 256) whose gradient has 224 Zipf-drawn rows per step
           (a batch of 32 x 7 tokens): all-zero blocks take the g = 0 rule, against every block dense.
subnormal  the same weight over --sparse-steps Adam steps: with the subnormal flush (default) against
           without (flush_every = None); rows left untouched for ~750 steps turn m subnormal.

torch_subnormal  (when torch is installed) PyTorch's fused CPU Adam on the same weight with its m filled
           with normal (1e-30) against subnormal (1e-39) values: the same trap, without a flush.

Each pair gives the same values (tests/test_optim.py); this measures the time.  Pairs run in one
process (alternated where a step is repeatable) and medians are compared, since the machine may be shared.
"""
import argparse
import json
import sys

from scratchnade.blas_env import prepare_blas


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8 * 33_278 * 256, help="floats in the weight")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per way and optimizer")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sparse-steps", type=int, default=1500, help="Adam steps of the subnormal scenario")
    return p.parse_args(argv)


args = parse(sys.argv[1:] if __name__ == "__main__" else [])
prepare_blas(args.threads)  # before NumPy loads its BLAS

import time  # noqa: E402

import numpy as np  # noqa: E402

from scratchnade import optim, optim_host  # noqa: E402


def step_time(make, blocked, params, grads):
    """Seconds of one opt.step after a warm-up step (which creates the state)."""
    saved = optim_host.BLOCK_BYTES
    optim_host.BLOCK_BYTES = saved if blocked else 1 << 62          # one block: the whole-array rule
    try:
        opt = make()
        opt.step(params, grads)
        t0 = time.perf_counter()
        opt.step(params, grads)
        return time.perf_counter() - t0
    finally:
        optim_host.BLOCK_BYTES = saved


def sparse_grad(rng, V=33_278, H=256, rows=224):
    """A (V, H) gradient that is zero but for `rows` Zipf-drawn rows (a one-hot input's weights)."""
    g = np.zeros((V, H), np.float32)
    zipf = 1.0 / np.arange(1, V + 1)
    g[rng.choice(V, size=rows, p=zipf / zipf.sum())] = rng.standard_normal((rows, H)) * 1e-3
    return g


def blocks():
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal(args.size, dtype=np.float32)}
    grads = {"W": rng.standard_normal(args.size, dtype=np.float32) * 1e-3}
    for name, make in [("adam", lambda: optim.Adam(1e-3, clip=0.25)), ("sgd", lambda: optim.SGD(1.0, clip=0.25))]:
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for blocked in (True, False):
                times[blocked].append(step_time(make, blocked, params, grads))
        b, w = np.median(times[True]), np.median(times[False])
        print(json.dumps({"benchmark": "optim_speed", "case": "blocks", "optimizer": name, "floats": args.size,
                          "blocked_s": round(b, 3), "whole_s": round(w, 3), "speedup": round(w / b, 2),
                          "block_bytes": optim_host.BLOCK_BYTES, "threads": args.threads or "default"}), flush=True)


def zero_grad():
    rng = np.random.default_rng(1)
    grads = {"E": sparse_grad(rng)}
    real = optim_host._all_zero
    times = {True: [], False: []}
    params = {"E": rng.standard_normal(grads["E"].shape, dtype=np.float32)}
    opt = optim.Adam(1e-3)
    opt.step(params, grads)
    for _ in range(args.repeats * 3):
        for skip in (True, False):
            optim_host._all_zero = real if skip else (lambda g: False)
            try:
                t0 = time.perf_counter()
                opt.step(params, grads)
                times[skip].append(time.perf_counter() - t0)
            finally:
                optim_host._all_zero = real
    s, d = np.median(times[True]), np.median(times[False])
    print(json.dumps({"benchmark": "optim_speed", "case": "zero_grad", "optimizer": "adam",
                      "floats": grads["E"].size, "nonzero_rows": int(grads["E"].any(axis=1).sum()),
                      "zero_grad_rule_s": round(s, 4), "dense_rule_s": round(d, 4), "speedup": round(d / s, 2),
                      "threads": args.threads or "default"}), flush=True)


def subnormal():
    row = {"benchmark": "optim_speed", "case": "subnormal", "optimizer": "adam", "steps": args.sparse_steps}
    for flush in (True, False):
        rng = np.random.default_rng(2)                    # the same gradients both times
        params = {"E": rng.standard_normal((33_278, 256), dtype=np.float32) * 0.01}
        opt = optim.Adam(1e-3, eps=1e-5)
        opt.flush_every = optim.Optimizer.flush_every if flush else None
        late = []
        for t in range(args.sparse_steps):
            grads = {"E": sparse_grad(rng)}
            t0 = time.perf_counter()
            opt.step(params, grads)
            if t >= args.sparse_steps - 200:
                late.append(time.perf_counter() - t0)
        m = opt.state["E"]["m"]
        key = "flush" if flush else "no_flush"
        row[f"{key}_last200_median_s"] = round(float(np.median(late)), 4)
        row[f"{key}_subnormal_share_of_m"] = round(float(((m != 0) & (np.abs(m) < np.finfo(m.dtype).tiny)).mean()), 3)
    row["speedup"] = round(row["no_flush_last200_median_s"] / row["flush_last200_median_s"], 2)
    print(json.dumps(row), flush=True)


def torch_subnormal():
    try:
        import torch
    except ImportError:
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    row = {"benchmark": "optim_speed", "case": "torch_subnormal", "optimizer": "torch Adam(fused=True)",
           "floats": 33_278 * 256, "torch": torch.__version__}
    for label, m in [("normal", 1e-30), ("subnormal", 1e-39)]:
        w = torch.nn.Parameter(torch.randn(33_278 * 256) * 0.01)
        opt = torch.optim.Adam([w], lr=1e-3, fused=True)
        w.grad = torch.zeros_like(w)
        opt.step()                                                   # creates the state
        times = []
        for _ in range(args.repeats * 2):
            opt.state[w]["exp_avg"].fill_(m)
            opt.state[w]["exp_avg_sq"].fill_(1e-10)
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        row[f"{label}_m_s"] = round(float(np.median(times)), 4)
    row["slowdown"] = round(row["subnormal_m_s"] / row["normal_m_s"], 1)
    print(json.dumps(row), flush=True)


def main():
    blocks()
    zero_grad()
    subnormal()
    torch_subnormal()


if __name__ == "__main__":
    main()
