"""Optimizer step time on one NADE-sized weight (p V H = 8 x 33,278 x 256 float32 = 68M floats):
cache-sized host blocks (the default) against the rule run once over the whole array.

    python benchmarks/optim_speed.py [--threads 1] [--repeats 3]

Both ways give the same bits (tests/test_optim.py); this measures the time.  The two are
alternated in one process and the medians compared, since the machine may be shared.
"""
import argparse
import json
import os
import sys


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8 * 33_278 * 256, help="floats in the weight")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per way and optimizer")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


args = parse(sys.argv[1:] if __name__ == "__main__" else [])
if args.threads:
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402

from scratchnade import optim  # noqa: E402


def step_time(make, blocked, params, grads):
    """Seconds of one opt.step after a warm-up step (which creates the state)."""
    saved = optim.BLOCK_BYTES
    optim.BLOCK_BYTES = saved if blocked else 1 << 62          # one block: the whole-array rule
    try:
        opt = make()
        opt.step(params, grads)
        t0 = time.perf_counter()
        opt.step(params, grads)
        return time.perf_counter() - t0
    finally:
        optim.BLOCK_BYTES = saved


def main():
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal(args.size, dtype=np.float32)}
    grads = {"W": rng.standard_normal(args.size, dtype=np.float32) * 1e-3}
    for name, make in [("adam", lambda: optim.Adam(1e-3, clip=0.25)), ("sgd", lambda: optim.SGD(1.0, clip=0.25))]:
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for blocked in (True, False):
                times[blocked].append(step_time(make, blocked, params, grads))
        b, w = np.median(times[True]), np.median(times[False])
        print(json.dumps({"benchmark": "optim_speed", "optimizer": name, "floats": args.size,
                          "blocked_s": round(b, 3), "whole_s": round(w, 3), "speedup": round(w / b, 2),
                          "block_bytes": optim.BLOCK_BYTES, "threads": args.threads or "default"}), flush=True)


if __name__ == "__main__":
    main()
