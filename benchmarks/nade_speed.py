"""Binarized MNIST: training-step time and peak memory of our binary NADE against its PyTorch twin.

    python benchmarks/nade_speed.py [--threads 1] [--steps 8] [--hidden 500]
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/nade_speed.py --threads 2
    python benchmarks/nade_speed.py --side ours --threads 1          # one side only: its max RSS
    python benchmarks/nade_speed.py --side torch --threads 1

Times forward + backward + Adam step (float32, D = 784, H = 500, B = 100, Adam lr 1e-3: the NADE
recipe of benchmarks/binarized_mnist.py, b started at the pixel logits) of
scratchnade.models.nade.NADE and of torch_twins.TorchNADE (the same parameter values, torch's
Adam with fused=True), on the first `--steps` + 1 mini-batches of binarized MNIST's training
split in the order of binarized_mnist.py's first epoch.  Ours and PyTorch's alternate step by
step in one process; step 0 (buffers, Adam state) is not timed, and the median step gives
images/s.

Peak memory: first the script runs itself twice, `--side ours` and `--side torch`, each in a
fresh process that does the same steps for one side only and reports its peak resident set size
(getrusage ru_maxrss).  Both peaks include the interpreter, NumPy and loading the data set
(its uint8 arrays are freed once the batches are cut); the torch side also pays for importing
torch, which our side never imports (hundreds of MB of shared libraries in a CUDA build).
`steps_mib` is what the steps add: the peak minus the resident size just before step 0 (data,
model and, for the torch side, torch and the twin already loaded); exact when the steps set the
peak, an upper bound otherwise (`max_rss_setup_mib`, the peak before step 0, tells which).

One JSON line: images/s ours and torch, the ratio, each side's max RSS and steps_mib, and the
last step's loss of each (the same model on the same batches: equal to float32 round-off).
With --side, one line for that side.  Needs the data (SCRATCHNADE_DATA or --data-dir) and torch (CPU build).
"""
import argparse
import os
import sys

from scratchnade.blas_env import prepare_blas


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=500, help="hidden units H")
    p.add_argument("--batch-size", type=int, default=100, help="images per step B")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (betas 0.9, 0.999, eps 1e-8)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per side (one more, untimed, first)")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: library default)")
    p.add_argument("--side", choices=["both", "ours", "torch"], default="both",
                   help="both: each side's memory in its own process, then the two alternating; "
                        "ours / torch: run that side only and report its max RSS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder with binarized-mnist/ (else $SCRATCHNADE_DATA)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    return a


args = parse(sys.argv[1:] if __name__ == "__main__" else [])
prepare_blas(args.threads)  # must happen before NumPy loads its BLAS

import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from scratchnade.data.binary import load_binarized_mnist, minibatches  # noqa: E402
from scratchnade.models.nade import NADE  # noqa: E402
from scratchnade.optim import Adam  # noqa: E402


def max_rss_mib():
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mib():
    """Resident set size of this process now, in MiB (Linux: /proc/self/statm; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def setup():
    """Our model as binarized_mnist.py builds it, and the args.steps + 1 float32 batches (B, 784) of its
    first epoch."""
    train = load_binarized_mnist(args.data_dir)["train"]
    model = NADE(train.shape[1], H=args.hidden, seed=args.seed, init_scale=0.01)
    # b = logit of each pixel's mean (init_bias); the mean taken here without a float64 copy of
    # the 50,000 images, which would put ~300 MB into both sides' peak memory
    model.init_bias(train.mean(axis=0, dtype=np.float64)[None])
    rng = np.random.default_rng([args.seed, 1])                   # binarized_mnist.py's epoch-1 shuffle
    batches = minibatches(train, args.batch_size, rng=rng, drop_last=True, dtype=np.float32)
    xs = [x for _, x in zip(range(args.steps + 1), batches)]
    if len(xs) < args.steps + 1:
        raise SystemExit(f"only {len(xs)} batches of {args.batch_size}; ask for fewer --steps")
    return model, xs


def our_step_fn(model):
    opt = Adam(lr=args.lr)

    def step(x):
        loss, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)
        return loss
    return step


def torch_step_fn(model):
    """A closure x -> loss: one step of torch's fused Adam on the twin of `model` (a copy: ours is untouched)."""
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # for torch_twins
    from torch_twins import twin
    if args.threads:
        torch.set_num_threads(args.threads)
    net = twin(model)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, eps=1e-8, fused=True)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss, _ = net(torch.from_numpy(x))
        loss.backward()
        opt.step()
        return loss.item()
    return step


def timed(steps, xs):
    """({name: [seconds per step]}, {name: last loss}) over xs, the steps in `steps` taking turns
    to go first; step 0 untimed."""
    times, loss = {name: [] for name in steps}, {}
    for i, x in enumerate(xs):
        order = list(steps.items()) if i % 2 == 0 else list(steps.items())[::-1]
        for name, fn in order:
            t0 = time.perf_counter()
            loss[name] = fn(x)
            if i > 0:                                                 # step 0 allocates buffers and Adam state
                times[name].append(time.perf_counter() - t0)
    return times, loss


def row(model, **kw):
    """A result line: the sizes of the model actually timed, then `kw`."""
    return {"benchmark": "nade_speed", "D": model.config["D"], "H": model.config["H"], "B": args.batch_size,
            "threads": args.threads or "default", "steps": args.steps, **kw}


def one_side():
    """Run one side alone and report its images/s and peak memory; our side never imports torch."""
    model, xs = setup()
    fn = our_step_fn(model) if args.side == "ours" else torch_step_fn(model)   # torch imported here
    setup_peak, before = max_rss_mib(), rss_mib()
    t = np.median(timed({args.side: fn}, xs)[0][args.side])
    if args.side == "ours":
        assert "torch" not in sys.modules, "our side imported torch: its RSS would not be ours alone"
    peak = max_rss_mib()
    print(json.dumps(row(model, side=args.side, images_s=round(args.batch_size / t, 1), max_rss_mib=peak,
                         max_rss_setup_mib=setup_peak, rss_before_steps_mib=before,
                         steps_mib=None if before is None else round(peak - before, 1))), flush=True)


def side_rss(side):
    """Run this script with --side `side` in a fresh process; its JSON line as a dict."""
    argv = [sys.executable, os.path.abspath(__file__), "--side", side, "--hidden", str(args.hidden),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--steps", str(args.steps),
            "--seed", str(args.seed)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def both():
    """Each side's peak memory from its own process, then ours and the twin alternating step by step.

    Memory first: a child's ru_maxrss starts from this process's peak at the time it is spawned
    (Linux carries the high-water mark across fork and exec), so the children are spawned while
    this process holds only NumPy and scratchnade, before the data, the models and torch.
    """
    mem = {side: side_rss(side) for side in ("ours", "torch")}
    model, xs = setup()
    theirs = torch_step_fn(model)                                     # the twin copies the initial values
    ours = our_step_fn(model)
    times, loss = timed({"ours": ours, "torch": theirs}, xs)
    o, t = (args.batch_size / np.median(times[k]) for k in ("ours", "torch"))
    print(json.dumps(row(model, ours_images_s=round(o, 1), torch_images_s=round(t, 1), ratio=round(o / t, 2),
                         **{f"{side}_{k}": mem[side][k] for k in ("max_rss_mib", "steps_mib") for side in mem},
                         ours_loss=round(loss["ours"], 3), torch_loss=round(loss["torch"], 3))), flush=True)


if __name__ == "__main__":
    if args.side == "both":
        both()
    else:
        one_side()
