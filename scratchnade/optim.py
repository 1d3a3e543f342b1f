"""First-order optimizers: SGD, Nesterov momentum (NAG) and Adam, updating arrays in place.

The lecture's update, with g = dloss/dw (we minimise the loss, i.e. ascend log p):

    w <- w - lr * g

Each rule is first a pure per-array function a student could be asked to write
(:func:`sgd_update`, :func:`nesterov_update`, :func:`adam_update`), then a small class
that applies it to a ``dict`` of parameters.  Every class offers

- ``step(params, grads)``: updates the arrays of `params` in place (device arrays stay on
  their device), after checking that grads match params and contain no NaN/inf;
- classic (coupled) L2 weight decay: g <- g + weight_decay * w, i.e. the gradient of
  loss + weight_decay/2 * ||w||^2 (for Adam this is L2, not AdamW's decoupled decay);
- global gradient-norm clipping (``clip=max_norm``, see :func:`clip_grad_norm`), which
  scales `grads` in place, as ``torch.nn.utils.clip_grad_norm_`` does;
- ``lr``: a plain attribute, so a schedule can change it between steps;
- ``state_dict()`` / ``load_state_dict(d)`` for checkpoints.

Per-parameter state (velocity, Adam moments) is keyed by parameter name and created on the
first step with ``xp.zeros_like``.  Temporaries go into one reused scratch buffer per
device and dtype (sized for the largest parameter), so a step allocates nothing big.

Speed.  An update rule is a dozen elementwise passes.  Over a (p, V, H) = 68M-float NADE
weight each pass streams ~272 MB through memory, so on the host the classes apply the rule
block by block (BLOCK_BYTES per array), where all the passes over one block stay in the L2
cache; the result is bit for bit the same.  On a GPU the rule runs on whole arrays.

Two more host habits.  A block whose gradient is exactly zero (most rows of a one-hot
input's weights on most steps: only the batch's tokens get a gradient) runs the rule with
g = 0 written out, ``*_zero_grad``, which skips the passes over g and gives the same values.
And every ``flush_every`` steps, moments that keep decaying are flushed to zero before they
turn subnormal (:func:`flush_subnormals_`), which would make every pass over them ~50x slower.
"""
import numpy as np

from .backend import asnumpy, device_of, get_xp, to_device

BLOCK_BYTES = 1 << 18    # host updates run over 256 KB blocks of each array: w, g, state, tmp fit in L2


# ----------------------------------------------------------------------------- update rules

def sgd_update(w, dw, lr, tmp=None):
    """Plain gradient descent, in place.

        w <- w - lr * dw

    Shapes: w, dw, tmp (...) -- tmp is optional scratch space (else one temporary).
    """
    xp = get_xp(w, dw)
    step = xp.multiply(dw, lr, out=tmp)          # lr * dw
    w -= step
    return w


def nesterov_update(w, dw, v, lr, momentum, tmp=None):
    """Nesterov momentum (NAG), in place, in the Sutskever et al. (2013) / PyTorch form.

        v <- mu * v + dw                  # velocity buffer (v = 0 before the first step)
        w <- w - lr * (dw + mu * v)       # step along the look-ahead gradient

    This is PyTorch's ``SGD(nesterov=True)``.  It is the look-ahead form

        u <- mu * u - lr * grad(theta + mu * u);   theta <- theta + u

    rewritten in the look-ahead point w = theta + mu * u (so the gradient is taken at the
    stored parameters) with u = -lr * v.  Both give the same iterates while lr is
    constant; when a schedule changes lr, this form rescales the accumulated v by the new lr.

    Shapes: w, dw, v, tmp (...) -- v is updated in place; tmp is optional scratch.
    """
    xp = get_xp(w, dw, v)
    v *= momentum
    v += dw                                      # v = mu v + g
    step = xp.multiply(v, momentum, out=tmp)     # mu v
    step += dw                                   # g + mu v: look-ahead gradient
    step *= lr
    w -= step
    return w


