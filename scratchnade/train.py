"""The training loop: epochs, validation, early stopping, history, progress bar.

What :func:`fit` needs from the model (the contract of ``scratchnade.models``)::

    model.params                    dict name -> array, updated in place by the optimizer
    model.loss_and_grads(batch)     -> (mean loss, dict of gradients with the same keys)
    model.loss(batch)               optional; used for validation when present
    model.training                  optional bool; True during training steps (dropout on),
                                    False during validation
    model.batch_weight(batch)       optional; how many items a batch's mean loss averages over
    model.reset_state()             optional; called at the start of every epoch (a recurrent
                                    model that carries its hidden state across batches)

and from the optimizer: ``optimizer.step(params, grads)`` and, for ``lr_schedule``, an ``lr``
attribute.  One epoch is::

    for batch in train_batches:                 # or train_batches(epoch), reshuffled per epoch
        loss, grads = model.loss_and_grads(batch)
        optimizer.step(model.params, grads)     # params <- params - lr * update(grads)
    valid = evaluate(model, valid_batches)      # weighted mean loss, also every `eval_every` steps

Epochs and steps are counted from 1.  Each evaluation that beats the best validation loss so far
copies the parameters aside; after `patience` evaluations without improvement training stops, and
at the end (early stop, last epoch, divergence or Ctrl-C) the best parameters are written back into
``model.params`` in place, so the arrays keep their identity and their device.
"""
import math
import time
from dataclasses import asdict, dataclass, field, fields

from tqdm.auto import tqdm

