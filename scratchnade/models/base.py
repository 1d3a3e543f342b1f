"""What every model class shares: a params dict, its hyperparameters, device moves.

Each model file implements the maths as pure functions ``forward(params, x, ...) ->
(loss, cache)`` and ``backward(dloss, cache) -> grads``; its class only holds ``params``
(a dict named after the lecture's symbols) and the hyperparameters in ``config``, and
offers ``loss_and_grads(x)``, ``log_prob(x)`` and ``sample(n, ...)``.

Gradients are safe to keep by default: every ``loss_and_grads`` call returns new arrays.
A training loop that applies each gradient before the next call may set
``model.reuse_buffers = True``; the big gradient arrays (the (p, V, H) and (V, H) weights
of the token models) then live in buffers that the NEXT call overwrites, which saves the
page faults of allocating them every step.
"""
from contextlib import contextmanager

import numpy as np

from ..backend import asnumpy, device_of, get_xp, to_device


@contextmanager
def _temporarily(model, name, value):
    """Set attribute `name` of `model` (if it has one) to `value` inside a with-block, then put it back."""
    if not hasattr(model, name):
        yield
        return
    old = getattr(model, name)
    setattr(model, name, value)
    try:
        yield
    finally:
        setattr(model, name, old)


def mode(model, training):
    """``with mode(model, False):`` runs the block with ``model.training = False`` (if it has one)."""
    return _temporarily(model, "training", training)


def buffers_reused(model):
    """``with buffers_reused(model):`` runs the block with ``model.reuse_buffers = True``: for a loop
    that applies every gradient before the next ``loss_and_grads`` call."""
    return _temporarily(model, "reuse_buffers", True)


def compact_grads_for(model, optimizer):
    """``with compact_grads_for(model, optimizer):`` runs the block with ``model.compact_grads =
    True`` when the optimizer takes compact gradients (``optimizer.takes_compact_grads``, True for
    those of scratchnade.optim; see scratchnade.compact), else as it is."""
    return _temporarily(model, "compact_grads", bool(getattr(optimizer, "takes_compact_grads", False)))


def init_pixel_bias(model, x):
    """Set model.params["b"] (D,) to the logit of each pixel's mean in binary data x (B, D),
    clipped to [1e-3, 1 - 1e-3]: b_d = log(m_d / (1 - m_d)).  The binary models' `init_bias`:
    a good start for training.  Returns the model."""
    b = model.params["b"]
    m = to_device(np.clip(asnumpy(x).astype(np.float64).mean(axis=0), 1e-3, 1 - 1e-3), model.device)
    b[...] = get_xp(b).log(m / (1.0 - m)).astype(model.dtype)
    return model


class Model:
    """Base class.  Subclasses set ``self.params`` and ``self.config`` (JSON-able kwargs)."""
    params: dict
    config: dict
    training = True        # dropout and similar train-time noise is on only when True
    reuse_buffers = False  # True: loss_and_grads returns gradient buffers the next call overwrites
    compact_grads = False  # True: big gradients may come back compact (scratchnade.compact), for
                           # scratchnade's optimizers; valid until the next loss_and_grads call

    def loss_and_grads(self, x):
        """Mean NLL of batch x and the gradient of every parameter (same keys as params)."""
        raise NotImplementedError

    def log_prob(self, x):
        """Natural-log likelihood of x (per example, or per token for sequence models)."""
        raise NotImplementedError

    def loss(self, x):
        """Mean NLL of x without gradients (used for validation)."""
        return -float(self.log_prob(x).mean())

    def eval_mode(self):
        """``with model.eval_mode():`` runs the block with ``training = False`` (no dropout)."""
        return mode(self, False)

    def _buffer(self, name, shape):
        """A reusable array of `shape` on the model's device and dtype (kept while they match).

        Flat and only growing, so a short last batch does not reallocate.  The big (T*B, V)
        logits live here between steps (DESIGN: reuse big buffers), and so do the gradients
        when ``reuse_buffers`` is on.
        """
        ref = next(iter(self.params.values()))
        buffers = self.__dict__.setdefault("_buffers", {})
        size = int(np.prod(shape))
        buf = buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != ref.dtype or device_of(buf) != device_of(ref):
            buf = buffers[name] = get_xp(ref).empty(size, dtype=ref.dtype)
        return buf[:size].reshape(shape)

    def _grad_buffers(self, names):
        """{name: reused buffer shaped like params[name]} for the backward pass's ``out=``
        when ``reuse_buffers`` is on, else None (the backward pass allocates new arrays)."""
        if not self.reuse_buffers:
            return None
        return {k: self._buffer("d" + k, self.params[k].shape) for k in names if k in self.params}

    @property
    def device(self):
        return device_of(next(iter(self.params.values())))

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def to(self, device):
        """Move every parameter to `device` ("cpu", "gpu", ...) in place; returns self."""
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
        self.__dict__.pop("_buffers", None)
        return self

    def num_parameters(self):
        return int(sum(v.size for v in self.params.values()))

    def state_dict(self):
        """Host copies of the parameters (for checkpoints)."""
        return {k: np.array(asnumpy(v)) for k, v in self.params.items()}

    def load_state_dict(self, arrays):
        """Copy host arrays into the parameters, checking names and shapes."""
        missing = set(self.params) ^ set(arrays)
        if missing:
            raise ValueError(f"parameter names differ: expected {sorted(self.params)}, got {sorted(arrays)}")
        for k, v in self.params.items():
            if tuple(arrays[k].shape) != tuple(v.shape):
                raise ValueError(f"parameter {k!r} has shape {tuple(arrays[k].shape)}, model expects {tuple(v.shape)}")
            v[...] = to_device(np.asarray(arrays[k], dtype=v.dtype), device_of(v))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

