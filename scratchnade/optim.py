"""First-order optimizers: SGD, Nesterov momentum (NAG) and Adam.

Notation: w a parameter array, g = dloss/dw its gradient (we minimise the loss, i.e. ascend
log p), lr the learning rate, t = 1, 2, ... the step; every rule acts elementwise on one array.

SGD (the lecture's update):

    w_t = w_{t-1} - lr * g_t

Nesterov momentum (Sutskever et al. 2013, in PyTorch's form; v_0 = 0):

    v_t = mu * v_{t-1} + g_t
    w_t = w_{t-1} - lr * (g_t + mu * v_t)

Adam (Kingma & Ba 2015; m_0 = v_0 = 0):

    m_t = beta1 * m_{t-1} + (1 - beta1) * g_t           first moment
    v_t = beta2 * v_{t-1} + (1 - beta2) * g_t^2         second moment (uncentred)
    m_hat_t = m_t / (1 - beta1^t)                       bias corrections
    v_hat_t = v_t / (1 - beta2^t)
    w_t = w_{t-1} - lr * m_hat_t / (sqrt(v_hat_t) + eps)

Classic L2 weight decay (the gradient of loss + wd/2 ||w||^2; for Adam this is not AdamW):

    g_t <- g_t + wd * w_{t-1}

Global gradient-norm clipping over all parameter arrays k:

    total = sqrt(sum_k ||g_k||^2);    g_k <- g_k * max_norm / total    when total > max_norm

Hyperparameters are checked when an optimizer is made, when a state_dict is loaded, and at every
step (a schedule sets ``opt.lr`` between steps), before anything moves; ValueError names the
value (:data:`HYPER_RANGES`):

    lr, weight_decay    finite, >= 0          (lr = 0 is where a linear anneal ends)
    momentum, betas     in [0, 1)
    eps                 finite, > 0
    clip                None or > 0 (inf: never clip)
"""
import math
import numbers

import numpy as np

from . import optim_host
from .compact import RowGrad, all_finite, is_compact
from .backend import asnumpy, device_of, get_xp, to_device


# ----------------------------------------------------------------------------- the rules, as in the papers

def sgd_update(w, dw, lr):
    """Plain gradient descent on one array, in place.  Returns w.

    Shapes: w, dw (...).
    """
    w -= lr * dw                                 # w_t = w_{t-1} - lr g_t
    return w


def nesterov_update(w, dw, v, lr, momentum):
    """Nesterov momentum (NAG) on one array, in place, in Sutskever et al.'s (2013) form.  Returns w.

    This is PyTorch's ``SGD(nesterov=True)``.  It is the look-ahead form

        u <- mu * u - lr * grad(theta + mu * u);   theta <- theta + u

    rewritten in the look-ahead point w = theta + mu * u (so the gradient is taken at the
    stored parameters) with u = -lr * v.  Both give the same iterates while lr is
    constant; when a schedule changes lr, this form rescales the accumulated v by the new lr.

    Shapes: w, dw, v (...) -- v (the velocity, zeros before the first step) is updated in place.
    """
    g, mu = dw, momentum
    v[...] = mu * v + g                          # v_t = mu v_{t-1} + g_t
    w -= lr * (g + mu * v)                       # w_t = w_{t-1} - lr (g_t + mu v_t): look-ahead gradient
    return w


def adam_update(w, dw, m, v, t, lr, beta1, beta2, eps):
    """Adam (Kingma & Ba, 2015) on one array at step t = 1, 2, ..., in place.  Returns w.

    eps is added after the square root, as in the paper and PyTorch.

    Shapes: w, dw, m, v (...) -- m and v (zeros before the first step) are updated in place.
    """
    xp = get_xp(w, dw, m, v)
    g = dw
    m[...] = beta1 * m + (1 - beta1) * g         # m_t: first moment (mean of g)
    v[...] = beta2 * v + (1 - beta2) * g ** 2    # v_t: second moment (uncentred variance)
    m_hat = m / (1 - beta1 ** t)                 # bias corrections: m and v start at 0
    v_hat = v / (1 - beta2 ** t)
    w -= lr * m_hat / (xp.sqrt(v_hat) + eps)     # w_t = w_{t-1} - lr m_hat_t / (sqrt(v_hat_t) + eps)
    return w


