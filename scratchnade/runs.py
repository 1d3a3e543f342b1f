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

Divergence stops a run (:class:`scratchnade.train.TrainingDiverged`, nothing saved for the
epoch): a NaN or inf training or validation loss or gradient; a training loss over the limit
of :class:`scratchnade.train.Divergence` with factor ``cfg["diverge_factor"]`` (default 100, 0
turns it off), whose best and first losses live in the run state (so a resumed run keeps its
guard); a validation loss over the same rule against the best and first validation losses; a
model's domain error (a Gaussian AR step out of the stationary region).

Validation (every epoch) scores the validation split: binary and real data in full; token
data in mode :func:`eval_mode` (stream for a recurrent model that carries its state, else
chunked; a configured "sliding" is used for the final test only, at p times the cost)
and, with ``cfg["eval_tokens"]``, only the first that many tokens (see :func:`evaluate_split`).

Every checkpoint a command *uses* (evaluate, sample, resume) is refused if a parameter or
optimizer array holds NaN or inf (:func:`load_params`, :func:`restore`), and its headers are
validated before any array is read (:mod:`scratchnade.checkpoint`).
"""
import dataclasses
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
from .checkpoint import (CheckpointError, check_compatible, check_finite, inspect_checkpoint, load_checkpoint,
                         save_checkpoint)
from .data.binary import minibatches
from .data.download import atomic_write
from .data.text import Vocabulary, stream_batches, window_batches
from .optim import SGD, Adam, Nesterov, linear_anneal
from .registry import ModelUnavailable, model_from_config
from .models.base import mode as training_mode
from .train import DOMAIN_ERRORS, Divergence, History, TrainingDiverged, evaluate, fit

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
    loss_first: float = None        # first and lowest training step loss: the divergence guard's record
    loss_best: float = None
    teacher_forcing: list = field(default_factory=list)   # scheduled sampling: eps at each epoch's last step

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
    """Copy checkpoint arrays into model.params; CheckpointError naming a missing key, a bad shape, or a
    parameter that holds NaN or inf (a checkpoint of a diverged run is not used)."""
    check_finite(params, path)
    try:
        model.load_state_dict(params)
    except ValueError as err:
        raise CheckpointError(f"{path} does not fit the {type(model).__name__} it describes: {err}") from err


SIZE_KEYS = ("D", "H", "p", "vocab_size", "layers", "embed_dim")   # model config values that size arrays


def check_config_sizes(meta, entries, path):
    """CheckpointError unless the header's model sizes fit the parameter arrays the file holds.

    The model is built from its config before its parameters can be compared, so a forged
    header (H = 10^9 in a small file) would allocate first.  Every size in the config (D, H, p,
    vocab_size, layers, embed_dim) must be at most the largest dimension of the file's
    parameter arrays (or their count) + 1, and their product at most 8 * layers times the
    number of parameter values in the file (every model here has a weight array of that
    product's size, deep NADE's W of product / layers).  The entries' shapes come from
    :func:`scratchnade.checkpoint.inspect_checkpoint`, already checked against the file's size.
    """
    shapes = [shape for k, (shape, _) in entries.items() if k.startswith("param/")]
    largest = max([d for shape in shapes for d in shape] + [len(shapes)], default=0)
    total = sum(math.prod(shape) for shape in shapes)
    sizes = {k: v for k, v in meta["config"].items()
             if k in SIZE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, v in sizes.items():
        if not v <= largest + 1:
            raise CheckpointError(f"{path}: its header says {k} = {v:,}, but no parameter array in the file is "
                                  f"that large (largest dimension {largest:,}): refused before building the model")
    layers = sizes.get("layers", 1)
    if math.prod(sizes.values()) > 8 * max(1, layers) * max(1, total):
        detail = ", ".join(f"{k} = {v:,}" for k, v in sizes.items())
        raise CheckpointError(f"{path}: its header describes a model ({detail}) far larger than the "
                              f"{total:,} parameter values the file holds: refused before building the model")


def model_from_checkpoint(path, device=None):
    """(meta, model) from a checkpoint file: the class and config it names, then its parameters.

    Order: the entries' headers are validated (no array read), the header's sizes checked against
    them (:func:`check_config_sizes`), the model built, the entries' shapes compared with its
    parameters, and only then the arrays read; NaN / inf parameters are refused.
    """
    entries = inspect_checkpoint(path)
    meta = load_checkpoint(path, arrays=False)[0]
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} is not a model checkpoint (no model class or config in its header)")
    check_config_sizes(meta, entries, path)
    try:
        _, model = model_from_config(meta["model"], meta["config"], device)
    except ModelUnavailable as err:
        raise CheckpointError(f"{path} holds a {meta['model']}: {err}") from err
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds a {meta['model']} that cannot be rebuilt: {err}") from err
    _, params, _ = load_checkpoint(path, expect=_shapes(model))
    load_params(model, params, path)
    return meta, model


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.params.items()}


def check_vocab(meta, data, path):
    """CheckpointError unless the checkpoint's vocabulary is the data set's."""
    saved = meta.get("vocab")
    if data.vocab is not None and saved is not None and Vocabulary.from_list(saved) != data.vocab:
        raise CheckpointError(f"{path} was trained with another vocabulary ({len(saved)} tokens) than "
                              f"{data.name} has ({len(data.vocab)} tokens)")


def restore(path, model, optimizer, data):
    """Load last.npz into a freshly built model and optimizer; return the RunState it holds."""
    meta = load_checkpoint(path, arrays=False)[0]              # headers only: validated, nothing read
    check_compatible(meta, model, path)
    check_vocab(meta, data, path)
    meta, params, optim = load_checkpoint(path, expect=_shapes(model))
    load_params(model, params, path)
    check_finite(optim, path, "optimizer array")
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


def eval_mode(cfg, model):
    """The evaluation mode of token model `model` under run config `cfg`.

    cfg["eval_mode"] when set; else (absent or None) "stream" for a recurrent model that carries
    its hidden state across batches (``carry_state``: it is trained that way, and stream is the
    usual RNN language-model figure; chunked would restart every window from W_init), else
    "chunked".
    """
    mode = cfg.get("eval_mode")
    if mode:
        return mode
    return "stream" if getattr(model, "carry_state", False) and hasattr(model, "stream_log_prob") else "chunked"


def validation_mode(cfg, model):
    """The mode of the per-epoch validation: :func:`eval_mode`, except "sliding" (p times the cost
    of chunked: kept for the final test) validates chunked."""
    mode = eval_mode(cfg, model)
    return "chunked" if mode == "sliding" else mode


def _first_tokens(data, split, max_tokens):
    """`data` with `split` cut to its first `max_tokens` tokens (a shallow copy; data itself unchanged)."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise UsageError(f"max_tokens (--max-tokens / --eval-tokens) must be a whole number >= 1, "
                         f"got {max_tokens!r}")
    if data.kind != "tokens":
        raise UsageError(f"--max-tokens / --eval-tokens only applies to token data; {data.name} holds "
                         f"{data.kind} data (every {data.unit} is scored)")
    ids = data.split(split)
    if max_tokens >= ids.size:
        return data
    return dataclasses.replace(data, **{split: ids[:int(max_tokens)]})