def nesterov_update_zero_grad(w, v, lr, momentum, tmp=None):
    """:func:`nesterov_update` with dw = 0 (the same values):  v <- mu v;  w <- w - lr mu v."""
    xp = get_xp(w, v)
    v *= momentum
    step = xp.multiply(v, momentum, out=tmp)     # mu v
    step *= lr
    w -= step
    return w


def adam_update(w, dw, m, v, t, lr, beta1, beta2, eps, tmp=None):
    """Adam (Kingma & Ba, 2015), in place, at step t = 1, 2, ...

        m <- beta1 * m + (1 - beta1) * dw          # first moment (mean of g)
        v <- beta2 * v + (1 - beta2) * dw^2        # second moment (uncentred variance)
        m_hat = m / (1 - beta1^t)                  # bias corrections (m, v start at 0)
        v_hat = v / (1 - beta2^t)
        w <- w - lr * m_hat / (sqrt(v_hat) + eps)

    eps is added after the square root, as in the paper and PyTorch.

    Shapes: w, dw, m, v, tmp (...) -- m and v are updated in place; tmp is optional scratch.
    """
    xp = get_xp(w, dw, m, v)
    m *= beta1
    tmp = xp.multiply(dw, 1.0 - beta1, out=tmp)
    m += tmp                                     # m = b1 m + (1 - b1) g
    v *= beta2
    xp.square(dw, out=tmp)
    tmp *= 1.0 - beta2
    v += tmp                                     # v = b2 v + (1 - b2) g^2
    return _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp)


def adam_update_zero_grad(w, m, v, t, lr, beta1, beta2, eps, tmp=None):
    """:func:`adam_update` with dw = 0 (the same values, five passes fewer):

        m <- beta1 * m;   v <- beta2 * v;   then the same step.

    A one-hot input's weights (an embedding, NADE's V) get a gradient only in the rows of
    the tokens in the batch: most of their blocks are exactly zero on most steps.
    """
    m *= beta1
    v *= beta2
    return _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp)


def _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp):
    """w <- w - lr m_hat / (sqrt(v_hat) + eps), with the bias corrections folded into scalars:

        m_hat / (sqrt(v_hat) + eps) = (sqrt(c2) / c1) * m / (sqrt(v) + eps sqrt(c2))
    """
    xp = get_xp(w, m, v)
    c1 = 1.0 - beta1 ** t                        # bias correction of m
    s2 = (1.0 - beta2 ** t) ** 0.5               # sqrt of the bias correction of v
    tmp = xp.sqrt(v, out=tmp)
    tmp += eps * s2                              # (sqrt(v_hat) + eps) * s2
    xp.divide(m, tmp, out=tmp)
    tmp *= lr * s2 / c1                          # lr * m_hat / (sqrt(v_hat) + eps)
    w -= tmp
    return w


def flush_subnormals_(a, threshold, tmp=None):
    """a[|a| < threshold] = 0, in place (a host array; tmp: optional scratch shaped like a).

    Why: a moment whose gradient stays 0 (a rare token's embedding row) decays geometrically,
    m <- 0.9 m, and after ~750 steps enters the subnormal range (|m| < 1.2e-38 in float32),
    where x86 CPUs take ~50x longer per operation: without the flush, Adam on a 33,278 x 256
    input weight with Zipf-drawn rows runs 2.1x slower by step 1,500, when 19% of m is
    subnormal (benchmarks/optim_speed.py).  GPUs run subnormals at full speed.
    """
    tmp = np.abs(a, out=tmp)
    a[tmp < threshold] = 0
    return a


def flush_threshold(dtype, decay, every):
    """The |a| below which a state decaying by `decay` per step is flushed, every `every` steps:
    tiny / decay^every, so that nothing above it turns subnormal before the next flush.
    At most 2^20 tiny (~1e-32 in float32): a faster decay crosses the subnormals in a step or two."""
    return float(np.finfo(dtype).tiny) / max(decay ** every, 2.0 ** -20)


# ----------------------------------------------------------------------------- gradient norms

