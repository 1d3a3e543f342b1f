"""Fully-visible sigmoid belief network (FVSBN) for binary vectors x in {0, 1}^D.

Each x_t is a logistic regression on the dimensions before it:

    p(x) = prod_{t=1..D} Bern(x_t ; sigmoid(a_t)),     a_t = f_t(x_<t)
    loss = (1/B) sum_b -log p(x_b) = (1/B) sum_b sum_t softplus(a_bt) - x_bt a_bt

Two forms of f_t, chosen with ``form=``:

``"vector"``, the lecture's Definition 1 (P in R^D, the weight depends on s only)::

    a_1 = P0                                  # x_1 ~ Bern(sigmoid(P0)): the lecture's P_0 as a bias
    a_t = sum_{s<t} P_s x_s       (t > 1)     # <P_<t, x_<t>, no bias for t > 1, as in the lecture

  params ``P0`` () and ``P`` (D,), P[s-1] = P_s.  P_D multiplies no x_s with s < t <= D,
  so its gradient is exactly 0 (kept so that P is in R^D like the lecture's P in R^T).

``"matrix"``, the general FVSBN (Frey 1998; Larochelle & Murray 2011)::

    a_t = b_t + sum_{s<t} W_{t,s} x_s         # a = b + W x,  W strictly lower triangular

  params ``b`` (D,) and ``W`` (D, D); only the strictly lower part of W (m_{t,s} = 1[s<t]) is used.

Shapes: x (B, D) of 0/1 in the parameters' float dtype, logits a (B, D).  Code counts t from
0, so x[:, t] is the lecture's x_{t+1} and x[:, :t] holds the dimensions before it.
"""
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, get_xp, resolve_dtype, to_device
from ..exact import exact_entropy
from ..functional import bernoulli_nll, bernoulli_nll_backward, check_binary, sigmoid
from .base import Model

FORMS = ("vector", "matrix")
_KEYS = {"vector": ("P0", "P"), "matrix": ("b", "W")}


# ----------------------------------------------------------------------------- reference (the slide)

def reference_forward(params, x, form=None):
    """Mean NLL per example, by the definition: a loop over t.  Returns (loss, FVSBNReferenceCache).

    Inputs: params of either form (`form` is read from their keys), x (B, D) of 0/1 in their
    float dtype.  a[t] is (B,).  Same loss as :func:`forward`.
    """
    xp = get_xp(x, *params.values())
    form = _check_form(params, form)
    B, D = x.shape
    a = {}
    loss = 0.0
    for t in range(D):
        if form == "vector" and t == 0:
            a[t] = xp.zeros(B, dtype=x.dtype) + params["P0"]           # a_1 = P0
        elif form == "vector":
            a[t] = x[:, :t] @ params["P"][:t]                          # a_t = <P_<t, x_<t>
        else:
            a[t] = params["b"][t] + x[:, :t] @ params["W"][t, :t]      # a_t = b_t + <W_{t,<t}, x_<t>
        loss = loss + bernoulli_nll(a[t], x[:, t]).sum() / B          # -log Bern(x_t; sigmoid(a_t))
    return loss, FVSBNReferenceCache(form, x, a, params)


def reference_backward(dloss, cache):
    """Gradients of every parameter (same keys as params), one t at a time."""
    form, x, a, params = cache
    xp = get_xp(x, *params.values())
    B, D = x.shape
    grads = {k: xp.zeros_like(v) for k, v in params.items()}
    for t in range(D):
        da = bernoulli_nll_backward(dloss / B, a[t], x[:, t])         # dloss/da_t  (B,)
        if form == "vector" and t == 0:
            grads["P0"][...] = da.sum()                                # a_1 = P0
        elif form == "vector":
            grads["P"][:t] += da @ x[:, :t]                            # a_t = <P_<t, x_<t>
        else:
            grads["b"][t] = da.sum()                                   # a_t = b_t + <W_{t,<t}, x_<t>
            grads["W"][t, :t] = da @ x[:, :t]
    return grads


class FVSBNReferenceCache(NamedTuple):
    form: str       # "vector" or "matrix"
    x: object       # (B, D) the input
    a: dict         # a[t] (B,) logit of x_t
    params: dict


def logits_loop(params, x):
    """The reference's logits a_t for t = 1..D as one array.  Shapes: x (B, D) float -> a (B, D).

        vector:  a_1 = P0,  a_t = <P_<t, x_<t>         matrix:  a_t = b_t + <W_{t,<t}, x_<t>
    """
    xp = get_xp(x, *params.values())
    a = reference_forward(params, x)[1].a
    return xp.stack([a[t] for t in range(len(a))], axis=1)


# ----------------------------------------------------------------------------- fast (same maths)

def mask(D, dtype, xp):
    """m_{t,s} = 1[s < t]: ones strictly below the diagonal.  Shape (D, D)."""
    return xp.tri(D, D, -1, dtype=dtype)