def evaluate_split(model, data, split, cfg, mode=None, device=None, max_tokens=None):
    """NLL of a split: {nll, unit, count, mode, p, ppl, bits, true_entropy, max_tokens} (ppl/bits for tokens).

    mode : token data: "chunked", "sliding" or "stream"; None: :func:`eval_mode` (stream for a
        recurrent model with carry_state, else chunked, unless cfg["eval_mode"] says otherwise)
    max_tokens : token data: score only the first max_tokens tokens of the split (a quick
        estimate on a big corpus; count says how many were scored, true_entropy is that of the
        shorter stream).  Refused (UsageError) for binary and real data, whose examples are
        always all scored; None: the whole split.
    """
    out = {"split": split, "unit": data.unit, "mode": None, "p": None, "max_tokens": max_tokens}
    if max_tokens is not None:
        data = _first_tokens(data, split, max_tokens)
    if data.kind == "tokens":
        from .evaluate import perplexity
        mode = mode or eval_mode(cfg, model)
        ids, B = data.split(split), cfg["eval_batch_size"]
        if mode == "stream" and ids.size < B:
            raise UsageError(f"stream evaluation cuts the split into --eval-batch-size = {B} streams, but only "
                             f"{ids.size:,} tokens are scored (--max-tokens / --eval-tokens): give at least {B}")
        r = perplexity(model, ids, p=cfg["order"], batch_size=B, mode=mode, device=device)
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
SS_COLUMN = "teacher_forcing"       # scheduled-sampling runs only: eps at the epoch's last step


