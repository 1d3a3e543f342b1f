"""NADE for binary vectors (Larochelle & Murray, AISTATS 2011).

    a_1     = c                                   (H,)   running pre-activation
    h_t     = sigmoid(a_t)                        (H,)   hidden units for position t
    p_t     = sigmoid(b_t + V_t . h_t)            ()     p(x_t = 1 | x_<t)
    a_{t+1} = a_t + W_{:,t} x_t                   (H,)   the O(H) update per position

so h_t = sigmoid(c + W_{:,<t} x_<t): one shared W for every conditional, O(DH) in all.
Parameters: W (H, D), c (H,), V (D, H), b (D,).  Data x is (B, D) with entries in {0, 1}.
The loss is the mean over the batch of -log p(x) = sum_t softplus(l_t) - x_t l_t, with the
logit l_t = b_t + V_t . h_t (never log(sigmoid)).

Notation: here V (D, H) is the OUTPUT weights, as in Larochelle & Murray; the token NADE
(sequence_nade.py) follows the lecture instead, where V is the INPUT weights.
"""
from typing import NamedTuple

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, to_device
from ..functional import bernoulli_nll, bernoulli_nll_backward, check_binary, sigmoid, sigmoid_backward
from .base import Model, init_pixel_bias


# ----------------------------------------------------------------------------- reference (the slide)

def reference_forward(params, x):
    """Mean NLL per example, by the slide's loop over t.  Returns (loss, NADEReferenceCache).

    Inputs: params {W (H, D), c (H,), V (D, H), b (D,)}, x (B, D) binary.  Vectorised over
    the batch only: a[t], h[t] are (B, H), logit[t] = l_t is (B,); code counts t from 0, so
    a[0] is the slide's a_1 and x[:, t] its x_{t+1}.  Same loss as :func:`forward`.
    """
    xp = get_xp(x, *params.values())
    _check_input(params, x)
    W, c, V, b = params["W"], params["c"], params["V"], params["b"]
    (H, D), B = W.shape, x.shape[0]
    x = x.astype(W.dtype)
    a, h, logit = {}, {}, {}
    a[0] = xp.zeros((B, H), dtype=W.dtype) + c                   # a_1 = c
    loss = 0.0
    for t in range(D):
        h[t] = sigmoid(a[t])                                     # h_t = sigmoid(a_t)
        logit[t] = b[t] + h[t] @ V[t]                            # l_t = b_t + V_t . h_t, p_t = sigmoid(l_t)
        loss = loss + bernoulli_nll(logit[t], x[:, t]).sum() / B  # -log Bern(x_t; p_t), mean over b
        a[t + 1] = a[t] + xp.outer(x[:, t], W[:, t])             # a_{t+1} = a_t + W_{:,t} x_t
    return loss, NADEReferenceCache(x, h, logit, params)


def reference_backward(dloss, cache):
    """Gradients {W, c, V, b} of the reference loss, by a plain reverse loop over t.

    da_next holds dloss/da_{t+1}; a_{t+1} = a_t + W_{:,t} x_t passes it to a_t unchanged.
    """
    x, h, logit, params = cache
    W, V = params["W"], params["V"]
    xp = get_xp(x, W)
    B, D = x.shape
    dW, dV, db = xp.zeros_like(W), xp.zeros_like(V), xp.zeros_like(params["b"])
    da_next = xp.zeros((B, W.shape[0]), dtype=W.dtype)           # dloss/da_{D+1} = 0
    for t in reversed(range(D)):
        dW[:, t] = da_next.T @ x[:, t]                           # a_{t+1} = a_t + W_{:,t} x_t
        dl = bernoulli_nll_backward(dloss / B, logit[t], x[:, t])  # dloss/dl_t  (B,)
        db[t] = dl.sum()                                         # l_t = b_t + V_t . h_t
        dV[t] = dl @ h[t]
        dh = xp.outer(dl, V[t])                                  # dloss/dh_t  (B, H)
        da = da_next + sigmoid_backward(dh, h[t])                # dloss/da_t: via a_{t+1} and h_t
        da_next = da
    dc = da_next.sum(axis=0)                                     # a_1 = c
    return {"W": dW, "c": dc, "V": dV, "b": db}


class NADEReferenceCache(NamedTuple):
    x: object         # (B, D) the data in the parameters' dtype
    h: dict           # h[t] (B, H) hidden units, t = 0..D-1
    logit: dict       # logit[t] (B,) l_t = b_t + V_t . h_t
    params: dict


# ----------------------------------------------------------------------------- fast (same maths)

