"""A training run on disk, resumable to the bit: config, checkpoints, history, learning curve.

A run directory holds::

    config.json          the full run config (every option of `train`)
    last.npz             checkpoint at the end of the last completed epoch (epoch 0: before training)
    best.npz             checkpoint of the best validation loss so far
    history.csv / .json  one row per epoch: train and valid loss, lr, seconds, items/s
    learning_curve.png   train and valid loss against epoch, redrawn every epoch

Training is driven one epoch at a time through :func:`scratchnade.train.fit`.  Everything an
epoch depends on is either saved in the checkpoint (parameters, optimizer state and step
count, the models' dropout Generators, early-stopping and lr-decay counters) or derived
from (seed, epoch) (the batch order: ``numpy.random.default_rng([seed, epoch])``), and a
carried RNN state is reset at every epoch start.  So training k epochs, stopping, and
resuming gives bit-identical parameters to an uninterrupted run on the CPU.

Checkpoints are only written at epoch boundaries, best.npz before last.npz, each atomically.
Ctrl-C or a diverging loss therefore leaves last.npz at the end of the last completed epoch;
``train --resume`` restarts the interrupted epoch from its first batch.
"""
import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from .backend import to_device
from .checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from .data.binary import minibatches
from .data.download import atomic_write
from .data.text import Vocabulary, stream_batches, window_batches
from .optim import SGD, Adam, Nesterov, linear_anneal
from .registry import ModelUnavailable, model_from_config
from .train import History, TrainingDiverged, evaluate, fit

OPTIMIZERS = {"sgd": SGD, "nesterov": Nesterov, "adam": Adam}


class UsageError(ValueError):
    """Options that do not fit together (the command line reports it like an argparse error)."""


def check_device(device):
    """UsageError for an unknown device name (DeviceUnavailableError for a GPU without CuPy)."""
    try:
        to_device(np.zeros(1), device)
    except ValueError as err:
        raise UsageError(str(err)) from err


# ----------------------------------------------------------------------------- run state

@dataclass
class RunState:
    """Where a run stands after `epoch` completed epochs (saved in every checkpoint)."""
    epoch: int = 0                  # epochs completed
    step: int = 0                   # optimizer steps taken (the warm-up clock)
    best_valid: float = None
    best_epoch: int = None
    bad_epochs: int = 0             # epochs since the best validation loss (early stopping)
    lr_bad_epochs: int = 0          # the same, reset by each lr decay (decay on plateau)
    items_per_s: list = field(default_factory=list)
    history: History = field(default_factory=History)

    def to_dict(self):
        d = asdict(self)
        d["history"] = self.history.to_dict()
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["history"] = History.from_dict(d.get("history", {}))
        return cls(**d)


def build_optimizer(cfg):
    """The optimizer of run config `cfg`: sgd, nesterov (momentum) or adam (betas, eps)."""
    kw = {"lr": cfg["lr"], "weight_decay": cfg.get("weight_decay") or 0.0, "clip": cfg.get("clip")}
    if cfg["optimizer"] == "nesterov":
        kw["momentum"] = cfg["momentum"]
    elif cfg["optimizer"] == "adam":
        kw.update(betas=tuple(cfg.get("betas") or (0.9, 0.999)), eps=cfg.get("eps") or 1e-8)
    return OPTIMIZERS[cfg["optimizer"]](**kw)


def rng_states(model):
    """JSON-able states of every numpy Generator the model holds (its dropout streams)."""
    return {k: v.bit_generator.state for k, v in vars(model).items() if isinstance(v, np.random.Generator)}


def set_rng_states(model, states):
    for k, st in states.items():
        gen = getattr(model, k, None)
        if isinstance(gen, np.random.Generator):
            gen.bit_generator.state = st


# ----------------------------------------------------------------------------- checkpoints

def data_info(data):
    """What evaluate / sample need to know about the data without loading it."""
    return {"name": data.name, "kind": data.kind, "unit": data.unit, "level": data.level,
            "image_shape": list(data.image_shape) if data.image_shape else None,
            "entropy": data.entropy}