def logits_masked(params, x):
    """All D logits at once with the mask m_{t,s} = 1[s<t] (the lecture's masked model).

        vector:  a_t = <P, m_t * x> + P0 1[t=1]     i.e.  a = (x * P) m^T + P0 e_1
        matrix:  a   = b + (W * m) x                i.e.  a = b + x (W * m)^T

    Shapes: x (B, D) float -> a (B, D).  One (B, D) x (D, D) matmul instead of the D
    growing dot products of :func:`logits_loop`.
    """
    xp = get_xp(x, *params.values())
    if form_of(params) == "vector":
        P = params["P"]
        a = (x * P) @ mask(P.shape[0], P.dtype, xp).T    # sum_{s<t} P_s x_s
        a[:, 0] += params["P0"]                          # bias of x_1 only
        return a
    W = params["W"]
    a = x @ (W * mask(W.shape[0], W.dtype, xp)).T        # (W * m) x, one matmul
    a += params["b"]                                     # + b
    return a


class FVSBNCache(NamedTuple):
    form: str       # "vector" or "matrix"
    x: object       # (B, D) the input, in the parameters' dtype
    a: object       # (B, D) logits a_t


def forward(params, x, form=None):
    """Mean negative log-likelihood of a batch, fast: the masked product.

        loss = (1/B) sum_b sum_t softplus(a_bt) - x_bt a_bt,    a = logits_masked(params, x)

    Shapes: x (B, D) of 0/1 in the parameters' float dtype (see :func:`check_input`)
    -> (scalar loss, FVSBNCache).  `form` is optional: it is read from the keys of params.

    Same loss as :func:`reference_forward`.  The trick over the reference: the loop over t
    becomes one matmul with the mask m_{t,s} = 1[s<t] (:func:`logits_masked`), and the loss
    one Bernoulli NLL over the whole (B, D) array -- no Python loop at all.
    """
    form = _check_form(params, form)
    a = logits_masked(params, x)                         # (B, D) logits
    loss = bernoulli_nll(a, x).sum() / x.shape[0]        # mean over batch of sum over t
    return loss, FVSBNCache(form, x, a)


def backward(dloss, cache):
    """Gradients of every parameter, same keys as params, fast: the masked product.

        da = dloss / B * (sigmoid(a) - x)                       (B, D)
        vector:  dP0 = sum_b da_b1,   dP_s = sum_b x_bs sum_{t>s} da_bt   = sum_b x * (da m)
        matrix:  db  = sum_b da_b,    dW   = (da^T x) * m                 (strictly lower)

    Same gradients as :func:`reference_backward`.  The trick over the reference: the D
    per-t outer products become one (D, B) x (B, D) matmul masked by m afterwards (the
    upper part gets exactly 0), and the vector form's running sums sum_{t>s} da_t one
    (B, D) x (D, D) matmul with m.
    """
    xp = get_xp(cache.x)
    form, x, a = cache
    B, D = x.shape
    da = bernoulli_nll_backward(dloss / B, a, x)         # dloss/da, (B, D)
    if form == "vector":
        g = da @ mask(D, x.dtype, xp)                    # g_bs = sum_{t>s} da_bt
        g *= x                                           # only x_s = 1 reach later logits
        dP0 = da[:, :1].sum(axis=0).reshape(())          # a 0-d array, like P0
        return {"P0": dP0, "P": g.sum(axis=0)}
    dW = da.T @ x                                        # (D, D) outer products summed over b
    dW *= mask(D, dW.dtype, xp)                          # W * m: the upper part gets exactly 0
    return {"b": da.sum(axis=0), "W": dW}


def log_prob(params, x):
    """log p(x) = -sum_t softplus(a_t) - x_t a_t.  Shapes: x (B, D) float -> (B,)."""
    return -bernoulli_nll(logits_masked(params, x), x).sum(axis=1)


def conditionals(params, x):
    """p(x_t = 1 | x_<t) = sigmoid(a_t) for every t.  Shapes: x (B, D) float -> (B, D)."""
    return sigmoid(logits_masked(params, x))


def effective_weights(params):
    """Both forms as the matrix form: (b (D,), W (D, D) strictly lower).

    Vector form: b = P0 e_1 and W_{t,s} = m_{t,s} P_s (one row per t, each a masked copy of P).
    """
    xp = get_xp(*params.values())
    if form_of(params) == "matrix":
        W = params["W"]
        return params["b"], W * mask(W.shape[0], W.dtype, xp)
    P0, P = params["P0"], params["P"]
    D = P.shape[0]
    b = xp.zeros(D, dtype=P.dtype)
    b[0] = P0                                            # only x_1 gets the bias
    return b, mask(D, P.dtype, xp) * P[None, :]          # W_{t,s} = 1[s<t] P_s


