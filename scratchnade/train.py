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
attribute.  A model may raise one of :data:`DOMAIN_ERRORS` from ``loss_and_grads`` or ``loss``
when an update has taken its parameters out of their domain (the Gaussian AR's stationary
region); ``fit`` reports it as divergence.  One epoch is::

    for batch in train_batches:                 # or train_batches(epoch), reshuffled per epoch
        loss, grads = model.loss_and_grads(batch)
        optimizer.step(model.params, grads)     # params <- params - lr * update(grads)
    valid = evaluate(model, valid_batches)      # weighted mean loss, also every `eval_every` steps

Epochs and steps are counted from 1.  Each evaluation that beats the best validation loss so far
copies the parameters aside; after `patience` evaluations without improvement training stops, and
at the end (early stop, last epoch, divergence or Ctrl-C) the best parameters are written back into
``model.params`` in place, so the arrays keep their identity and their device.

Divergence (:class:`TrainingDiverged`, the update of that step never applied): a NaN or
infinite training loss; a loss that has grown by orders of magnitude over its best (the rule
of :class:`Divergence`, ``diverge_factor``); a model's domain error (:data:`DOMAIN_ERRORS`).
"""
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields

from tqdm.auto import tqdm

from .backend import asnumpy, get_xp
from .models.base import buffers_reused, compact_grads_for, mode  # mode re-exported: train.mode was its old home
from .models.gaussian_ar import NonStationaryError

DOMAIN_ERRORS = (NonStationaryError,)   # a model's "this update left my parameters' domain"


class TrainingDiverged(FloatingPointError):
    """Training diverged.  ``.history`` holds everything up to that step.

    ``.reason`` says what happened ("training loss is nan", "training loss 1.2e+04 is more than
    100 x its scale over its best ...", a domain error), ``.hint`` what to try, ``.step`` the
    global step of :func:`fit` and ``.step_in_epoch`` its place in the epoch.
    """

    def __init__(self, message, epoch, step, history, reason=None, hint=None, step_in_epoch=None):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history
        self.reason, self.hint, self.step_in_epoch = reason or message, hint, step_in_epoch


class Divergence:
    """When a finite loss counts as diverged: grown by orders of magnitude over its best.

        diverged  <=>  loss - best > factor * scale,      scale = max(|best|, first - best, 1)

    best is the lowest loss seen so far, first the first one.  The rule compares the *excess*
    over the best, not the ratio loss / best, so it works for losses of either sign (the
    Gaussian AR's per-sequence NLL is often negative) and near 0; the scale is the loss's own
    size |best|, or how far training has brought it down (first - best) if that is larger, and
    at least 1 (nat): with the default factor 100 a loss whose best is 90 nats stops above
    9,090, one whose best is -50 above 4,950, one whose best is 0.01 above 100.01.
    factor 0 or None turns the rule off (NaN and inf still stop a run: fit checks them first).

    ``first`` and ``best`` carry the record over from earlier :func:`fit` calls (a run trained one
    epoch per call, resumed from a checkpoint, keeps its guard).
    """

    def __init__(self, factor=100.0, first=None, best=None):
        if factor is not None and not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
            raise ValueError(f"diverge_factor must be a finite number >= 0 (0 turns the check off), got {factor!r}")
        self.factor, self.first, self.best = factor, first, best

    def limit(self):
        """The largest loss that still counts as training (inf when off or before any loss)."""
        if not self.factor or self.best is None:
            return math.inf
        scale = max(abs(self.best), self.first - self.best, 1.0)
        return self.best + self.factor * scale

    def check(self, loss):
        """None if finite `loss` is within the limit (and record it), else the reason it is not."""
        limit = self.limit()
        if loss > limit:
            return (f"training loss {loss:.6g} is more than {self.factor:g} x its scale above its best "
                    f"{self.best:.6g} (limit {limit:.6g}: loss - best > diverge_factor * max(|best|, "
                    f"first - best, 1), first {self.first:.6g})")
        if self.first is None:
            self.first = loss
        if self.best is None or loss < self.best:
            self.best = loss
        return None


@dataclass(repr=False)
class History:
    """What happened during :func:`fit`; every list field has one entry per epoch unless noted.

    valid_loss[i] is the validation loss of the parameters at the end of epoch[i] (None without
    validation); eval_step / eval_loss list every evaluation (several per epoch with `eval_every`);
    step_loss lists the training loss of every step.  ``to_dict()`` is JSON-able.  Printed
    (``repr``/``str``) it is a short summary: epochs, first and last training loss, best
    validation loss and epoch, why it stopped; the lists are attributes.
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

    def __repr__(self):
        n = len(self.epoch)
        if not n:
            return f"History(no epochs{', stopped: ' + self.stop_reason if self.stop_reason else ''})"
        parts = [f"{n} epoch{'s' if n != 1 else ''}",
                 f"train loss {_num(self.train_loss[0])} -> {_num(self.train_loss[-1])}"]
        if self.best_valid is not None:
            parts.append(f"best valid {_num(self.best_valid)} at epoch {self.best_epoch}")
        elif self.valid_loss and self.valid_loss[-1] is not None:
            parts.append(f"valid {_num(self.valid_loss[-1])}")
        parts.append(f"stopped: {self.stop_reason}" if self.stopped_early else "ran every epoch")
        if self.step_loss:
            parts.append(f"{len(self.step_loss):,} step losses")
        return f"History({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def from_dict(cls, d):
        """The History that :meth:`to_dict` gave `d` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _num(x):
    return "None" if x is None else f"{x:.4f}"


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


def batch_items(model, batch):
    """The items of `batch` that fit's rate (items/s) counts: the unit its loss is per.

    ``model.batch_weight(batch)`` when the model defines it (tokens, for the token models,
    whose loss is per token), else the batch's leading dimension: examples, i.e. images of a
    (B, D) binary batch, sequences of a (B, T) real batch, pairs of an (X, y) tuple.  (Not
    :func:`batch_weight`, which counts every element: B * D bits of a binary batch.)
    """
    weigh = getattr(model, "batch_weight", None)
    if weigh is not None:
        return weigh(batch)
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    shape = getattr(batch, "shape", ())
    return int(shape[0]) if len(shape) else 1


def _holds_nan(batch):
    """True if a float array in `batch` (an array, or a tuple / list of them) holds NaN or inf."""
    if isinstance(batch, (tuple, list)):
        return any(_holds_nan(b) for b in batch)
    dtype = getattr(batch, "dtype", None)
    if dtype is None or getattr(dtype, "kind", "") not in "fc":
        return False
    return not bool(get_xp(batch).isfinite(batch).all())


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
        lr_schedule=None, on_epoch_end=None, restore_best=True, record_steps=True, progress=None,
        diverge_factor=100.0, divergence=None):
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
    progress : a tqdm bar per epoch (batches/s, running loss, items/s); None (default): only
        when stderr is a terminal (no bar in logs, pipes, CI); True / False: always / never.
        items/s counts :func:`batch_items`: tokens for token models, else examples
    diverge_factor : stop when a finite training loss grows by more than this many times its
        scale over its best (see :class:`Divergence`); 0 or None: only NaN / inf stop
    divergence : a :class:`Divergence` to continue (its best and first losses carry over from
        earlier calls; its factor wins over `diverge_factor`); it is updated in place

    While it trains, ``model.reuse_buffers`` is on (each gradient is applied before the next
    ``loss_and_grads`` call, so the model may hand out buffers it overwrites next step), and so
    is ``model.compact_grads`` when the optimizer takes compact gradients (scratchnade.compact).

    A NaN or infinite training loss, one over the :class:`Divergence` limit, or a model's domain
    error (:data:`DOMAIN_ERRORS`, e.g. a Gaussian AR step out of the stationary region) raises
    :class:`TrainingDiverged` naming the epoch and step; its update is never applied and the best
    parameters are restored first (as on any exit).  A NaN loss from a batch that itself holds
    NaN or inf says so (a data problem, not the learning rate's).
    """
    _check_fit_arguments(train_batches, valid_batches, optimizer, patience, lr_schedule)
    guard = divergence if divergence is not None else Divergence(diverge_factor)
    if progress is None:
        progress = _stderr_is_terminal()
    history, best, step, bad_evals = History(), None, 0, 0
    base_lr = getattr(optimizer, "lr", None)

    def validate(epoch):
        """Evaluate, record, keep the best params; True when patience has run out."""
        nonlocal best, bad_evals
        try:
            loss = evaluate(model, _batches(valid_batches, epoch))
        except DOMAIN_ERRORS as err:
            raise _diverged(history, f"the parameters left the model's domain ({err})", epoch, step, None,
                            "try a smaller learning rate", where=f"in the validation after step {step}") from err
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
            with mode(model, True), buffers_reused(model), compact_grads_for(model, optimizer), \
                    tqdm(batches, desc=f"epoch {epoch}", unit="batch", total=total, disable=not progress) as bar:
                for batch in bar:
                    if lr_schedule is not None:
                        optimizer.lr = base_lr * lr_schedule(step)
                    try:
                        loss, grads = model.loss_and_grads(batch)
                    except DOMAIN_ERRORS as err:
                        raise _diverged(history, f"the parameters left the model's domain ({err})", epoch,
                                        step + 1, len(losses) + 1, "try a smaller learning rate") from err
                    loss = float(asnumpy(loss))
                    if not math.isfinite(loss):
                        hint = ("the batch holds NaN or inf values: check the data (not a learning-rate "
                                "problem)" if _holds_nan(batch) else "try a smaller learning rate")
                        raise _diverged(history, f"training loss is {loss}", epoch, step + 1, len(losses) + 1,
                                        hint)
                    why = guard.check(loss)
                    if why is not None:
                        raise _diverged(history, why, epoch, step + 1, len(losses) + 1,
                                        "try a smaller learning rate (or a larger diverge_factor; 0 turns "
                                        "this check off)")
                    optimizer.step(model.params, grads)
                    step += 1
                    losses.append(loss)
                    items += batch_items(model, batch)
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


def _stderr_is_terminal():
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):          # replaced or closed stderr
        return False


def _check_fit_arguments(train_batches, valid_batches, optimizer, patience, lr_schedule):
    """Raise TypeError / ValueError for arguments :func:`fit` cannot use."""
    if not callable(train_batches) and iter(train_batches) is train_batches:
        raise TypeError("train_batches is a one-shot iterator; pass a list or a callable epoch -> batches")
    if patience is not None and valid_batches is None:
        raise ValueError("early stopping (patience) needs valid_batches")
    if lr_schedule is not None and not hasattr(optimizer, "lr"):
        raise ValueError("lr_schedule needs an optimizer with an `lr` attribute")


def _diverged(history, reason, epoch, step, step_in_epoch, hint, where=None):
    """Mark `history` as diverged and return the TrainingDiverged to raise at global `step`."""
    history.stopped_early, history.stop_reason = True, "diverged"
    where = where or f"step {step} (step {step_in_epoch} of the epoch)"
    return TrainingDiverged(f"{reason} at epoch {epoch}, {where}; {hint}", epoch, step, history,
                            reason=reason, hint=hint, step_in_epoch=step_in_epoch)