def save_run(path, model, optimizer, state, cfg, data):
    """Write one checkpoint: params, optimizer arrays and a JSON header (see checkpoint.py)."""
    o = optimizer.state_dict()
    meta = {"model": type(model).__name__, "config": model.config, "data": data_info(data),
            "vocab": data.vocab.to_list() if data.vocab is not None else None,
            "optimizer": {"type": o["type"], "hyper": o["hyper"], "t": o["t"]},
            "epoch": state.epoch, "state": state.to_dict(), "rng": rng_states(model), "run_config": cfg}
    save_checkpoint(path, model.state_dict(), meta, o["arrays"])


def checkpoint_path(target, prefer="best.npz"):
    """The checkpoint file of a run directory (best.npz, else last.npz) or `target` itself."""
    target = Path(target)
    if target.is_dir():
        for name in (prefer, "last.npz", "best.npz"):
            if (target / name).is_file():
                return target / name
        raise CheckpointError(f"no checkpoint in {target} (expected best.npz or last.npz there)")
    return target


def load_params(model, params, path):
    """Copy checkpoint arrays into model.params; CheckpointError naming a missing key or bad shape."""
    try:
        model.load_state_dict(params)
    except ValueError as err:
        raise CheckpointError(f"{path} does not fit the {type(model).__name__} it describes: {err}") from err


def model_from_checkpoint(path, device=None):
    """(meta, model) from a checkpoint file: the class and config it names, then its parameters."""
    meta, params, _ = load_checkpoint(path)
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} is not a model checkpoint (no model class or config in its header)")
    try:
        _, model = model_from_config(meta["model"], meta["config"], device)
    except ModelUnavailable as err:
        raise CheckpointError(f"{path} holds a {meta['model']}: {err}") from err
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds a {meta['model']} that cannot be rebuilt: {err}") from err
    load_params(model, params, path)
    return meta, model


def check_vocab(meta, data, path):
    """CheckpointError unless the checkpoint's vocabulary is the data set's."""
    saved = meta.get("vocab")
    if data.vocab is not None and saved is not None and Vocabulary.from_list(saved) != data.vocab:
        raise CheckpointError(f"{path} was trained with another vocabulary ({len(saved)} tokens) than "
                              f"{data.name} has ({len(data.vocab)} tokens)")


