"""Figures from a binarized-MNIST benchmark run: samples, half-image completions, learning curve.

    python benchmarks/mnist_figures.py runs/mnist-nade [--out benchmarks/figures]

Reads RUN_DIR/best.npz (written by benchmarks/binarized_mnist.py) and writes
<out>/<model>_samples.png, <model>_completions.png and <model>_learning_curve.png.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from scratchnade.checkpoint import load_checkpoint
from scratchnade.data.binary import load_binarized_mnist
from scratchnade.models import FVSBN, NADE
from scratchnade.plots import completion_grid, image_grid, learning_curves, save_figure
from scratchnade.sampling import completion_pairs, sample

MODELS = {"NADE": NADE, "FVSBN": FVSBN}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--out", default="benchmarks/figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    meta, params, _ = load_checkpoint(Path(args.run_dir) / "best.npz")
    cfg = {k: v for k, v in meta["config"].items() if k != "dtype"}
    model = MODELS[meta["model"]](**cfg)
    model.load_state_dict(params)
    name, out = meta["model"].lower(), Path(args.out)
    save_figure(image_grid(sample(model, 100, seed=args.seed), title=f"{meta['model']} samples"),
                out / f"{name}_samples.png")
    test = load_binarized_mnist(args.data_dir)["test"]
    picks = np.random.default_rng(args.seed).choice(len(test), 10, replace=False)   # test is class-sorted
    originals = test[np.sort(picks)]
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