def check_match(params, grads):
    """Raise ValueError unless grads has exactly params' keys and each gradient its shape."""
    if set(params) != set(grads):
        missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
        raise ValueError(f"grads do not match params: missing {missing}, unexpected {extra}")
    for name, w in params.items():
        if tuple(grads[name].shape) != tuple(w.shape):
            raise ValueError(f"gradient of {name!r} has shape {grads[name].shape}, "
                             f"parameter has shape {w.shape}")


def _sum_squares(g, name):
    """sum(g^2) as a Python float; ValueError naming `name` if g holds NaN or inf."""
    xp = get_xp(g)
    flat = g.ravel()
    with np.errstate(over="ignore", invalid="ignore"):   # NumPy only; inf is handled below
        sq = float(flat @ flat)
    if np.isfinite(sq):
        return sq
    if not bool(xp.isfinite(g).all()):
        raise ValueError(f"gradient of {name!r} contains NaN or inf")
    a = float(xp.abs(g).max())                          # finite but g^2 overflows: rescale
    s = flat / a
    return a * a * float(s @ s)


def grad_norm(grads):
    """Global L2 norm sqrt(sum over all arrays of sum(g^2)), as a Python float.

    Raises ValueError naming the first parameter whose gradient holds NaN or inf.
    """
    return sum(_sum_squares(g, name) for name, g in grads.items()) ** 0.5


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so that their global norm is at most max_norm.

        total = sqrt(sum_k ||g_k||^2)
        g_k <- g_k * max_norm / total        (only when total > max_norm)

    Returns the norm before clipping (worth logging).  ValueError on NaN/inf gradients.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    total = grad_norm(grads)
    if total > max_norm:
        scale = max_norm / total
        for g in grads.values():
            g *= scale
    return total


# ----------------------------------------------------------------------------- optimizers

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}      # float itemsize -> same-size unsigned int


def _all_zero(g):
    """True when every entry of the host block g is +0.0: its bits, read as unsigned
    integers, have maximum 0 (one cheap pass; -0.0 counts as nonzero, which is safe)."""
    return not g.view(_UINT[g.itemsize]).max()


