"""Step time of this checkout against an earlier revision of the package, measured in one run.

    SCRATCHNADE_DATA=../shared/data python benchmarks/revision_speed.py --base b8485c1 [--threads 1] [--rounds 4]

For each model, a training step (``loss_and_grads`` + an Adam step, float32) is timed in a child
process that imports the package either from this checkout or from `--base` (extracted with
``git archive`` into a temporary folder); the two alternate, round after round, so that the
machine's noise falls on both alike.  The models are those of ``wikitext2.py speed`` (recurrent NADE
p = 35 untied and tied, order-8 NADE, B = 32, H = 256, WikiText-2's first training batches) and the
binary NADE of ``binarized_mnist.py`` (H = 500, B = 100, binarized MNIST training batches).
Prints one JSON line per model: median step seconds of each tree and the ratio new / base
(below 1 is faster).  The child uses only what both trees offer; it sets ``reuse_buffers`` (the
training loops' setting since the safe-gradient default) and ``compact_grads`` (the training loop's
setting for scratchnade's optimizers since scratchnade.compact), which an older tree ignores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scratchnade.blas_env import THREAD_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["rnn", "rnn-tied", "nade-8", "nade-mnist"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="b8485c1", help="git revision to compare against (default: before issue 14)")
    p.add_argument("--rounds", type=int, default=4, help="alternations of base and new (default 4)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model and child (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the children (default 1)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    p.add_argument("--new-env", nargs="+", default=[], metavar="NAME=VALUE",
                   help="environment settings for the new tree's children only: with --base HEAD, this measures "
                        "a setting (e.g. OPENBLAS_THREAD_TIMEOUT=28, OpenBLAS's own default, against ours)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    for setting in a.new_env:
        if "=" not in setting or not setting.split("=", 1)[0]:
            p.error(f"--new-env takes NAME=VALUE settings, got {setting!r}")
    return a


def child(args):
    """Time each model's step with the package found on sys.path; print {model: median seconds}."""
    import time

    import numpy as np

    from scratchnade.optim import Adam

    def batches(name):
        if name == "nade-mnist":
            from scratchnade.data.binary import load_binarized_mnist
            train = load_binarized_mnist(args.data_dir)["train"]
            return [train[i * 100:(i + 1) * 100].astype(np.float32) for i in range(args.steps + 1)]
        from scratchnade.data.text import load_wikitext2, stream_batches, window_batches
        ids = load_wikitext2(args.data_dir).train
        it = (stream_batches(ids, 35, 32, drop_last=True) if name.startswith("rnn") else
              window_batches(ids, 8, 32, rng=np.random.default_rng(0), drop_last=True))
        return [x for _, x in zip(range(args.steps + 1), it)]

    def model(name):
        from scratchnade.models import NADE, RecurrentNADE, SequenceNADE
        if name == "nade-mnist":
            return NADE(784, H=500, seed=0)
        if name.startswith("rnn"):
            return RecurrentNADE(33_278, H=256, tied=name == "rnn-tied", carry_state=True, init_scale=0.1, seed=0)
        return SequenceNADE(33_278, p=8, H=256, init_scale=0.1, seed=0)

    out = {}
    for name in args.models:
        m, xs, opt = model(name), batches(name), Adam(lr=1e-3)
        m.reuse_buffers = True
        m.compact_grads = True                          # the training loop's settings (an older tree ignores them)
        times = []
        for i, x in enumerate(xs):
            t0 = time.perf_counter()
            _, grads = m.loss_and_grads(x)
            opt.step(m.params, grads)
            if i > 0:                                   # step 0 allocates buffers and Adam state
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
        del m, xs, opt
    print(json.dumps(out))


def run_child(tree, args, extra_env=()):
    env = dict(os.environ, PYTHONPATH=str(tree), OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)    # as the package's entry points set it
    env.update(setting.split("=", 1) for setting in extra_env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps),
           "--models", *args.models] + (["--data-dir", args.data_dir] if args.data_dir else [])
    done = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "scratchnade"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        trees = {"base": base, "new": ROOT}
        runs = {"base": [], "new": []}
        for r in range(args.rounds):
            for which in (("base", "new") if r % 2 == 0 else ("new", "base")):
                runs[which].append(run_child(trees[which], args, args.new_env if which == "new" else ()))
    for name in args.models:
        b = statistics.median(run[name] for run in runs["base"])
        n = statistics.median(run[name] for run in runs["new"])
        print(json.dumps({"benchmark": "revision_speed", "model": name, "threads": args.threads, "base": args.base,
                          "base_step_s": round(b, 4), "new_step_s": round(n, 4), "new_over_base": round(n / b, 3),
                          "rounds": args.rounds, "steps": args.steps, **({"new_env": args.new_env} if args.new_env
                                                                         else {})}), flush=True)


if __name__ == "__main__":
    a = parse(sys.argv[1:])
    child(a) if a.child else main(a)