from .backend import asnumpy, get_xp
from .models.base import buffers_reused, mode  # mode re-exported: train.mode was its old home


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite.  ``.history`` holds everything up to that step."""

    def __init__(self, message, epoch, step, history):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history


@dataclass
class History:
    """What happened during :func:`fit`; every list field has one entry per epoch unless noted.

    valid_loss[i] is the validation loss of the parameters at the end of epoch[i] (None without
    validation); eval_step / eval_loss list every evaluation (several per epoch with `eval_every`);
    step_loss lists the training loss of every step.  ``to_dict()`` is JSON-able.
    """
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)      # mean over the epoch's steps
    valid_loss: list = field(default_factory=list)
    seconds: list = field(default_factory=list)         # wall clock, validation included
    lr: list = field(default_factory=list)              # optimizer.lr at the epoch's last step
    step_loss: list = field(default_factory=list)       # one per step (when record_steps)
    eval_step: list = field(default_factory=list)       # global step of each evaluation
    eval_loss: list = field(default_factory=list)
    best_valid: float = None
    best_epoch: int = None
    best_step: int = None
    stopped_early: bool = False
    stop_reason: str = None                             # "patience", "callback" or "diverged"

    def end_epoch(self, epoch, losses, valid, seconds, lr):
        """Append one epoch's row: mean of its step `losses`, its validation loss (or None), its
        wall time and the optimizer's lr at its last step (or None)."""
        self.epoch.append(epoch)
        self.train_loss.append(sum(losses) / len(losses))
        self.valid_loss.append(valid)
        self.seconds.append(seconds)
        self.lr.append(None if lr is None else float(lr))

    def to_dict(self):
        """A plain dict of lists and numbers (for json.dump and checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The History that :meth:`to_dict` gave `d` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def batch_weight(batch):
    """How many items a batch's mean loss averages over, for weighting per-batch means.

    An array counts its elements: B*D bits for a (B, D) binary batch, T*B tokens for a (T, B)
    token batch, so equal-shaped batches weigh the same and a short last batch weighs less.
    A tuple or list (inputs, targets, ...) counts its first element; anything else counts 1.
    Models whose loss averages over something else (a mask) define ``model.batch_weight``.
    """
    if isinstance(batch, (tuple, list)) and batch:
        return batch_weight(batch[0])
    return int(getattr(batch, "size", 1))


def evaluate(model, batches):
    """Weighted mean loss over `batches`, in evaluation mode (``model.training = False``).

        loss = sum_i n_i * loss_i / sum_i n_i,    n_i = batch_weight(batch_i)

    uses ``model.loss(batch)`` when the model has it, else the loss of ``loss_and_grads``.
    Returns a Python float (nan for no batches).
    """
    loss_fn = getattr(model, "loss", None) or (lambda batch: model.loss_and_grads(batch)[0])
    weigh = getattr(model, "batch_weight", batch_weight)
    total = count = 0.0
    with mode(model, False):
        for batch in batches:
            n = weigh(batch)
            total += n * float(asnumpy(loss_fn(batch)))
            count += n
    return total / count if count else math.nan


def _copy_params(params, into=None):
    """Copies of every parameter on its own device (into the arrays of `into` when given)."""
    if into is None:
        return {k: get_xp(v).copy(v) for k, v in params.items()}
    for k, v in params.items():
        into[k][...] = v
    return into


def _batches(source, epoch):
    """The batches of one epoch: ``source(epoch)`` for a callable, else `source` itself."""
    return source(epoch) if callable(source) else source


def fit(model, train_batches, valid_batches, optimizer, epochs=10, patience=None, eval_every=None,
        lr_schedule=None, on_epoch_end=None, restore_best=True, record_steps=True, progress=True):
    """Train `model` with `optimizer` for up to `epochs` epochs; return a :class:`History`.

    Parameters
    ----------
    train_batches : list (re-iterated every epoch) or callable epoch -> iterable of batches
    valid_batches : the same, or None for no validation (then no early stopping, no restoring)
    patience : stop after this many evaluations in a row without a new best validation loss
    eval_every : also evaluate every this many steps (default: only at the end of each epoch)
    lr_schedule : callable step -> multiplier; optimizer.lr = base_lr * lr_schedule(step),
        step counting updates done so far (0 for the first); base_lr is put back at the end
    on_epoch_end : callable (epoch, history) -> truthy to stop (e.g. to save a checkpoint)
    restore_best : write the best-validation parameters back into model.params at the end
    record_steps : keep every step's loss in history.step_loss
    progress : show a tqdm bar per epoch (batches/s, running loss, items/s); False prints nothing

    While it trains, ``model.reuse_buffers`` is on (each gradient is applied before the next
    ``loss_and_grads`` call, so the model may hand out buffers it overwrites next step).

    A NaN or infinite training loss raises :class:`TrainingDiverged` naming the epoch and step;
    its update is never applied and the best parameters are restored first (as on any exit).
    """
    _check_fit_arguments(train_batches, valid_batches, optimizer, patience, lr_schedule)
    history, best, step, bad_evals = History(), None, 0, 0
    base_lr = getattr(optimizer, "lr", None)
    weigh = getattr(model, "batch_weight", batch_weight)

    def validate(epoch):
        """Evaluate, record, keep the best params; True when patience has run out."""
        nonlocal best, bad_evals
        loss = evaluate(model, _batches(valid_batches, epoch))
        history.eval_step.append(step)
        history.eval_loss.append(loss)
        if math.isfinite(loss) and (history.best_valid is None or loss < history.best_valid):
            history.best_valid, history.best_epoch, history.best_step = loss, epoch, step
            best, bad_evals = _copy_params(model.params, into=best), 0
        else:
            bad_evals += 1
        return patience is not None and bad_evals >= patience

    try:
        for epoch in range(1, epochs + 1):
            start, losses, items, stop = time.perf_counter(), [], 0, None
            batches = _batches(train_batches, epoch)
            if hasattr(model, "reset_state"):             # a state carried across batches ends with the epoch
                model.reset_state()
            total = len(batches) if hasattr(batches, "__len__") else None
            with mode(model, True), buffers_reused(model), \
                    tqdm(batches, desc=f"epoch {epoch}", unit="batch", total=total, disable=not progress) as bar:
                for batch in bar:
                    if lr_schedule is not None:
                        optimizer.lr = base_lr * lr_schedule(step)
                    loss, grads = model.loss_and_grads(batch)
                    loss = float(asnumpy(loss))
                    if not math.isfinite(loss):
                        raise _diverged(history, loss, epoch, step + 1, len(losses) + 1)
                    optimizer.step(model.params, grads)
                    step += 1
                    losses.append(loss)
                    items += weigh(batch)
                    if record_steps:
                        history.step_loss.append(loss)
                    seconds = time.perf_counter() - start
                    bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}",
                                    items_per_s=f"{items / max(seconds, 1e-9):.0f}", refresh=False)
                    if valid_batches is not None and eval_every and step % eval_every == 0:
                        if validate(epoch):
                            stop = "patience"
                            break
            if not losses:
                raise ValueError(f"train_batches gave no batches in epoch {epoch}")
            if valid_batches is not None and stop is None and history.eval_step[-1:] != [step]:
                stop = "patience" if validate(epoch) else None
            history.end_epoch(epoch, losses, history.eval_loss[-1] if valid_batches is not None else None,
                              time.perf_counter() - start, getattr(optimizer, "lr", None))
            if on_epoch_end is not None and on_epoch_end(epoch, history) and stop is None:
                stop = "callback"
            if stop is not None:
                history.stopped_early, history.stop_reason = True, stop
                break
    finally:
        if lr_schedule is not None:
            optimizer.lr = base_lr
        if restore_best and best is not None:
            _copy_params(best, into=model.params)
    return history


def _check_fit_arguments(train_batches, valid_batches, optimizer, patience, lr_schedule):
    """Raise TypeError / ValueError for arguments :func:`fit` cannot use."""
    if not callable(train_batches) and iter(train_batches) is train_batches:
        raise TypeError("train_batches is a one-shot iterator; pass a list or a callable epoch -> batches")
    if patience is not None and valid_batches is None:
        raise ValueError("early stopping (patience) needs valid_batches")
    if lr_schedule is not None and not hasattr(optimizer, "lr"):
        raise ValueError("lr_schedule needs an optimizer with an `lr` attribute")


def _diverged(history, loss, epoch, step, step_in_epoch):
    """Mark `history` as diverged and return the TrainingDiverged to raise at global `step`."""
    history.stopped_early, history.stop_reason = True, "diverged"
    return TrainingDiverged(f"training loss is {loss} at epoch {epoch}, step {step} (step {step_in_epoch} "
                            f"of the epoch); try a smaller learning rate", epoch, step, history)