def _blocks(*arrays):
    """Slices of the flat arrays (all of one size) that an update rule runs over in turn.

    Cache-sized blocks of BLOCK_BYTES on the host, for arrays larger than one block that are
    all C-contiguous (so their flat views write through).  None otherwise: a small or strided
    array, or a GPU, where a block would only add kernel launches; the rule then runs once.
    """
    a = arrays[0]
    step = max(1, BLOCK_BYTES // a.itemsize)
    if get_xp(*arrays) is not np or a.size <= step or not all(x.flags.c_contiguous for x in arrays):
        return None
    return [slice(i, min(i + step, a.size)) for i in range(0, a.size, step)]


def linear_anneal(progress, start=0.0):
    """Learning-rate multiplier of a stable-then-decay schedule at `progress` in [0, 1] of a run.

        m = 1                                  progress <= start
        m = (1 - progress) / (1 - start)       start < progress <= 1   (linear to 0 at the end)

    start = 0 decays from the first step; start = 0.5 keeps lr for the first half of the run.
    """
    if not 0.0 <= start < 1.0:
        raise ValueError(f"anneal start must be in [0, 1), got {start}")
    return min(1.0, max(0.0, 1.0 - progress) / (1.0 - start))


class Optimizer:
    """Common machinery: checks, weight decay, clipping, lazy state, scratch, state_dict.

    Subclasses set ``state_names`` (per-parameter arrays), ``hyper_names`` (extra
    hyperparameters saved in state_dict) and implement ``_update(w, g, state, tmp)``,
    ``_update_zero_grad(w, state, tmp)`` (the same rule with g = 0) and, when their state
    decays, ``_decays()`` (for the subnormal flush).
    """
    state_names = ()
    hyper_names = ()
    flush_every = 8          # host steps between subnormal flushes of decaying state (None: never)

    def __init__(self, lr, weight_decay=0.0, clip=None):
        self.lr = lr                       # mutable: schedules change it between steps
        self.weight_decay = weight_decay
        self.clip = clip
        self.t = 0                         # number of steps taken
        self.state = {}                    # name -> {state name: array}
        self.last_grad_norm = None         # global gradient norm before clipping
        self._scratch = {}                 # (device, dtype, slot) -> flat buffer
        self._host_state = False           # True after load_state_dict without params

    # --- one step -------------------------------------------------------------
    def step(self, params, grads):
        """Update every array of `params` in place from `grads` (same keys and shapes)."""
        check_match(params, grads)
        if self._host_state:
            self._place_state(params)
        if self.clip is not None:          # also checks for NaN/inf before anything moves
            self.last_grad_norm = clip_grad_norm(grads, self.clip)
        else:
            self.last_grad_norm = grad_norm(grads)
        self.t += 1
        for name, w in params.items():
            g = grads[name]
            if self.weight_decay:
                g = get_xp(w).multiply(w, self.weight_decay, out=self._buffer(w, "decay"))
                g += grads[name]           # g + wd * w: classic L2
            self._apply(w, g, self._state(name, w), self._buffer(w, "tmp"))

    def _apply(self, w, g, state, tmp):
        """The update rule on whole arrays, or block by block on the host (the same bits);
        on the host, every `flush_every` steps, decaying state is kept out of the subnormals."""
        flush = self._flush_thresholds(w) if get_xp(w) is np else {}
        blocks = _blocks(w, g, tmp, *state.values())
        if blocks is None:                                          # GPU, small or strided arrays
            self._update(w, g, state, tmp)
            for k, threshold in flush.items():
                flush_subnormals_(state[k], threshold, tmp)
            return
        w, g, tmp = w.reshape(-1), g.reshape(-1), tmp.reshape(-1)   # views: all C-contiguous
        state = {k: a.reshape(-1) for k, a in state.items()}
        for b in blocks:
            block_state = {k: a[b] for k, a in state.items()}
            if _all_zero(g[b]):                                     # a one-hot input's untouched rows
                self._update_zero_grad(w[b], block_state, tmp[b])
            else:
                self._update(w[b], g[b], block_state, tmp[b])
            for k, threshold in flush.items():                      # while the block is in cache
                flush_subnormals_(block_state[k], threshold, tmp[b])

    def _flush_thresholds(self, w):
        """{state name: threshold} to flush at this step (see :func:`flush_subnormals_`), or {}."""
        if not self.flush_every or self.t % self.flush_every:
            return {}
        return {k: flush_threshold(w.dtype, d, self.flush_every)
                for k, d in self._decays().items() if 0.0 < d < 1.0}

    def _decays(self):
        """{state name: factor it is multiplied by each step}, for the subnormal flush."""
        return {}

    def _update(self, w, g, state, tmp):
        raise NotImplementedError

    def _update_zero_grad(self, w, state, tmp):
        """The rule with g = 0, the same values as ``_update`` (subclasses skip the g terms)."""
        raise NotImplementedError

    def _state(self, name, w):
        """The state arrays of parameter `name`, created as zeros on first use."""
        if name not in self.state:
            xp = get_xp(w)
            self.state[name] = {s: xp.zeros_like(w) for s in self.state_names}
        return self.state[name]

    def _buffer(self, w, slot):
        """A scratch view shaped like `w`, cut from a reused flat buffer."""
        key = (device_of(w), np.dtype(w.dtype).str, slot)
        buf = self._scratch.get(key)
        if buf is None or buf.size < w.size:
            buf = get_xp(w).empty(max(w.size, 1), dtype=w.dtype)
            self._scratch[key] = buf
        return buf[:w.size].reshape(w.shape)

    # --- checkpoints ----------------------------------------------------------
    def hyper(self):
        """Hyperparameters as JSON-able Python scalars."""
        h = {"lr": self.lr, "weight_decay": self.weight_decay, "clip": self.clip}
        h.update({k: getattr(self, k) for k in self.hyper_names})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in h.items()}

    def state_dict(self):
        """{"type", "hyper", "t", "arrays": {"<state>/<param>": host ndarray}}."""
        arrays = {f"{s}/{name}": np.array(asnumpy(a))
                  for name, st in self.state.items() for s, a in st.items()}
        return {"type": type(self).__name__, "hyper": self.hyper(), "t": self.t, "arrays": arrays}

    def load_state_dict(self, d, params=None):
        """Restore a :meth:`state_dict`.  The arrays go to the device and dtype of `params`
        now if given, else on the next :meth:`step` (where they are checked against it)."""
        if d.get("type") != type(self).__name__:
            raise ValueError(f"state_dict is for {d.get('type')!r}, not {type(self).__name__!r}")
        allowed = {"lr", "weight_decay", "clip", *self.hyper_names}
        unknown = sorted(set(d["hyper"]) - allowed)
        if unknown:
            raise ValueError(f"unknown hyperparameters for {type(self).__name__}: {unknown}")
        state = {}
        for key, a in d["arrays"].items():
            s, _, name = key.partition("/")
            if s not in self.state_names or not name:
                raise ValueError(f"unexpected state array {key!r} for {type(self).__name__} "
                                 f"(expected '<{'|'.join(self.state_names)}>/<param name>')")
            state.setdefault(name, {})[s] = np.array(a)
        for name, st in state.items():
            if set(st) != set(self.state_names):
                raise ValueError(f"state of {name!r} has {sorted(st)}, expected {list(self.state_names)}")
        for k, v in d["hyper"].items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        self.t = int(d["t"])
        self.state, self._host_state = state, True
        if params is not None:
            self._place_state(params)

    def _place_state(self, params):
        """Move host state arrays loaded by load_state_dict next to their parameters."""
        if self.state and set(self.state) != set(params):
            raise ValueError(f"optimizer state is for parameters {sorted(self.state)}, "
                             f"but params has {sorted(params)}")
        for name, st in self.state.items():
            w = params[name]
            for s, a in st.items():
                if a.shape != tuple(w.shape):
                    raise ValueError(f"state {s}/{name} has shape {a.shape}, "
                                     f"parameter has shape {w.shape}")
                st[s] = to_device(a.astype(w.dtype), device_of(w))
        self._host_state = False