def write_history(run_dir, state, data, plot=True, title=None, entropy=None):
    """history.csv, history.json and (with `plot`) learning_curve.png of the epochs so far.

    entropy: the source's true entropy on the validation split, drawn as a dashed line.
    """
    h = state.history
    columns, cols = HISTORY_COLUMNS, [h.epoch, h.train_loss, h.valid_loss, h.lr, h.seconds, state.items_per_s]
    eps = _eps_column(state)
    if eps is not None:
        columns, cols = columns + (SS_COLUMN,), cols + [eps]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(zip(*cols))
    run_dir = Path(run_dir)
    _write_text(run_dir / "history.csv", buf.getvalue())
    doc = {**h.to_dict(), "items_per_s": state.items_per_s, "unit": f"nats per {data.unit}"}
    if eps is not None:
        doc[SS_COLUMN] = eps
    _write_text(run_dir / "history.json", json.dumps(doc, indent=1) + "\n")
    if plot and h.epoch:
        from .plots import learning_curves, save_figure
        fig = learning_curves(h, title=title, ylabel=f"NLL (nats per {data.unit})")
        if entropy is not None:
            ax = fig.axes[0]
            ax.axhline(entropy, color="k", linestyle="--", linewidth=1, label=f"true entropy {entropy:.2f}")
            ax.legend()
        save_figure(fig, run_dir / "learning_curve.png")


def _eps_column(state):
    """Per-epoch eps aligned with the history (None before the run recorded it), or None without
    scheduled sampling."""
    eps = state.teacher_forcing
    if not any(e is not None for e in eps):
        return None
    return [None] * (len(state.history.epoch) - len(eps)) + list(eps)


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


def teacher_forcing_eps(model, step):
    """Scheduled sampling: eps_i of `model` at training step i (``model.teacher_forcing()`` as it
    reads while training); None for a model without a schedule."""
    if getattr(model, "scheduled_sampling", None) is None or not hasattr(model, "teacher_forcing"):
        return None
    saved = model.train_step
    model.train_step = max(0, int(step))
    try:
        with training_mode(model, True):
            return float(model.teacher_forcing())
    finally:
        model.train_step = saved


def make_validator(model, data, cfg, device):
    """validate() -> the validation loss of the current parameters (see the module docstring)."""
    if data.kind == "tokens":
        mode, n = validation_mode(cfg, model), cfg.get("eval_tokens")

        def validate():
            return evaluate_split(model, data, "valid", cfg, mode=mode, device=device, max_tokens=n)["nll"]
        validate.mode, validate.max_tokens = mode, n
        if n is not None:
            _first_tokens(data, "valid", n)                       # refuse a bad eval_tokens now
        return validate
    if cfg.get("eval_tokens") is not None:
        _first_tokens(data, "valid", cfg["eval_tokens"])          # raises: tokens only
    valid = eval_batches(data, "valid", cfg, model, device)

    def validate():
        return evaluate(model, valid)
    validate.mode = validate.max_tokens = None
    return validate


def run_epoch(model, optimizer, data, cfg, state, valid, device, x=None):
    """Train one epoch and update `state` (history, counters, lr decay); True if validation improved.

    valid: a validate() -> loss function (:func:`make_validator`), or a list of validation batches.
    """
    epoch = state.epoch + 1
    if not callable(valid):
        batches_ = valid
        valid = lambda: evaluate(model, batches_)                # noqa: E731
    if hasattr(model, "reset_state"):
        model.reset_state()                                  # a carried RNN state starts fresh each epoch
    if hasattr(model, "train_step"):
        model.train_step = state.step                        # the scheduled-sampling clock (exact on resume)
    batches = train_batches(data, cfg, epoch, model, device, x)
    state.history.stopped_early, state.history.stop_reason = False, None
    factor = cfg.get("diverge_factor", 100.0)
    guard = Divergence(factor, state.loss_first, state.loss_best)
    progress = cfg.get("progress")
    start = time.perf_counter()
    try:
        h = fit(model, lambda _: batches, None, optimizer, epochs=1,
                lr_schedule=lr_schedule(cfg, state.step, len(batches)), restore_best=False,
                record_steps=False, progress=None if progress is None else bool(progress), divergence=guard)
        v = valid()
    except TrainingDiverged as err:                          # fit counts this epoch as its first: renumber
        hint = f": {err.hint}" if err.hint and "batch holds NaN" in err.hint else ""
        raise TrainingDiverged(f"{err.reason} at epoch {epoch}, step {err.step} of the epoch (step "
                               f"{state.step + err.step} of the run){hint}", epoch, state.step + err.step,
                               err.history, reason=err.reason, hint=err.hint,
                               step_in_epoch=err.step) from err
    except DOMAIN_ERRORS as err:                             # the validation after the epoch's last step
        raise TrainingDiverged(f"the parameters left the model's domain ({err}) after epoch {epoch}", epoch,
                               state.step + batches.batches, None, reason=str(err)) from err
    except ValueError as err:                                # the optimizer's check of the gradients
        if "NaN or inf" not in str(err):
            raise
        raise TrainingDiverged(f"{err} at epoch {epoch}", epoch, state.step + batches.batches, None) from err
    seconds = time.perf_counter() - start
    if v is not None and not math.isfinite(v):               # finite steps, but the parameters overflowed
        raise TrainingDiverged(f"validation loss is {v} after epoch {epoch}", epoch, state.step, h)
    past = [u for u in state.history.valid_loss if u is not None]
    why = Divergence(factor, past[0] if past else None, state.best_valid).check(v) if v is not None else None
    if why is not None:
        raise TrainingDiverged(f"{why.replace('training loss', 'validation loss', 1)} after epoch {epoch}", epoch,
                               state.step + batches.batches, h, reason=why)
    improved = v is not None and (state.best_valid is None or v < state.best_valid)
    state.epoch, state.step = epoch, state.step + batches.batches
    state.loss_first, state.loss_best = guard.first, guard.best
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
    eps = teacher_forcing_eps(model, state.step - 1)
    if eps is not None or state.teacher_forcing:
        state.teacher_forcing += [None] * (len(hist.epoch) - 1 - len(state.teacher_forcing)) + [eps]
    if cfg.get("patience") and state.bad_epochs >= cfg["patience"]:
        hist.stopped_early, hist.stop_reason = True, "patience"
    return improved


