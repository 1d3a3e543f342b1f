"""Binarized MNIST test NLL in nats: FVSBN and NADE (Larochelle & Murray 2011), MADE (Germain et al.
2015) and order-agnostic NADE (Uria et al. 2014), with honest ensembles for the last two.

Trains on the 50k training images, early-stops on the 10k validation images, and reports
the average test NLL (nats per image) of the best-on-validation parameters.  Resumable: each
epoch writes RUN_DIR/last.npz (and RUN_DIR/best.npz when validation improves); running the
same command again continues from there.

    python benchmarks/binarized_mnist.py --model nade --hidden 500
    python benchmarks/binarized_mnist.py --model fvsbn
    python benchmarks/binarized_mnist.py --model made --hidden 500                  # one fixed mask
    python benchmarks/binarized_mnist.py --model made --hidden 500 --masks 32 --ensemble 1 32
    python benchmarks/binarized_mnist.py --model orderless-nade --hidden 500 --ensemble 1 2 4 8 16
    python benchmarks/binarized_mnist.py --model orderless-nade --layers 2 --ensemble 1 2 --test-images 1000
    OPENBLAS_NUM_THREADS=2 python benchmarks/binarized_mnist.py --hidden 500 --target-nll 88.86 --run-dir runs/ttq

Prints one JSON line per epoch and a final JSON line with the test NLL (and, with --ensemble, one
line per ensemble size K: log p_ens(x) = logsumexp_k log p_k(x) - log K over K orderings or mask
sets, each member's exact log-likelihood, with the standard error over the test images).
Paper figures: FVSBN 97.45, NADE (H = 500, fixed order) 88.86; Uria et al. 2016: 88.33; MADE 1
hidden layer of 500, one mask 88.40, 32 masks 86.64.  The order-agnostic NADE's curve over K is set
beside this benchmark's own fixed-order NADE (H = 500: 88.25), see benchmarks/README.md.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from scratchnade.blas_env import prepare_blas

prepare_blas()  # before NumPy loads its BLAS (scratchnade.blas_env says why)

import numpy as np  # noqa: E402

from scratchnade.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from scratchnade.data.binary import load_binarized_mnist, minibatches  # noqa: E402
from scratchnade.ensemble import mixture_log_prob  # noqa: E402
from scratchnade.models.fvsbn import FVSBN  # noqa: E402
from scratchnade.models.nade import NADE  # noqa: E402
from scratchnade.optim import Adam  # noqa: E402
from scratchnade.train import evaluate, fit  # noqa: E402


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
        return NADE(D, H=args.hidden, seed=args.seed, init_scale=args.init_scale or 0.01)
    if args.model == "made":
        from scratchnade.models.made import MADE
        return MADE(D, H=args.hidden, layers=args.layers, activation=args.activation, direct=args.direct,
                    masks=args.masks, shuffle_order=args.shuffle_order, seed=args.seed, init_scale=args.init_scale)
    if args.model == "orderless-nade":
        from scratchnade.models.orderless_nade import OrderlessNADE
        return OrderlessNADE(D, H=args.hidden, layers=args.layers, activation=args.activation, seed=args.seed,
                             init_scale=args.init_scale)
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
    p.add_argument("--model", choices=["nade", "fvsbn", "made", "orderless-nade"], default="nade")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--layers", type=int, default=1, help="made, orderless-nade: hidden layers")
    p.add_argument("--activation", choices=["relu", "sigmoid"], default="relu", help="made, orderless-nade")
    p.add_argument("--masks", type=int, default=1, help="made: mask sets drawn from during training")
    p.add_argument("--shuffle-order", action="store_true", help="made: each mask set has its own ordering")
    p.add_argument("--direct", action="store_true", help="made: direct input-to-output connections")
    p.add_argument("--ensemble", type=int, nargs="+", default=None, metavar="K",
                   help="made, orderless-nade: test NLL of the mixture of the first K members, for each K")
    p.add_argument("--test-images", type=int, default=None, help="score only the first N test images")
    p.add_argument("--valid-images", type=int, default=None,
                   help="validate on the first N validation images (a deep order-agnostic NADE's exact "
                        "likelihood costs D passes per image)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.5, help="lr factor when validation stalls")
    p.add_argument("--epoch-decay", type=float, default=1.0, help="lr factor after every epoch (1 = off)")
    p.add_argument("--set-lr", type=float, default=None, help="on resume, replace the saved learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--init-scale", type=float, default=None, help="nade: default 0.01; others: their own")
    p.add_argument("--l1", type=float, default=0.0, help="fvsbn: L1 penalty on W (validation is plain NLL)")
    p.add_argument("--patience", type=int, default=4, help="stalled epochs before stopping (lr decays at half)")
    p.add_argument("--max-minutes", type=float, default=float("inf"), help="stop (resumably) after this long")
    p.add_argument("--target-nll", type=float, default=None, metavar="NATS",
                   help="time to quality: after each epoch that improves validation, score the test set with "
                        "the current parameters (not counted in the time); stop once its NLL <= NATS and print "
                        "the training minutes it took (e.g. 88.86, the NADE paper's figure)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder with binarized-mnist/ (else $SCRATCHNADE_DATA)")
    p.add_argument("--run-dir", default=None, help="default runs/mnist-<model>")
    args = p.parse_args(argv)

    data = load_binarized_mnist(args.data_dir)
    train, valid, test = data["train"], data["valid"][:args.valid_images], data["test"]
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
        if args.model != "fvsbn":
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
        if args.target_nll is not None and improved:            # time to quality, the test set as the tape
            row["test_nll_now"] = evaluate(model, list(minibatches(test[:args.test_images], 500, shuffle=False)))
        print(json.dumps(row), flush=True)
        if args.target_nll is not None and row.get("test_nll_now", math.inf) <= args.target_nll:
            print(json.dumps({"benchmark": "binarized_mnist_time_to_quality", "model": args.model,
                              "config": model.config, "target_nll": args.target_nll,
                              "test_nll": round(row["test_nll_now"], 3), "epoch": epoch,
                              "train_minutes": round(state["seconds"] / 60, 1),
                              "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}), flush=True)
            return 0
        if (time.perf_counter() - started) / 60 > args.max_minutes:
            print(f"# stopping after {args.max_minutes} min; run again to resume", file=sys.stderr)
            return 0
    meta, params, _ = load_checkpoint(run / "best.npz")
    model.load_state_dict(params)
    test = test[:args.test_images]
    summary = {"benchmark": "binarized_mnist", "model": args.model, "config": model.config,
               "best_epoch": state["best_epoch"], "best_valid_nll": round(state["best_valid"], 3),
               "epochs": state["epoch"], "train_minutes": round(state["seconds"] / 60, 1),
               "seconds_per_epoch": round(state["seconds"] / max(state["epoch"], 1), 1),
               "valid_images": len(valid), "test_images": len(test)}
    if not args.ensemble:
        test_nll = evaluate(model, list(minibatches(test, 500, shuffle=False)))
        print(json.dumps({**summary, "test_nll": round(test_nll, 3)}))
        return 0
    logps, seconds = timed_member_log_probs(model, test, max(args.ensemble))
    for K in sorted(set(args.ensemble)):
        nll = -mixture_log_prob(logps[:K])                              # (N,) -log p_ens(x)
        print(json.dumps({**summary, "ensemble": K, "test_nll": round(float(nll.mean()), 3),
                          "stderr": round(float(nll.std(ddof=1) / math.sqrt(nll.size)), 3),
                          "mean_member_nll": round(float(-logps[:K].mean()), 3),
                          "eval_seconds_per_image_per_member": round(float(np.mean(seconds)) / len(test), 5)}),
              flush=True)
    return 0


def timed_member_log_probs(model, x, K, batch=500):
    """(log p_k(x) for k < K as a (K, N) float64 host array, seconds per member): each member's exact
    joint log-likelihood of every image, the ingredients of every ensemble size up to K.
    scratchnade.ensemble.member_log_probs computes the same for one batch; this walks the test set
    member by member in batches, so each member's evaluation is timed on its own."""
    from scratchnade.backend import asnumpy
    out, seconds = np.empty((K, len(x))), []
    with model.eval_mode():
        for k in range(K):
            t0 = time.perf_counter()
            out[k] = np.concatenate([asnumpy(model.log_prob(b, member=k)).astype(np.float64)
                                     for b in minibatches(x, batch, shuffle=False, dtype=model.dtype)])
            seconds.append(time.perf_counter() - t0)
            print(f"# member {k}: test NLL {-out[k].mean():.3f} ({seconds[-1]:.0f} s)", file=sys.stderr, flush=True)
    return out, seconds


if __name__ == "__main__":
    sys.exit(main())
