"""What every model class shares: a params dict, its hyperparameters, device moves.

Each model file implements the maths as pure functions ``forward(params, x, ...) ->
(loss, cache)`` and ``backward(dloss, cache) -> grads``; its class only holds ``params``
(a dict named after the lecture's symbols) and the hyperparameters in ``config``, and
offers ``loss_and_grads(x)``, ``log_prob(x)`` and ``sample(n, ...)``.
"""
import numpy as np

from ..backend import asnumpy, device_of, to_device


class Model:
    """Base class.  Subclasses set ``self.params`` and ``self.config`` (JSON-able kwargs)."""
    params: dict
    config: dict
    training = True   # dropout and similar train-time noise is on only when True

    def loss_and_grads(self, x):
        """Mean NLL of batch x and the gradient of every parameter (same keys as params)."""
        raise NotImplementedError

    def log_prob(self, x):
        """Natural-log likelihood of x (per example, or per token for sequence models)."""
        raise NotImplementedError

    def loss(self, x):
        """Mean NLL of x without gradients (used for validation)."""
        return -float(self.log_prob(x).mean())

    @property
    def device(self):
        return device_of(next(iter(self.params.values())))

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def to(self, device):
        """Move every parameter to `device` ("cpu", "gpu", ...) in place; returns self."""
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
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