def sample(params, n, rng=None, temperature=1.0):
    """Ancestral sampling: x_1, then x_2 | x_1, ..., each x_t ~ Bern(sigmoid(a_t / temperature)).

    Uniforms u (n, D) are drawn on the host from `rng` (a NumPy Generator or seed) and
    moved to the parameters' device, so one seed gives the same samples on every device;
    x_t = 1[u_t < p(x_t = 1 | x_<t)].

    Shapes: -> x (n, D) of 0/1 in the parameters' dtype, on their device.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    xp = get_xp(*params.values())
    b, W = effective_weights(params)                     # both forms as a = b + W x
    D, dtype = b.shape[0], b.dtype
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    u = xp.asarray(rng.random((n, D)), dtype=dtype)      # host uniforms -> device
    x = xp.zeros((n, D), dtype=dtype)
    for t in range(D):
        a_t = b[t] + x[:, :t] @ W[t, :t]                 # a_t = b_t + <W_{t,<t}, x_<t>
        p_t = sigmoid(a_t / temperature)                 # p(x_t = 1 | x_<t)
        x[:, t] = u[:, t] < p_t                          # x_t ~ Bern(p_t)
    return x


# ----------------------------------------------------------------------------- the class

class FVSBN(Model):
    """Fully-visible sigmoid belief network (see the module docstring for the equations).

    Parameters
    ----------
    D : int, number of binary dimensions.
    form : "matrix" (b (D,), W (D, D) strictly lower) or "vector" (the lecture's P0 (), P (D,)).
    seed : int, for the initial weights (drawn on the host, so every device gets the same model).
    dtype : float32 (training) or float64 (gradient checks).
    init_scale : std of the initial weights W (or P); the biases b, P0 start at 0.
    device : where the parameters live (default: scratchnade.backend.default_device()).

    The negative log-likelihood is convex in the parameters (D logistic regressions), so
    the initialisation only affects how fast training gets there.  In the matrix form dW is
    masked like W, so the entries of W on and above the diagonal start at 0 and stay exactly
    0 under any optimizer whose update is 0 for a zero gradient (SGD, momentum, Adam, L2
    decay).  ``loss_and_grads`` returns new gradient arrays on every call (safe to keep).
    """

    def __init__(self, D, form="matrix", seed=0, dtype=np.float32, init_scale=0.01, device=None):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if int(D) < 1:
            raise ValueError(f"D must be >= 1, got {D}")
        D, dt = int(D), resolve_dtype(dtype)
        self.config = dict(D=D, form=form, seed=seed, dtype=dt.name, init_scale=init_scale)
        rng = np.random.default_rng(seed)
        if form == "vector":
            host = {"P0": np.zeros((), dt),
                    "P": (init_scale * rng.standard_normal(D)).astype(dt)}
        else:
            host = {"b": np.zeros(D, dt),
                    "W": np.tril(init_scale * rng.standard_normal((D, D)), -1).astype(dt)}
        self.params = {k: to_device(v, device) for k, v in host.items()}

    @property
    def D(self):
        return self.config["D"]

    @property
    def form(self):
        return self.config["form"]

    def _input(self, x):
        """x checked ((B, D), binary), on the parameters' device, in their dtype."""
        check_input(x, self.D)
        x = to_device(x, self.device)
        return x.astype(self.dtype, copy=False)

    def loss_and_grads(self, x):
        """Mean NLL (nats per example) of x (B, D) and {name: gradient}."""
        loss, cache = forward(self.params, self._input(x), self.form)
        return loss, backward(1.0, cache)

    def log_prob(self, x):
        """log p(x) in nats.  Shapes: x (B, D) -> (B,)."""
        return log_prob(self.params, self._input(x))

    def conditionals(self, x):
        """p(x_t = 1 | x_<t) for every t.  Shapes: x (B, D) -> (B, D)."""
        return conditionals(self.params, self._input(x))

    def sample(self, n, seed=None, temperature=1.0):
        """n ancestral samples (n, D) of 0/1 in the model's dtype; seed: an int or a Generator."""
        return sample(self.params, n, seed, temperature)

    def exact_entropy(self):
        """H(p) = -sum_x p(x) log p(x) in nats, by enumerating all 2^D vectors (D <= 20).

        Computed in float64 whatever the model's dtype.
        """
        params64 = {k: v.astype(np.float64) for k, v in self.params.items()}

        def log_p(x):
            return asnumpy(log_prob(params64, to_device(x, self.device).astype(np.float64)))
        return exact_entropy(log_p, self.D)


# ----------------------------------------------------------------------------- checks and helpers

def form_of(params):
    """``"vector"`` when params has keys P0, P; ``"matrix"`` when it has b, W."""
    for form, keys in _KEYS.items():
        if set(params) == set(keys):
            return form
    raise ValueError(f"FVSBN params must have keys {{'P0', 'P'}} (vector form) or {{'b', 'W'}} "
                     f"(matrix form), got {sorted(params)}")


def _check_form(params, form):
    """The form of params, checked against `form` when given."""
    found = form_of(params)
    if form is not None and form != found:
        raise ValueError(f"form={form!r} but params are those of the {found!r} form")
    return found


def num_dims(params):
    """D, read from the parameter shapes."""
    return params["P"].shape[0] if "P" in params else params["b"].shape[0]


def check_input(x, D):
    """Raise ValueError unless x is a (B, D) array of 0/1 values."""
    if getattr(x, "ndim", None) != 2 or x.shape[1] != D:
        raise ValueError(f"FVSBN input must have shape (B, D) = (batch, {D}), "
                         f"got {getattr(x, 'shape', type(x).__name__)}")
    check_binary(x)