class NADECache(NamedTuple):
    xT: object        # (D, B) the data, time-major, in the parameters' dtype
    ones: list        # ones[t] = rows b with x[b, t] = 1 (where a_{t+1} differs from a_t)
    hs: object        # (D, B, H) hidden states, hs[t] = h_t
    logits: object    # (D, B) b_t + V_t . h_t
    params: dict


def hidden_states(params, x):
    """All hidden states and output logits of NADE on a batch (the fast forward's work).

    Inputs: x (B, D) binary.  Returns (xT (D, B), ones, hs (D, B, H), logits (D, B)).

    The trick over the reference: binary inputs make a_t piecewise constant in t.  a only
    moves after positions where x_t = 1 (~13% of them on binarized MNIST), so step t copies
    h_{t-1} and recomputes the sigmoid only for the rows r = ones[t-1] of the batch whose a
    changed (a sparse-row update instead of a (B, H) sigmoid per step).  The hidden states
    are stored time-major, hs[t] = h_t (D, B, H), so each step touches one contiguous (B, H)
    slab, and every V_t . h_t is written straight into its row of the logits with out=.
    """
    W, c, V, b = params["W"], params["c"], params["V"], params["b"]
    xp = get_xp(W)
    H, D = W.shape
    B = x.shape[0]
    xT = xp.ascontiguousarray(x.T.astype(W.dtype))              # (D, B) time-major
    ones = [xp.nonzero(xT[t])[0] for t in range(D)]             # rows where a moves after t
    hs = xp.empty((D, B, H), dtype=W.dtype)
    logits = xp.empty((D, B), dtype=W.dtype)
    a = xp.empty((B, H), dtype=W.dtype)
    a[...] = c                                                  # a_1 = c
    sigmoid(a, out=hs[0])                                       # h_1
    for t in range(D):
        if t > 0:
            hs[t] = hs[t - 1]                                   # h_t = h_{t-1} where x_{t-1} = 0
            r = ones[t - 1]
            if len(r):
                a[r] += W[:, t - 1]                             # a_t = a_{t-1} + W_{:,t-1} x_{t-1}
                hs[t, r] = sigmoid(a[r])                        # h_t where a moved
        xp.matmul(hs[t], V[t], out=logits[t])                   # V_t . h_t
    logits += b[:, None]                                        # + b_t
    return xT, ones, hs, logits


def forward(params, x):
    """Mean NLL per example, fast.  Inputs: x (B, D) binary.  Returns (loss, NADECache).

        loss = 1/B sum_b sum_t [softplus(l_bt) - x_bt l_bt],  l_bt = b_t + V_t . h_bt

    Same loss as :func:`reference_forward`; the hidden states come from
    :func:`hidden_states` (sparse-row updates of the running sum, explained there), and the
    loss is one Bernoulli NLL over the whole (D, B) logits array.
    """
    _check_input(params, x)
    xT, ones, hs, logits = hidden_states(params, x)
    B = x.shape[0]
    loss = bernoulli_nll(logits, xT).sum() / B
    return loss, NADECache(xT, ones, hs, logits, params)


def backward(dloss, cache):
    """Gradients of every parameter, O(DH) per example.  Returns {W, c, V, b}.

        dl_t   = dloss/B (sigmoid(l_t) - x_t)                    (B,)
        dV_t   = sum_b dl_bt h_bt                                (H,)
        da_t   = dl_t V_t * h_t (1 - h_t)                        (B, H)
        dW_:,t = sum_{b: x_bt = 1} sum_{t' > t} da_bt'           the running sum, backwards
        dc     = sum_t sum_b da_bt

    Same gradients as :func:`reference_backward`.  The trick over the reference: it reuses
    the forward's sparse rows.  s_t = h_t (1 - h_t) is kept in one (B, H) array and only the
    rows r = ones[t-1] (where h_{t-1} != h_t) are recomputed when stepping back; dW_:,t
    sums da_later over those rows only (x_bt = 0 rows contribute nothing), and the (B, H)
    temporaries da, da_later are written in place with out= instead of reallocated.
    """
    xT, ones, hs, logits, params = cache
    W, V = params["W"], params["V"]
    xp = get_xp(W)
    D, B, H = hs.shape
    dlogits = sigmoid(logits)                                   # (D, B) p_t
    dlogits -= xT
    dlogits *= dloss / B                                        # dl_t
    dW = xp.zeros_like(W)
    dV = xp.empty_like(V)
    da_later = xp.zeros((B, H), dtype=W.dtype)                  # sum_{t' > t} da_t'
    da = xp.empty((B, H), dtype=W.dtype)
    s = hs[D - 1] * (1.0 - hs[D - 1])                           # s_t = h_t (1 - h_t), t = D
    for t in range(D - 1, -1, -1):
        xp.matmul(dlogits[t], hs[t], out=dV[t])                 # dV_t
        r = ones[t]
        if len(r):
            dW[:, t] = da_later[r].sum(axis=0)                  # x_t feeds every a_t', t' > t
        xp.multiply(dlogits[t][:, None], V[t], out=da)          # dh_t
        da *= s                                                 # da_t = dh_t * sigmoid'
        da_later += da
        if t > 0 and len(ones[t - 1]):
            r = ones[t - 1]                                     # rows where h_{t-1} != h_t
            s[r] = hs[t - 1, r] * (1.0 - hs[t - 1, r])
    return {"W": dW, "c": da_later.sum(axis=0), "V": dV, "b": dlogits.sum(axis=1)}