class SGD(Optimizer):
    """Stochastic gradient descent: w <- w - lr * (g + weight_decay * w)."""

    def _update(self, w, g, state, tmp):
        sgd_update(w, g, self.lr, tmp)

    def _update_zero_grad(self, w, state, tmp):
        pass                                       # w - lr * 0 = w


class Nesterov(Optimizer):
    """Nesterov momentum, PyTorch form (see :func:`nesterov_update`); state "v" per parameter."""
    state_names = ("v",)
    hyper_names = ("momentum",)

    def __init__(self, lr, momentum=0.9, weight_decay=0.0, clip=None):
        super().__init__(lr, weight_decay, clip)
        self.momentum = momentum

    def _update(self, w, g, state, tmp):
        nesterov_update(w, g, state["v"], self.lr, self.momentum, tmp)

    def _update_zero_grad(self, w, state, tmp):
        nesterov_update_zero_grad(w, state["v"], self.lr, self.momentum, tmp)

    def _decays(self):
        return {"v": self.momentum}


class Adam(Optimizer):
    """Adam with L2 weight decay (see :func:`adam_update`); state "m", "v" per parameter."""
    state_names = ("m", "v")
    hyper_names = ("betas", "eps")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip=None):
        super().__init__(lr, weight_decay, clip)
        self.betas = tuple(betas)
        self.eps = eps

    def _update(self, w, g, state, tmp):
        beta1, beta2 = self.betas
        adam_update(w, g, state["m"], state["v"], self.t, self.lr, beta1, beta2, self.eps, tmp)

    def _update_zero_grad(self, w, state, tmp):
        beta1, beta2 = self.betas
        adam_update_zero_grad(w, state["m"], state["v"], self.t, self.lr, beta1, beta2, self.eps, tmp)

    def _decays(self):
        return dict(zip(("m", "v"), self.betas))