def epoch_line(state, cfg, data, improved, mode=None, max_tokens=None):
    """One line per epoch: losses (and for tokens the validation perplexity with its mode), lr, rate,
    time, and the scheduled-sampling eps when the run uses it."""
    h = state.history
    unit = "tok" if data.kind == "tokens" else "ex"
    v = h.valid_loss[-1]
    valid = f"  valid {v:.4f}"
    if data.kind == "tokens":
        ppl = math.exp(v) if v < 700 else math.inf
        scope = f", first {max_tokens:,} tokens" if max_tokens else ""
        valid += f" (ppl {ppl:.2f}, {mode or 'chunked'}{scope})"
    eps = state.teacher_forcing[-1] if state.teacher_forcing else None
    return (f"epoch {h.epoch[-1]:>3}/{cfg['epochs']}  train {h.train_loss[-1]:.4f}"
            + valid + f"  lr {h.lr[-1]:.2e}"
            + (f"  eps {eps:.3f}" if eps is not None else "")
            + f"  {state.items_per_s[-1]:,.0f} {unit}/s  {h.seconds[-1]:.1f} s"
            + ("  *best" if improved else ""))


def train_loop(run_dir, model, optimizer, data, cfg, state, device, out=None):
    """Run epochs until cfg['epochs'] or early stopping, checkpointing after each one.

    TrainingDiverged (a NaN/inf training or validation loss, or NaN/inf gradients, a loss over
    the ``diverge_factor`` rule, a domain error) and KeyboardInterrupt pass through; the
    checkpoints on disk are then those of the last completed epoch.  UsageError for an
    ``eval_tokens`` that cannot apply (binary / real data, not a whole number >= 1) comes
    before the first epoch.
    """
    out = out or sys.stdout
    run_dir = Path(run_dir)
    validate = make_validator(model, data, cfg, device)
    x = None if data.kind == "tokens" else to_device(data.train, device)
    title = f"{cfg['model']} on {data.name}"
    shown = data if validate.max_tokens is None else _first_tokens(data, "valid", validate.max_tokens)
    entropy = shown.true_entropy("valid", validate.mode or "chunked", cfg.get("order"), cfg.get("eval_batch_size"))
    patience = cfg.get("patience")
    while state.epoch < cfg["epochs"] and not (patience and state.bad_epochs >= patience):
        improved = run_epoch(model, optimizer, data, cfg, state, validate, device, x)
        if improved:
            save_run(run_dir / "best.npz", model, optimizer, state, cfg, data)
        save_run(run_dir / "last.npz", model, optimizer, state, cfg, data)
        write_history(run_dir, state, data, plot=cfg.get("plot", True), title=title, entropy=entropy)
        print(epoch_line(state, cfg, data, improved, validate.mode, validate.max_tokens), file=out, flush=True)
        if state.history.stopped_early:
            print(f"early stop: no better validation loss for {patience} epochs "
                  f"(best {state.best_valid:.4f} at epoch {state.best_epoch})", file=out)
    return state