def restore(path, model, optimizer, data):
    """Load last.npz into a freshly built model and optimizer; return the RunState it holds."""
    meta, params, optim = load_checkpoint(path)
    check_compatible(meta, model, path)
    check_vocab(meta, data, path)
    load_params(model, params, path)
    o = meta.get("optimizer") or {}
    try:
        optimizer.load_state_dict({"type": o.get("type"), "hyper": o.get("hyper", {}), "t": o.get("t", 0),
                                   "arrays": optim}, model.params)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: the optimizer state does not fit this run: {err}") from err
    try:
        set_rng_states(model, meta.get("rng", {}))
        return RunState.from_dict(meta["state"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has no usable run state ({err}): it was not written by "
                              f"`train`") from err


# ----------------------------------------------------------------------------- batches

class EpochBatches:
    """One epoch's training batches: sized (the progress bar's total), counting what it yields."""

    def __init__(self, make, n, limit=None, count=None):
        self.make, self.n = make, n if limit is None else min(n, limit)
        self.count = count or (lambda b: b.shape[0])
        self.batches = self.items = 0
        self.seconds = 0.0              # from the first batch to the end of the last step

    def __len__(self):
        return self.n

    def __iter__(self):
        start = time.perf_counter()
        for batch in islice(self.make(), self.n):
            self.batches += 1
            self.items += self.count(batch)
            yield batch
        self.seconds = time.perf_counter() - start   # asked for one more batch: the last step is done


def _ceil(a, b):
    return -(-a // b)


def train_batches(data, cfg, epoch, model, device, x=None):
    """The batches of `epoch`, shuffled by default_rng([seed, epoch]) (streams in order when carrying).

    x: the training examples already on `device` (binary and real data), to move them once.
    """
    B, limit, rng = cfg["batch_size"], cfg.get("max_batches"), np.random.default_rng([cfg["seed"], epoch])
    if data.kind != "tokens":
        x = to_device(data.train, device) if x is None else x
        return EpochBatches(lambda: minibatches(x, B, rng=rng, dtype=model.dtype), _ceil(len(x), B), limit)
    p, ids = cfg["order"], data.train
    if getattr(model, "carry_state", False):
        return EpochBatches(lambda: stream_batches(ids, p, B, device=device), _ceil(ids.size // B, p),
                            limit, count=lambda b: b.size)
    return EpochBatches(lambda: window_batches(ids, p, B, rng=rng, device=device), _ceil(ids.size // p, B),
                        limit, count=lambda b: b.size)


def eval_batches(data, split, cfg, model, device):
    """A list of validation batches (fixed order): examples, or windows of p tokens."""
    x, B = data.split(split), cfg["eval_batch_size"]
    if data.kind == "tokens":
        return list(window_batches(x, cfg["order"], B, shuffle=False, device=device))
    return list(minibatches(to_device(x, device), B, shuffle=False, dtype=model.dtype))


def evaluate_split(model, data, split, cfg, mode="chunked", device=None):
    """NLL of a split: {nll, unit, count, mode, p, ppl, bits, true_entropy} (ppl/bits for tokens)."""
    out = {"split": split, "unit": data.unit, "mode": None, "p": None}
    if data.kind == "tokens":
        from .evaluate import perplexity
        r = perplexity(model, data.split(split), p=cfg["order"], batch_size=cfg["eval_batch_size"], mode=mode,
                       device=device)
        out.update(nll=r["nll"], ppl=r["ppl"], bits=r["bits"], count=r["tokens"], mode=mode, p=r["p"])
    else:
        x = data.split(split)
        batches = minibatches(to_device(x, device), cfg["eval_batch_size"], shuffle=False, dtype=model.dtype)
        out.update(nll=evaluate(model, batches), count=int(len(x)))
    out["true_entropy"] = data.true_entropy(split, out["mode"] or "chunked", out["p"], cfg["eval_batch_size"])
    return out


# ----------------------------------------------------------------------------- files

def _write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_config(run_dir, cfg):
    _write_text(Path(run_dir) / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")


HISTORY_COLUMNS = ("epoch", "train_loss", "valid_loss", "lr", "seconds", "items_per_s")


def write_history(run_dir, state, data, plot=True, title=None, entropy=None):
    """history.csv, history.json and (with `plot`) learning_curve.png of the epochs so far.

    entropy: the source's true entropy on the validation split, drawn as a dashed line.
    """
    h = state.history
    rows = zip(h.epoch, h.train_loss, h.valid_loss, h.lr, h.seconds, state.items_per_s)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    w.writerows(rows)
    run_dir = Path(run_dir)
    _write_text(run_dir / "history.csv", buf.getvalue())
    doc = {**h.to_dict(), "items_per_s": state.items_per_s, "unit": f"nats per {data.unit}"}
    _write_text(run_dir / "history.json", json.dumps(doc, indent=1) + "\n")
    if plot and h.epoch:
        from .plots import learning_curves, save_figure
        fig = learning_curves(h, title=title, ylabel=f"NLL (nats per {data.unit})")
        if entropy is not None:
            ax = fig.axes[0]
            ax.axhline(entropy, color="k", linestyle="--", linewidth=1, label=f"true entropy {entropy:.2f}")
            ax.legend()
        save_figure(fig, run_dir / "learning_curve.png")


# ----------------------------------------------------------------------------- the epoch loop

def lr_schedule(cfg, step0, steps_per_epoch):
    """fit's lr multiplier at its step s, global step g = step0 + s (None: constant lr).

    m(g) = warm-up(g) * anneal(g), each 1 when not asked for:
    warm-up  min(1, (g + 1) / warmup)                                      (cfg["warmup"] steps)
    anneal   linear_anneal(g / (epochs * steps_per_epoch), cfg["anneal"])   (over the run's --epochs)
    """
    warmup, anneal = cfg.get("warmup"), cfg.get("anneal")
    if not warmup and anneal is None:
        return None
    total = cfg["epochs"] * steps_per_epoch

    def multiplier(step):
        g = step0 + step
        m = min(1.0, (g + 1) / warmup) if warmup else 1.0
        return m * (linear_anneal(g / total, anneal) if anneal is not None else 1.0)
    return multiplier


def run_epoch(model, optimizer, data, cfg, state, valid, device, x=None):
    """Train one epoch and update `state` (history, counters, lr decay); True if validation improved."""
    epoch = state.epoch + 1
    if hasattr(model, "reset_state"):
        model.reset_state()                                  # a carried RNN state starts fresh each epoch
    if hasattr(model, "train_step"):
        model.train_step = state.step                        # the scheduled-sampling clock (exact on resume)
    batches = train_batches(data, cfg, epoch, model, device, x)
    state.history.stopped_early, state.history.stop_reason = False, None
    start = time.perf_counter()
    try:
        h = fit(model, lambda _: batches, valid, optimizer, epochs=1,
                lr_schedule=lr_schedule(cfg, state.step, len(batches)), restore_best=False,
                record_steps=False, progress=bool(cfg.get("progress")))
    except TrainingDiverged as err:                          # fit counts this epoch as its first: renumber
        loss = str(err).split(" at epoch")[0]                # "training loss is nan"
        raise TrainingDiverged(f"{loss} at epoch {epoch}, step {err.step} of the epoch (step "
                               f"{state.step + err.step} of the run)", epoch, state.step + err.step,
                               err.history) from err
    except ValueError as err:                                # the optimizer's check of the gradients
        if "NaN or inf" not in str(err):
            raise
        raise TrainingDiverged(f"{err} at epoch {epoch}", epoch, state.step + batches.batches, None) from err
    seconds = time.perf_counter() - start
    v = h.valid_loss[-1]
    if v is not None and not math.isfinite(v):               # finite steps, but the parameters overflowed
        raise TrainingDiverged(f"validation loss is {v} after epoch {epoch}", epoch, state.step, h)
    improved = v is not None and math.isfinite(v) and (state.best_valid is None or v < state.best_valid)
    state.epoch, state.step = epoch, state.step + batches.batches
    if improved:
        state.best_valid, state.best_epoch, state.bad_epochs, state.lr_bad_epochs = v, epoch, 0, 0
    else:
        state.bad_epochs += 1
        state.lr_bad_epochs += 1
        if cfg.get("lr_decay") and state.lr_bad_epochs >= cfg["lr_patience"]:
            optimizer.lr *= cfg["lr_decay"]                   # decay on plateau
            state.lr_bad_epochs = 0
    hist = state.history
    hist.epoch.append(epoch)
    hist.train_loss.append(h.train_loss[-1])
    hist.valid_loss.append(v)
    hist.seconds.append(seconds)
    hist.lr.append(h.lr[-1])
    hist.best_valid, hist.best_epoch = state.best_valid, state.best_epoch
    state.items_per_s.append(batches.items / max(batches.seconds, 1e-9))   # training only, no validation
    if cfg.get("patience") and state.bad_epochs >= cfg["patience"]:
        hist.stopped_early, hist.stop_reason = True, "patience"
    return improved


def epoch_line(state, cfg, data, improved):
    h = state.history
    unit = "tok" if data.kind == "tokens" else "ex"
    return (f"epoch {h.epoch[-1]:>3}/{cfg['epochs']}  train {h.train_loss[-1]:.4f}"
            f"  valid {h.valid_loss[-1]:.4f}  lr {h.lr[-1]:.2e}  {state.items_per_s[-1]:,.0f} {unit}/s"
            f"  {h.seconds[-1]:.1f} s"
            + ("  *best" if improved else ""))


def train_loop(run_dir, model, optimizer, data, cfg, state, device, out=None):
    """Run epochs until cfg['epochs'] or early stopping, checkpointing after each one.

    TrainingDiverged (a NaN/inf training or validation loss, or NaN/inf gradients) and
    KeyboardInterrupt pass through; the checkpoints on disk are then those of the last
    completed epoch.
    """
    out = out or sys.stdout
    run_dir = Path(run_dir)
    valid = eval_batches(data, "valid", cfg, model, device)
    x = None if data.kind == "tokens" else to_device(data.train, device)
    title = f"{cfg['model']} on {data.name}"
    entropy = data.true_entropy("valid", "chunked", cfg.get("order"))
    patience = cfg.get("patience")
    while state.epoch < cfg["epochs"] and not (patience and state.bad_epochs >= patience):
        improved = run_epoch(model, optimizer, data, cfg, state, valid, device, x)
        if improved:
            save_run(run_dir / "best.npz", model, optimizer, state, cfg, data)
        save_run(run_dir / "last.npz", model, optimizer, state, cfg, data)
        write_history(run_dir, state, data, plot=cfg.get("plot", True), title=title, entropy=entropy)
        print(epoch_line(state, cfg, data, improved), file=out, flush=True)
        if state.history.stopped_early:
            print(f"early stop: no better validation loss for {patience} epochs "
                  f"(best {state.best_valid:.4f} at epoch {state.best_epoch})", file=out)
    return state