# ----------------------------------------------------------------------------- gradient norms, schedule

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
    """sum(g^2) as a Python float; ValueError naming `name` if g holds NaN or inf.
    g: an array or a compact gradient (:mod:`scratchnade.compact`, its own small sum)."""
    if is_compact(g):
        sq = g.sum_squares()
        if np.isfinite(sq):
            return sq
        if not g.finite():
            raise _non_finite(name)
        return _sum_squares(g.toarray(), name)          # finite, but its squares overflow
    xp = get_xp(g)
    flat = g.ravel()
    with np.errstate(over="ignore", invalid="ignore"):   # NumPy only; inf is handled below
        sq = float(flat @ flat)
    if np.isfinite(sq):
        return sq
    if not bool(xp.isfinite(g).all()):
        raise _non_finite(name)
    a = float(xp.abs(g).max())                          # finite but g^2 overflows: rescale
    s = flat / a
    return a * a * float(s @ s)


def grad_norm(grads):
    """Global L2 norm sqrt(sum over all arrays of sum(g^2)), as a Python float.

    Raises ValueError naming the first parameter whose gradient holds NaN or inf.
    """
    return sum(_sum_squares(g, name) for name, g in grads.items()) ** 0.5


def check_finite(grads):
    """Raise ValueError naming the first parameter whose gradient holds NaN or inf.

    An array is checked by :func:`scratchnade.compact.all_finite` (one dot product); a compact
    gradient checks its factors or rows (``finite()``), which is cheaper than its norm (the
    order-p NADE's OuterGrad: ~2 ms against 12 ms for the Gram trick).
    """
    for name, g in grads.items():
        if not (g.finite() if is_compact(g) else all_finite(g)):
            raise _non_finite(name)


def _non_finite(name):
    """The error for a gradient holding NaN or inf, naming its parameter."""
    return ValueError(f"gradient of {name!r} contains NaN or inf")


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so that their global norm is at most max_norm.

        total = sqrt(sum_k ||g_k||^2)
        g_k <- g_k * max_norm / total        (only when total > max_norm)

    Returns the norm before clipping (worth logging).  ValueError on NaN/inf gradients.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    total = grad_norm(grads)
    scale = clip_scale(total, max_norm)
    if scale is not None:
        for g in grads.values():
            g *= scale
    return total


def clip_scale(total, max_norm):
    """The factor max_norm / total that clipping multiplies every gradient by, or None when
    there is nothing to clip (max_norm None, or total <= max_norm)."""
    if max_norm is None or not total > max_norm:
        return None
    return max_norm / total


def linear_anneal(progress, start=0.0):
    """Learning-rate multiplier of a stable-then-decay schedule at `progress` in [0, 1] of a run.

        m = 1                                  progress <= start
        m = (1 - progress) / (1 - start)       start < progress <= 1   (linear to 0 at the end)

    start = 0 decays from the first step; start = 0.5 keeps lr for the first half of the run.
    """
    if not 0.0 <= start < 1.0:
        raise ValueError(f"anneal start must be in [0, 1), got {start}")
    return min(1.0, max(0.0, 1.0 - progress) / (1.0 - start))


# ----------------------------------------------------------------------------- hyperparameter checks