class NADE(Model):
    """Binary NADE with H hidden units over D dimensions (fixed order 1..D).

    Parameters: W (H, D), c (H,), V (D, H), b (D,).  Data: (B, D) in {0, 1}.
    Initialisation: W, V ~ N(0, init_scale^2), c = 0, b = 0 (see `init_bias`).
    """

    def __init__(self, D, H=500, seed=0, dtype=None, init_scale=0.01, device=None):
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        params = {
            "W": rng.normal(0.0, init_scale, size=(H, D)),      # input -> hidden, shared by all t
            "c": np.zeros(H),                                   # hidden bias
            "V": rng.normal(0.0, init_scale, size=(D, H)),      # hidden -> output, one row per t
            "b": np.zeros(D),                                   # output bias
        }
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.config = {"D": D, "H": H, "seed": seed, "dtype": dt.name, "init_scale": init_scale}

    def init_bias(self, x):
        """Set b to the logit of each pixel's mean in data x (B, D): a good start for training."""
        return init_pixel_bias(self, x)

    def _to_model(self, x):
        return to_device(x, self.device)

    def loss_and_grads(self, x):
        """Mean NLL (nats per example) of x (B, D) and the gradients {W, c, V, b}.

        The gradients are new arrays on every call (safe to keep)."""
        loss, cache = forward(self.params, self._to_model(x))
        return float(loss), backward(1.0, cache)

    def log_prob(self, x):
        """log p(x) in nats, shape (B,), for binary x (B, D)."""
        x = self._to_model(x)
        _check_input(self.params, x)
        xT, _, _, logits = hidden_states(self.params, x)
        return -bernoulli_nll(logits, xT).sum(axis=0)

    def conditionals(self, x):
        """p(x_t = 1 | x_<t) for every t, shape (B, D)."""
        x = self._to_model(x)
        _check_input(self.params, x)
        return sigmoid(hidden_states(self.params, x)[3]).T

    def sample(self, n, seed=None, temperature=1.0):
        """n ancestral samples x_t ~ Bern(sigmoid(l_t / temperature)), shape (n, D)."""
        D = self.config["D"]
        xp = get_xp(self.params["W"])
        return self.complete(xp.zeros((n, D), dtype=self.dtype), 0, seed=seed, temperature=temperature)

    def complete(self, x, n_given, seed=None, temperature=1.0):
        """Keep x[:, :n_given] and sample x_t for t >= n_given from p(x_t | x_<t).

        Inputs: x (B, D) binary (its entries from n_given on are ignored).  Returns (B, D).
        Used for half-image completions: n_given = 392 keeps the top 14 rows of a digit.
        """
        W, c, V, b = (self.params[k] for k in ("W", "c", "V", "b"))
        xp = get_xp(W)
        x = self._to_model(x).astype(W.dtype)               # astype copies: x itself is untouched
        B, D = x.shape
        u = to_device(np.random.default_rng(seed).random((D, B)), self.device)  # host draws: same on every device
        a = xp.empty((B, W.shape[0]), dtype=W.dtype)
        a[...] = c                                           # a_1 = c
        for t in range(D):
            if t >= n_given:
                h = sigmoid(a)                               # h_t
                p = sigmoid((h @ V[t] + b[t]) / temperature)  # p(x_t = 1 | x_<t)
                x[:, t] = u[t] < p                           # x_t ~ Bern(p)
            a += x[:, t][:, None] * W[:, t]                  # a_{t+1} = a_t + W_{:,t} x_t
        return x


# ----------------------------------------------------------------------------- checks

def _check_input(params, x):
    """Raise ValueError unless x is a (B, D) binary array matching the model."""
    D = params["b"].shape[0]
    if x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"NADE expects binary data of shape (B, {D}), got shape {tuple(x.shape)}")
    check_binary(x)
