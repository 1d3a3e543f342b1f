"""Reproduce Larochelle & Murray (2011) on binarized MNIST: FVSBN and NADE test NLL in nats.

Trains on the 50k training images, early-stops on the 10k validation images, and reports
the average test NLL (nats per image) of the best-on-validation parameters.  Resumable: each
epoch writes RUN_DIR/last.npz (and RUN_DIR/best.npz when validation improves); running the
same command again continues from there.

    python benchmarks/binarized_mnist.py --model nade --hidden 500
    python benchmarks/binarized_mnist.py --model fvsbn

Prints one JSON line per epoch and a final JSON line with the test NLL.
Paper figures: FVSBN 97.45, NADE (H = 500, fixed order) 88.86; Uria et al. 2016: 88.33.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from scratchnade.checkpoint import load_checkpoint, save_checkpoint
from scratchnade.data.binary import load_binarized_mnist, minibatches
from scratchnade.models.fvsbn import FVSBN
from scratchnade.models.nade import NADE
from scratchnade.optim import Adam
from scratchnade.train import evaluate, fit


class L1FVSBN(FVSBN):
    """FVSBN with an L1 penalty l1 * sum |W| on the weights (a subgradient, added to dW)."""
    checkpoint_name = "FVSBN"   # the penalty is training-only: checkpoints hold a plain FVSBN

    def __init__(self, D, l1, **kw):
        super().__init__(D, **kw)
        self.l1 = l1

    def loss_and_grads(self, x):
        loss, grads = super().loss_and_grads(x)
        W = self.params["W"]
        grads["W"] += self.l1 * np.sign(W)                          # d/dW l1 |W|; 0 on the zero upper part
        return loss + self.l1 * float(np.abs(W).sum()), grads


def build_model(args, D):
    if args.model == "nade":
        return NADE(D, H=args.hidden, seed=args.seed, init_scale=args.init_scale)
    if args.l1:
        return L1FVSBN(D, args.l1, form="matrix", seed=args.seed)
    return FVSBN(D, form="matrix", seed=args.seed)


def save(path, model, opt, state):
    o = opt.state_dict()
    meta = {"model": getattr(model, "checkpoint_name", type(model).__name__),
            "config": model.config, "optimizer": o["type"],
            "optimizer_hyper": o["hyper"], "optimizer_t": o["t"], **state}
    save_checkpoint(path, model.state_dict(), meta, o["arrays"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["nade", "fvsbn"], default="nade")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.5, help="lr factor when validation stalls")
    p.add_argument("--epoch-decay", type=float, default=1.0, help="lr factor after every epoch (1 = off)")
    p.add_argument("--set-lr", type=float, default=None, help="on resume, replace the saved learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--init-scale", type=float, default=0.01)
    p.add_argument("--l1", type=float, default=0.0, help="fvsbn: L1 penalty on W (validation is plain NLL)")
    p.add_argument("--patience", type=int, default=4, help="stalled epochs before stopping (lr decays at half)")
    p.add_argument("--max-minutes", type=float, default=float("inf"), help="stop (resumably) after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder with binarized-mnist/ (else $SCRATCHNADE_DATA)")
    p.add_argument("--run-dir", default=None, help="default runs/mnist-<model>")
    args = p.parse_args(argv)

    data = load_binarized_mnist(args.data_dir)
    train, valid, test = data["train"], data["valid"], data["test"]
    run = Path(args.run_dir or f"runs/mnist-{args.model}")
    model = build_model(args, train.shape[1])
    opt = Adam(lr=args.lr, weight_decay=args.weight_decay)
    state = {"epoch": 0, "best_valid": math.inf, "best_epoch": 0, "stalled": 0, "seconds": 0.0, "log": []}
    if (run / "last.npz").exists():  # resume
        meta, params, optim = load_checkpoint(run / "last.npz")
        model.load_state_dict(params)
        opt.load_state_dict({"type": meta["optimizer"], "hyper": meta["optimizer_hyper"],
                             "t": meta["optimizer_t"], "arrays": optim}, model.params)
        state = {k: meta[k] for k in state}
        if args.set_lr is not None:
            opt.lr = args.set_lr
        print(f"# resumed {run} at epoch {state['epoch']}, lr {opt.lr}", file=sys.stderr)
    else:
        if args.model == "nade":
            model.init_bias(train)
        run.mkdir(parents=True, exist_ok=True)
    valid_batches = list(minibatches(valid, 500, shuffle=False))
    started = time.perf_counter()
    while state["epoch"] < args.epochs and state["stalled"] < args.patience:
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([args.seed, epoch])        # same shuffle on resume
        t0 = time.perf_counter()
        hist = fit(model, [b for b in minibatches(train, args.batch_size, rng=rng)], valid_batches, opt,
                   epochs=1, restore_best=False, record_steps=False, progress=sys.stderr.isatty())
        sec = time.perf_counter() - t0
        v = hist.valid_loss[-1]
        improved = v < state["best_valid"]
        state.update(epoch=epoch, seconds=state["seconds"] + sec,
                     stalled=0 if improved else state["stalled"] + 1)
        if improved:
            state.update(best_valid=v, best_epoch=epoch)
        elif state["stalled"] >= max(1, args.patience // 2):
            opt.lr *= args.lr_decay                             # decay when validation stalls
        opt.lr *= args.epoch_decay
        row = {"epoch": epoch, "train_nll": hist.train_loss[-1], "valid_nll": v, "lr": opt.lr,
               "seconds": round(sec, 1)}
        state["log"].append(row)
        if improved:
            save(run / "best.npz", model, opt, state)
        save(run / "last.npz", model, opt, state)
        print(json.dumps(row), flush=True)
        if (time.perf_counter() - started) / 60 > args.max_minutes:
            print(f"# stopping after {args.max_minutes} min; run again to resume", file=sys.stderr)
            return 0
    meta, params, _ = load_checkpoint(run / "best.npz")
    model.load_state_dict(params)
    test_nll = evaluate(model, list(minibatches(test, 500, shuffle=False)))
    print(json.dumps({"benchmark": "binarized_mnist", "model": args.model, "config": model.config,
                      "test_nll": round(test_nll, 3), "best_epoch": state["best_epoch"],
                      "best_valid_nll": round(state["best_valid"], 3), "epochs": state["epoch"],
                      "train_minutes": round(state["seconds"] / 60, 1),
                      "seconds_per_epoch": round(state["seconds"] / max(state["epoch"], 1), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
