"""Figures from a binarized-MNIST benchmark run: samples, half-image completions, learning curve.

    python benchmarks/mnist_figures.py runs/mnist-nade [--out benchmarks/figures]
    python benchmarks/mnist_figures.py runs/bench/oa1 --name orderless_nade          # + inpainting
    python benchmarks/mnist_figures.py --ensemble-curve runs/bench/oa1.log --out benchmarks/figures/mnist

Reads RUN_DIR/best.npz (written by benchmarks/binarized_mnist.py) and writes
<out>/<name>_samples.png, <name>_completions.png and <name>_learning_curve.png (<name>: the
model's class in lower case unless --name).  Half-image completions need the top half first in
the model's ordering (NADE, FVSBN, a MADE without --shuffle-order); an order-agnostic NADE gets
<name>_inpainting.png instead: any subset of pixels given (top half, left half, a random 30%),
the rest sampled.  --ensemble-curve reads the final JSON lines of binarized_mnist.py --ensemble runs
(one log per model) and draws test NLL against the number of members K, with one standard error.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scratchnade.checkpoint import load_checkpoint
from scratchnade.data.binary import load_binarized_mnist
from scratchnade.models import FVSBN, MADE, NADE, OrderlessNADE
from scratchnade.plots import completion_grid, image_grid, learning_curves, save_figure
from scratchnade.sampling import completion_pairs, sample

MODELS = {"NADE": NADE, "FVSBN": FVSBN, "MADE": MADE, "OrderlessNADE": OrderlessNADE}
NADE_TEST_NLL = 88.245   # the fixed-order NADE, H = 500, of benchmarks/README.md: the curve's reference line
MISSING = 0.25       # dark grey: a pixel the model was not given (the tile padding is lighter)


def given_patterns(n, D=784, seed=0):
    """{label: (n, D) bool}: which pixels an inpainting row is given."""
    rows = np.arange(D) // 28
    cols = np.arange(D) % 28
    rand = np.random.default_rng([seed, 1]).random((n, D)) < 0.3
    return {"top half given": np.broadcast_to(rows < 14, (n, D)),
            "left half given": np.broadcast_to(cols < 14, (n, D)),
            "a random 30% given": rand}


def inpainting_figure(model, originals, seed=0, n_completions=3):
    """One mosaic: for each given-pattern and image, the original, what the model sees (missing
    pixels grey) and `n_completions` inpaintings.  Returns the Figure."""
    tiles, labels = [], []
    for label, given in given_patterns(len(originals), originals.shape[1], seed).items():
        seen = np.where(given, originals, MISSING)
        comps = [np.asarray(model.inpaint(originals, given, seed=seed + k)) for k in range(n_completions)]
        for i in range(len(originals)):
            tiles += [originals[i], seen[i], *(c[i] for c in comps)]
        labels.append(label)
    title = (f"{type(model).__name__} inpainting, each row: original, given pixels (dark grey: missing), "
             f"{n_completions} completions; {len(originals)} rows each of: " + ", ".join(labels))
    return image_grid(np.array(tiles), ncols=2 + n_completions, title=title)


def ensemble_curve(logs, out):
    """Test NLL against ensemble size K from binarized_mnist.py --ensemble logs."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sizes = set()
    for log in logs:
        rows = [json.loads(line) for line in Path(log).read_text().splitlines()
                if line.startswith("{") and '"ensemble"' in line]
        if not rows:
            raise SystemExit(f"{log}: no final --ensemble lines")
        K = [r["ensemble"] for r in rows]
        sizes.update(K)
        nll = [r["test_nll"] for r in rows]
        err = [r["stderr"] for r in rows]
        cfg = rows[0]["config"]
        pool = f", pool of {cfg['masks']} mask sets" if cfg.get("masks", 1) > 1 else ""
        label = (f"{rows[0]['model']} ({cfg.get('layers', 1)} x {cfg.get('H')}{pool}), "
                 f"{rows[0]['test_images']} test images")
        ax.errorbar(K, nll, yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(NADE_TEST_NLL, color="k", linestyle="--", linewidth=1,
               label=f"fixed-order NADE, H = 500 ({NADE_TEST_NLL:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sizes), [str(k) for k in sorted(sizes)])
    ax.minorticks_off()
    ax.set_xlabel("ensemble size K (orderings / mask sets)")
    ax.set_ylabel("test NLL (nats), one standard error")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9)
    ax.set_title("log p_ens(x) = logsumexp_k log p_k(x) - log K", fontsize=9)
    return save_figure(fig, Path(out) / "ensemble_curve.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--out", default="benchmarks/figures")
    p.add_argument("--name", default=None, help="file name prefix (default: the model class, lower case)")
    p.add_argument("--ensemble-curve", nargs="+", metavar="LOG", help="draw ensemble_curve.png from these logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if args.ensemble_curve:
        print(f"written {ensemble_curve(args.ensemble_curve, args.out)}")
        if args.run_dir is None:
            return 0
    if args.run_dir is None:
        p.error("give a run directory (or --ensemble-curve)")
    meta, params, _ = load_checkpoint(Path(args.run_dir) / "best.npz")
    cfg = {k: v for k, v in meta["config"].items() if k != "dtype"}
    model = MODELS[meta["model"]](**cfg)
    model.load_state_dict(params)
    name, out = args.name or meta["model"].lower(), Path(args.out)
    save_figure(image_grid(sample(model, 100, seed=args.seed), title=f"{meta['model']} samples"),
                out / f"{name}_samples.png")
    test = load_binarized_mnist(args.data_dir)["test"]
    picks = np.random.default_rng(args.seed).choice(len(test), 10, replace=False)   # test is class-sorted
    originals = test[np.sort(picks)]
    if hasattr(model, "inpaint"):
        spread = test[np.linspace(0, len(test) - 1, 6).astype(int)]            # six different digits
        save_figure(inpainting_figure(model, spread, seed=args.seed), out / f"{name}_inpainting.png")
    elif not cfg.get("shuffle_order"):
        originals, comps = completion_pairs(model, originals, 14 * 28, seed=args.seed)
        save_figure(completion_grid(originals, comps, title=f"{meta['model']}: top half given, 3 completions"),
                    out / f"{name}_completions.png")
    log = meta["log"]
    hist = {"epoch": [r["epoch"] for r in log], "train_loss": [r["train_nll"] for r in log],
            "valid_loss": [r["valid_nll"] for r in log]}
    save_figure(learning_curves(hist, title=f"{meta['model']} on binarized MNIST"), out / f"{name}_learning_curve.png")
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