HYPER_RANGES = {  # name: (test of a float value, what the value must be)
    "lr": (lambda v: 0.0 <= v < math.inf, "a finite number >= 0"),
    "weight_decay": (lambda v: 0.0 <= v < math.inf, "a finite number >= 0"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "betas": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "eps": (lambda v: 0.0 < v < math.inf, "a finite number > 0"),
    "clip": (lambda v: v > 0.0, "None or a number > 0"),
    "lazy": (None, "True or False"),
}


def _shown(value):
    """A value for a message: nan, -0.1, inf for numbers (NumPy scalars too), repr otherwise."""
    if (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
            isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
        return repr(float(value))
    return repr(value)


def check_hyper(name, value, owner="optimizer"):
    """Raise ValueError unless `value` is allowed for hyperparameter `name` (see HYPER_RANGES).

    `betas` is a pair, each checked; `clip` may be None.  Returns nothing.
    """
    test, want = HYPER_RANGES[name]
    if name == "clip" and value is None:
        return
    if name == "betas":
        try:
            pair = tuple(value)
        except TypeError:
            pair = ()
        if len(pair) != 2:
            raise ValueError(f"{owner}: betas = {_shown(value)}; betas must be a pair (beta1, beta2), each "
                             f"{want}")
        for i, beta in enumerate(pair, 1):
            check_hyper_value(f"beta{i}", beta, test, want, owner)
        return
    if name == "lazy":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{owner}: lazy = {_shown(value)} is not allowed; lazy must be {want}")
        return
    check_hyper_value(name, value, test, want, owner)


def check_hyper_value(name, value, test, want, owner):
    """ValueError naming `name` and `value` unless value is a real number (not a bool; a NumPy scalar
    or 0-d array is one) passing `test`."""
    ok = type(value) in (float, int) or (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
        isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf")
    if ok:
        v = float(value)
        ok = v == v and test(v)                        # v == v: False for NaN, which fails every test
    if not ok:
        raise ValueError(f"{owner}: {name} = {_shown(value)} is not allowed; {name} must be {want}")


# ----------------------------------------------------------------------------- optimizers

class Optimizer:
    """Common machinery: checks, weight decay, clipping, lazy state, scratch, state_dict.

    Every optimizer offers

    - ``step(params, grads)``: updates the arrays of `params` in place (device arrays stay on
      their device), after checking that grads match params and contain no NaN/inf;
    - classic (coupled) L2 weight decay, ``weight_decay``: g <- g + weight_decay * w;
    - global gradient-norm clipping (``clip=max_norm``, see :func:`clip_grad_norm`), which
      scales `grads` in place, as ``torch.nn.utils.clip_grad_norm_`` does, and records the norm
      before clipping in ``last_grad_norm`` (None without clipping: the norm is not computed);
    - ``lr``: a plain attribute, so a schedule can change it between steps (every hyperparameter
      is checked at construction and again at each step, so lr = NaN, inf or < 0 set by a
      schedule is refused before the step moves anything: see :func:`check_hyper`);
    - ``state_dict()`` / ``load_state_dict(d)`` for checkpoints.

    Per-parameter state (velocity, Adam moments) is keyed by parameter name and created on the
    first step with ``xp.zeros_like``.

    Two tiers, switched by the attribute ``host_kernels`` (on the class or on one optimizer):

    - ``host_kernels = True`` (the default): the kernels of :mod:`scratchnade.optim_host`.  On the
      host (NumPy arrays) they run in cache-sized blocks, zero-gradient blocks take the rule's
      g = 0 form, and every ``flush_every`` steps decaying state is flushed before it turns
      subnormal; on a GPU (or the fake device of the tests) the same in-place rules run once on
      whole arrays.  Temporaries go into one reused scratch buffer per device and dtype, so a
      step allocates nothing big.
    - ``host_kernels = False``: the textbook rules of this module (:func:`sgd_update`,
      :func:`nesterov_update`, :func:`adam_update`) on whole arrays, on any device.  Slower and
      allocating, but the code a student reads.  ``opt = Adam(1e-3); opt.host_kernels = False``.

    SGD and Nesterov give the same bits in both tiers; Adam's fast kernel folds its bias
    corrections into scalars and agrees with the textbook to a few ulps per step (see
    :mod:`scratchnade.optim_host`).  The switch is not part of the state_dict.

    Subclasses set ``state_names`` (per-parameter arrays), ``hyper_names`` (extra
    hyperparameters saved in state_dict) and implement ``_update(w, g, state)`` (the textbook
    rule), ``_fast_update(w, g, state, tmp)`` and ``_fast_update_zero_grad(w, state, tmp)`` (the
    host kernel and its g = 0 form) and, when their state decays, ``_decays()`` (for the flush).
    """
    state_names = ()
    hyper_names = ()
    host_kernels = True      # False: the textbook rules of this module (see the class docstring)
    takes_compact_grads = True   # step() accepts the compact gradients of scratchnade.compact
    flush_every = 8          # host steps between subnormal flushes of decaying state (None: never)

    def __init__(self, lr, weight_decay=0.0, clip=None):
        self.lr = lr                       # mutable: schedules change it between steps
        self.weight_decay = weight_decay
        self.clip = clip
        self.t = 0                         # number of steps taken
        self.state = {}                    # name -> {state name: array}
        self.last_grad_norm = None         # global gradient norm before clipping (None: no clip)
        self._scratch = {}                 # (device, dtype, slot) -> flat buffer
        self._host_state = False           # True after load_state_dict without params
        if type(self).__init__ is Optimizer.__init__:  # subclasses with their own hyperparameters
            self.check_hyper()                         # call check_hyper() once they are set

    def check_hyper(self, when=""):
        """Raise ValueError naming the value unless every hyperparameter is in range (HYPER_RANGES).

        Called at construction, by load_state_dict and at the start of every step (a few float
        comparisons: a schedule may have set ``lr`` to NaN or a negative number since the last one).
        """
        for name in ("lr", "weight_decay", "clip", *self.hyper_names):
            check_hyper(name, getattr(self, name), type(self).__name__ + when)

    # --- one step -------------------------------------------------------------
    def step(self, params, grads):
        """Update every array of `params` in place from `grads` (same keys and shapes).  A gradient
        may be compact (:mod:`scratchnade.compact`, ``takes_compact_grads``): see :meth:`_compact_step`.

        With ``clip``, `grads` end scaled in place exactly as :func:`clip_grad_norm` scales them;
        on the host the scaling happens block by block inside the update's pass (see
        :func:`optim_host.update_blocked`), which saves a pass over memory, with the same bits.
        """
        self.check_hyper(f" step {self.t + 1}")
        check_match(params, grads)
        if self._host_state:
            self._place_state(params)
        if self.clip is not None:
            self.last_grad_norm = grad_norm(grads)      # also refuses NaN/inf before anything moves
        else:
            check_finite(grads)                         # the same refusal, without the norm
            self.last_grad_norm = None
        scale = clip_scale(self.last_grad_norm, self.clip)
        self.t += 1
        for name, w in params.items():
            g, state = grads[name], self._state(name, w)
            if is_compact(g):
                if scale is not None:
                    g *= scale                     # a few numbers: its rows, or its product's factor
                self._compact_step(name, w, g, state)
            elif getattr(self, "lazy", False) and w.ndim >= 2:
                self._lazy_step(name, w, g, state, scale)
            else:
                self._dense_step(w, g, state, scale)

    def _dense_step(self, w, g, state, scale=None):
        """The rule on the whole array w, through the host kernels or the textbook tier.
        scale: the clip factor g is multiplied by in place first (None: no clipping)."""
        if self.host_kernels:
            self._fast_step(w, g, state, scale)
        else:
            if scale is not None:
                g *= scale                             # clip_grad_norm's scaling
            if self.weight_decay:
                g = g + self.weight_decay * w          # classic L2
            self._update(w, g, state)

    def _fast_step(self, w, g, state, scale=None):
        """The step through :mod:`scratchnade.optim_host`: scratch buffers instead of temporaries,
        blocks, zero-gradient blocks, the clip scale and the subnormal flush on the host; whole
        arrays elsewhere."""
        xp = get_xp(w)
        if scale is not None and (xp is not np or self.weight_decay):
            g *= scale                         # whole array; the host's blocks scale in their pass
            scale = None
        if self.weight_decay:
            decayed = xp.multiply(w, self.weight_decay, out=self._buffer(w, "decay"))
            decayed += g                   # wd * w + g: classic L2, the same bits as the textbook
            g = decayed
        tmp = self._buffer(w, "tmp")
        if xp is np:
            optim_host.update_blocked(self._fast_update, self._fast_update_zero_grad,
                                      w, g, state, tmp, self._flush_thresholds(w), scale=scale)
        else:                              # a GPU: a block would only add kernel launches
            self._fast_update(w, g, state, tmp)

    def _lazy_step(self, name, w, g, state, scale=None):
        """The rule on the rows of w (its last axis) whose gradient is not all zero; the other rows
        keep w and their state exactly as they are (``lazy=True``, see :class:`Adam`).

        Shapes: w, g (..., k) C-contiguous, seen as R = w.size / k rows of k.  Few rows with a
        gradient are gathered, updated by the same rule (either tier) and written back; with most
        rows, the dense step runs and the idle rows get their saved w and state back
        (:func:`optim_host.update_rows`): the same bits, the rule being elementwise.

        On the host with the host kernels (and no weight decay) the same choices are made block
        by block, in one pass over memory on every core (:func:`optim_host.update_blocked` with
        ``row=k``): where a block's gradient is all zero, its w and state are not even read.
        The whole-array form serves the textbook tier, a GPU and weight decay.
        scale: the clip factor, applied to g in place first (None: no clipping).
        """
        xp = get_xp(w)
        if not (w.flags.c_contiguous and g.flags.c_contiguous):
            raise ValueError(f"{type(self).__name__}(lazy=True): parameter {name!r} and its gradient "
                             f"must be C-contiguous arrays")
        if w.size == 0:
            return
        k = w.shape[-1]
        if self.host_kernels and xp is np and not self.weight_decay:   # the host: block by block
            optim_host.update_blocked(self._fast_update, self._fast_update_zero_grad, w, g, state,
                                      self._buffer(w, "tmp"), self._flush_thresholds(w), row=k,
                                      scale=scale)
            return
        if scale is not None:
            g *= scale                                                # clip_grad_norm's scaling
        moved = optim_host.rows_with_gradient(g.reshape(-1, k))      # (R,) bool: rows with a gradient
        optim_host.update_rows(self._dense_step, self._rows_rule(w), w, g, state, moved, k)

    def _rows_rule(self, w):
        """rule(w_r, g_r, sub): this step's rule, in place, on rows gathered from w (either tier,
        weight decay and the flush included): the lazy step's rule for few rows."""
        xp = get_xp(w)
        flush = self._flush_thresholds(w) if self.host_kernels and xp is np else {}

        def rule(w_r, g_r, sub):
            if self.weight_decay:
                g_r = g_r + self.weight_decay * w_r                   # classic L2, on these rows
            if self.host_kernels:
                self._fast_update(w_r, g_r, sub, xp.empty_like(w_r))
                for s, threshold in flush.items():
                    optim_host.flush_subnormals_(sub[s], threshold)
            else:
                self._update(w_r, g_r, sub)
        return rule

    def _compact_step(self, name, w, g, state):
        """The step with a compact gradient (:mod:`scratchnade.compact`, clipping already applied):
        the update ``g.toarray()`` would get, without writing g out where that can be avoided.

        - lazy Adam and a RowGrad (a one-hot input's weights): the rule runs on its rows only,
          gathered, updated and written back; no pass over the (R, k) array at all;
        - otherwise on the host with the host kernels: its blocks are written out inside the
          blocked pass, each just before its update (:func:`optim_host.update_blocked`);
        - otherwise (a GPU, the textbook tier, weight decay): written out into a reused buffer,
          then the ordinary step.
        """
        xp = get_xp(w)
        lazy = getattr(self, "lazy", False) and w.ndim >= 2
        host = self.host_kernels and xp is np and not self.weight_decay
        if host and lazy and isinstance(g, RowGrad):
            moved = optim_host.rows_with_gradient(g.values)       # rows whose values are all +0.0 stay
            optim_host.update_gathered(self._rows_rule(w), w, state, g.rows[moved], g.values[moved],
                                       w.shape[-1])
            return
        if host and w.flags.c_contiguous:
            optim_host.update_blocked(self._fast_update, self._fast_update_zero_grad, w, g, state,
                                      self._buffer(w, "tmp"), self._flush_thresholds(w),
                                      row=w.shape[-1] if lazy else None)
            return
        dense = g.toarray(out=self._buffer(w, "dense"))
        if lazy:
            self._lazy_step(name, w, dense, state)
        else:
            self._dense_step(w, dense, state)

    def _flush_thresholds(self, w):
        """{state name: threshold} to flush at this step (see optim_host.flush_subnormals_), or {}."""
        if not self.flush_every or self.t % self.flush_every:
            return {}
        return {k: optim_host.flush_threshold(w.dtype, d, self.flush_every)
                for k, d in self._decays().items() if 0.0 < d < 1.0}

    def _decays(self):
        """{state name: factor it is multiplied by each step}, for the subnormal flush."""
        return {}

    def _update(self, w, g, state):
        """The textbook rule on one array (state: {state name: array}), in place."""
        raise NotImplementedError

    def _fast_update(self, w, g, state, tmp):
        """The host kernel of the same rule, with scratch `tmp` shaped like w."""
        raise NotImplementedError

    def _fast_update_zero_grad(self, w, state, tmp):
        """The host kernel with g = 0, the same values as ``_fast_update`` (it skips the g terms)."""
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
            check_hyper(k, v, f"{type(self).__name__} state_dict")
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

    def _update(self, w, g, state):
        sgd_update(w, g, self.lr)

    def _fast_update(self, w, g, state, tmp):
        optim_host.sgd_update(w, g, self.lr, tmp)

    def _fast_update_zero_grad(self, w, state, tmp):
        pass                                       # w - lr * 0 = w


class Nesterov(Optimizer):
    """Nesterov momentum, PyTorch form (see :func:`nesterov_update`); state "v" per parameter."""
    state_names = ("v",)
    hyper_names = ("momentum",)

    def __init__(self, lr, momentum=0.9, weight_decay=0.0, clip=None):
        super().__init__(lr, weight_decay, clip)
        self.momentum = momentum
        self.check_hyper()

    def _update(self, w, g, state):
        nesterov_update(w, g, state["v"], self.lr, self.momentum)

    def _fast_update(self, w, g, state, tmp):
        optim_host.nesterov_update(w, g, state["v"], self.lr, self.momentum, tmp)

    def _fast_update_zero_grad(self, w, state, tmp):
        optim_host.nesterov_update_zero_grad(w, state["v"], self.lr, self.momentum, tmp)

    def _decays(self):
        return {"v": self.momentum}


class Adam(Optimizer):
    """Adam with L2 weight decay (see :func:`adam_update`); state "m", "v" per parameter.

    ``lazy=True`` (an explicit option, off by default): in every parameter of 2 or more axes, a
    row (a slice along the last axis: an embedding row, one token's weights at one position of
    the order-p NADE's V) whose gradient is all +0.0 at a step is not touched at all: its w,
    m and v stay as they are, as in torch.optim.SparseAdam.  Dense Adam would still decay the
    row's moments and move w along the old momentum.  So lazy Adam is a different optimizer, not
    a faster route to the same numbers; it pays where most rows get no gradient (the order-p
    NADE's V: at most 32 of 33,278 rows per position at B = 32).  Rows that do get a gradient are
    updated exactly as dense Adam would update them from the same state at the same step t.
    """
    state_names = ("m", "v")
    hyper_names = ("betas", "eps", "lazy")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip=None, lazy=False):
        super().__init__(lr, weight_decay, clip)
        check_hyper("betas", betas, type(self).__name__)
        self.betas = tuple(betas)
        self.eps = eps
        self.lazy = lazy
        self.check_hyper()

    def _update(self, w, g, state):
        beta1, beta2 = self.betas
        adam_update(w, g, state["m"], state["v"], self.t, self.lr, beta1, beta2, self.eps)

    def _fast_update(self, w, g, state, tmp):
        beta1, beta2 = self.betas
        optim_host.adam_update(w, g, state["m"], state["v"], self.t, self.lr, beta1, beta2, self.eps, tmp)

    def _fast_update_zero_grad(self, w, state, tmp):
        beta1, beta2 = self.betas
        optim_host.adam_update_zero_grad(w, state["m"], state["v"], self.t, self.lr, beta1, beta2,
                                         self.eps, tmp)

    def _decays(self):
        return dict(zip(("m", "v"), self.betas))
