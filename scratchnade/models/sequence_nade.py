"""NADE of order p over token windows, with position-indexed weights (the lecture's NADE).

A window x_1..x_T (T <= p) of ids in a vocabulary of d tokens, x_s read as onehot(x_s) in R^d,
H hidden units (the lecture's k):

    h_t  = sigmoid(c_t + sum_{s<t} m_s * V_s x_s)     hidden units of position t        (H,)
    f_t  = b_t + sum_{s<=t} W_s h_s                    logits of position t              (d,)
    p(x_t | x_<t) = softmax(f_t)[x_t]
    loss = 1/(T B) sum_{t,j} -log softmax(f_t^j)[x_t^j]          mean NLL per token of B windows

m_s (H,) is the input-dropout mask on V_s x_s while training (0 or 1/(1-q)), else 1.

Index note: the slide writes sum_{s<t} W_s h_s.  Since h_s only sees x_<s, that sum would
hide x_{t-1} from f_t; we use s <= t, as the deep-NADE slide does.  f_t still depends on
x_<t only (h_t sees x_<t), so the model stays autoregressive.

Parameters (the lecture's shapes in brackets):

    W (p, d, H)   W[s] = W_s, the output weights of position s                (p x d x k)
    V (p, d, H)   V[s] = V_s^T: V_s x_s is the row V[s, x_s], no one-hot      (p x k x d)
    c (p, H), b (p, d)

Tied (weight sharing, V_s = W_s^T): the array V *is* W, so params hold one W and no V, and
dW is the sum of both uses.  This V holds the lecture's INPUT weights; binary NADE
(Larochelle & Murray 2011, scratchnade/models/nade.py) names its OUTPUT weights V instead.
V_p is never used (x_p conditions nothing inside a window): its gradient is 0.  Batches are
time-major, x (T, B); a window shorter than p uses the first T positions' parameters.
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, to_device
from ..compact import OuterGrad, row_grad
from ..parallel import zero_
from ..functional import (embedding_backward, log_softmax, sigmoid, sigmoid_backward, softmax_cross_entropy,
                          softmax_cross_entropy_backward)
from .sequence import (SequenceModel, check_window, cumsum_, flat_rows, grad_buffer, output_logits,
                       reverse_cumsum_)


# ----------------------------------------------------------------------------- reference: the slide

class SequenceNADEReferenceCache(NamedTuple):
    x: object                 # (T, B) token ids
    mask: object              # m: (T, B, H) dropout mask on V_s x_s (ones without dropout)
    h: list                   # h[t] = h_t, (B, H)
    logp: list                # logp[t] = log softmax(f_t), (B, d)
    params: dict


def reference_forward(params, x, mask=None):
    """Mean NLL per token of windows x, as the loop over t of the slide.

    Inputs: params {W, V, c, b} or, tied, {W, c, b}; x (T, B) ids, T <= p; mask: (T, B, H)
    fixed dropout mask on V_s x_s, or None.  Returns (loss, SequenceNADEReferenceCache).
    """
    check_window(params, x, "SequenceNADE")
    W, c, b = params["W"], params["c"], params["b"]
    V = params["V"] if "V" in params else W                     # tied: V_s = W_s^T, one array
    xp = get_xp(W, x)
    T, B = x.shape
    p, d, H = W.shape
    m = xp.ones((T, B, H), dtype=W.dtype) if mask is None else mask   # no dropout: m_s = 1
    h, logp, loss = [], [], 0.0
    for t in range(T):
        a_t = xp.zeros((B, H), dtype=W.dtype) + c[t]            # c_t
        for s in range(t):
            a_t = a_t + m[s] * V[s, x[s]]                       # + m_s * V_s x_s (row x_s of V[s]), s < t
        h.append(sigmoid(a_t))                                  # h_t
        f_t = xp.zeros((B, d), dtype=W.dtype) + b[t]            # b_t
        for s in range(t + 1):
            f_t = f_t + h[s] @ W[s].T                           # + W_s h_s,  s <= t
        logp.append(log_softmax(f_t))                           # log softmax(f_t)
        loss = loss - logp[t][xp.arange(B), x[t]].sum()         # - log p(x_t | x_<t)
    return loss / (T * B), SequenceNADEReferenceCache(x, m, h, logp, params)


def reference_backward(dloss, cache):
    """Gradients of every parameter, {W, V, c, b} or tied {W, c, b}, by one plain reverse loop.

        df_t = dloss/(T B) (softmax(f_t) - onehot(x_t))          (B, d)
        db_t = sum_j df_t^j
        dW_s += df_t^T h_s,  dh_s += df_t W_s        for s <= t   (dh_t complete once t is done)
        da_t = dh_t * h_t (1 - h_t),  dc_t = sum_j da_t^j
        de_s += da_t                                 for s < t    (de_t complete once t is done)
        dV[t, x_t^j] += m_t^j * de_t^j               one column j at a time (repeated ids add up)

    Tied: dW = the output use + the input use (dW + dV).
    """
    x, m, h, logp, params = cache
    W, c, b = params["W"], params["c"], params["b"]
    V = params["V"] if "V" in params else W
    xp = get_xp(W)
    T, B = x.shape
    p, d, H = W.shape
    dW, dV, dc, db = xp.zeros_like(W), xp.zeros_like(V), xp.zeros_like(c), xp.zeros_like(b)
    dh = [xp.zeros((B, H), dtype=W.dtype) for _ in range(T)]    # dh[s] = dloss/dh_s
    de = [xp.zeros((B, H), dtype=W.dtype) for _ in range(T)]    # de[s] = dloss/d(m_s * V_s x_s)
    for t in reversed(range(T)):
        df_t = xp.exp(logp[t])                                  # softmax(f_t)
        df_t[xp.arange(B), x[t]] -= 1.0                         # - onehot(x_t)
        df_t = df_t * (dloss / (T * B))                         # df_t
        db[t] = df_t.sum(axis=0)                                # db_t
        for s in range(t + 1):                                  # f_t = b_t + sum_{s<=t} W_s h_s
            dW[s] += df_t.T @ h[s]                              # dW_s
            dh[s] += df_t @ W[s]                                # dh_s
        da_t = sigmoid_backward(dh[t], h[t])                    # da_t = dh_t * h_t (1 - h_t)
        dc[t] = da_t.sum(axis=0)                                # dc_t
        for s in range(t):                                      # a_t = c_t + sum_{s<t} m_s * V_s x_s
            de[s] += da_t                                       # de_s
        for j in range(B):
            dV[t, x[t, j]] += m[t, j] * de[t][j]                # dV_t[:, x_t] += m_t * de_t
    if "V" not in params:
        return {"W": dW + dV, "c": dc, "b": db}                 # tied: both uses of W
    return {"W": dW, "V": dV, "c": dc, "b": db}


# ----------------------------------------------------------------------------- fast: every position at once

class SequenceNADECache(NamedTuple):
    x: object                 # (T, B) token ids
    mask: Optional[object]    # (T, B, H) dropout mask on e_s = V_s x_s, or None
    h: object                 # (T, B, H) hidden states, h[t] = h_t
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, d) logits buffer
    params: dict


def hidden_states(params, x, mask=None):
    """h_t = sigmoid(c_t + sum_{s<t} m_s * V_s x_s) for t = 1..T.

    Inputs: x (T, B) ids; mask (T, B, H) dropout mask on e_s = V_s x_s, or None.
    Returns h (T, B, H).

    Trick over the reference (the lecture's "mini-batch over time steps"): every e_s comes
    from ONE row gather V[s, x_s] for all positions, and the sums over s < t of all t are
    one exclusive running sum written in place (:func:`cumsum_`), then one sigmoid:

        e_s = V[s, x_s]  (* m_s)        (T, B, H) gather, no one-hot
        a_t = c_t + sum_{s<t} e_s       exclusive running sum, in place
        h_t = sigmoid(a_t)              in place
    """
    V, c = _input_weights(params), params["c"]
    xp = get_xp(V, x)
    T = x.shape[0]
    e = V[xp.arange(T)[:, None], x]               # (T, B, H) e_s = V_s x_s, a row gather
    if mask is not None:
        e *= mask                                  # input dropout
    a = xp.empty_like(e)
    a[0] = 0.0
    a[1:] = e[:-1]
    cumsum_(a)                                    # a_t = sum_{s<t} e_s
    a += c[:T, None]                               # + c_t
    return sigmoid(a, out=a)                       # h_t


def forward(params, x, mask=None, out=None):
    """Mean NLL per token (nats) of windows x, as :func:`reference_forward`.  Returns
    (loss, SequenceNADECache).

    Inputs: params {W, V, c, b} or, tied, {W, c, b}; x (T, B) ids, T <= p;
    mask: (T, B, H) fixed dropout mask on e_s = V_s x_s (None: no dropout);
    out: optional (T, B, d) buffer for the logits (it then holds the softmax).

    Tricks over the reference: the hidden states of all positions at once
    (:func:`hidden_states`); each W_s h_s computed once, all in one batched matmul, and the
    sums over s <= t as an in-place running sum (:func:`scratchnade.models.sequence.
    output_logits`); then the fused in-place softmax cross-entropy, which turns the logits
    buffer (reused across steps when ``out`` is given) into the softmax.
    """
    check_window(params, x, "SequenceNADE")
    h = hidden_states(params, x, mask)
    f = output_logits(params["W"], params["b"], h, out)                              # (T, B, d)
    T, B, d = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, d), x.reshape(T * B), inplace=True)
    return loss, SequenceNADECache(x, mask, h, ce, params)


def backward(dloss, cache, out=None, compact=False):
    """Gradients of every parameter: {W, V, c, b}, or {W, c, b} when tied, as
    :func:`reference_backward`.

    Overwrites the logits buffer in the cache (call once per forward).  out: optional dict
    of (p, d, H) buffers for "W" and "V" that receive dW and dV (reused across steps);
    without it (out=None) every call returns new arrays.  compact=True (untied only; for the
    optimizers of scratchnade.optim): dW comes back as ``OuterGrad(dG, h)``, the products
    dG_s^T h_s not yet made (dG lives in the logits buffer), and dV as ``RowGrad``, its rows
    x_s only (:mod:`scratchnade.compact`; ``.toarray()`` gives the dense arrays' bits).

        df_t  = dloss/(T B) (softmax(f_t) - onehot(x_t))        (T, B, d)
        db_t  = sum_j df_t^j
        dG_s  = sum_{t>=s} df_t                                 reverse running sum, in place
        dW_s  = dG_s^T h_s                                      batched matmul  (d, H)
        dh_s  = dG_s W_s                                        batched matmul  (B, H)
        da_t  = dh_t * h_t (1 - h_t)
        dc_t  = sum_j da_t^j
        de_s  = sum_{t>s} da_t  (* m_s)                         reverse exclusive running sum
        dV[s, x_s] += de_s                                      one scatter-add (repeated ids add up)

    Tricks over the reference: df is written into the forward's logits buffer; the sums over
    t >= s (t > s) are in-place reverse running sums (:func:`reverse_cumsum_`) instead of a
    loop over (t, s) pairs, so each dW_s and dh_s is one product of a batched matmul; all
    rows dV[s, x_s] are filled by ONE scatter-add into a flat (p d, H) view
    (:func:`flat_rows`); dW and dV go into caller buffers when ``out`` has them.  dh is
    dG_s W_s, (T, B, H): at d = 33,278, H = 256, B = 32, p = 8 OpenBLAS 0.3.31 takes 45 ms
    for it against 56 ms for the transposed W_s^T dG_s^T (75 and 90 ms on one thread).
    Tied: the scatter-add goes straight into dW, so dW = output use + input use.
    """
    x, mask, h, ce, params = cache
    W, c, b = params["W"], params["c"], params["b"]
    xp = get_xp(W)
    T, B, H = h.shape
    p, d = b.shape
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, d)   # df_t
    db = xp.zeros_like(b)
    db[:T] = df.sum(axis=1)                        # db_t
    dG = reverse_cumsum_(df)                      # dG_s = sum_{t>=s} df_t
    compact = compact and not is_tied(params)
    if compact:
        dW = OuterGrad(dG, h, W.shape)               # dW_s = dG_s^T h_s, made by the optimizer
    else:
        dW = grad_buffer(out, "W", W)
        xp.matmul(dG.transpose(0, 2, 1), h, out=dW[:T])   # dW_s = dG_s^T h_s
        dW[T:] = 0.0
    dh = xp.matmul(dG, W[:T])                      # dh_s = dG_s W_s  (T, B, H)
    da = sigmoid_backward(dh, h)                   # da_t = dh_t * h_t (1 - h_t)
    dc = xp.zeros_like(c)
    dc[:T] = da.sum(axis=1)                        # dc_t
    de = xp.empty_like(da)
    de[-1] = 0.0
    de[:-1] = da[1:]
    reverse_cumsum_(de)                           # de_s = sum_{t>s} da_t
    if mask is not None:
        de *= mask                                 # through the dropout
    grads = {"W": dW, "c": dc, "b": db}
    if compact:                                    # dV's rows x_s only, repeated ids summed
        grads["V"] = row_grad(flat_rows(x, d), de.reshape(T * B, H), params["V"].shape)
        return grads
    if is_tied(params):
        dV = dW                                    # V_s = W_s^T: the input use adds to dW
    else:
        dV = grads["V"] = grad_buffer(out, "V", params["V"])
        zero_(dV)                                  # dense gradient; only rows x_s get values
    embedding_backward(de.reshape(T * B, H), flat_rows(x, d), out=dV.reshape(p * d, H))   # dV[s, x_s] += de_s
    return grads


# ----------------------------------------------------------------------------- model

class SequenceNADE(SequenceModel):
    """NADE of order p over a vocabulary of d tokens, H sigmoid hidden units.

    Parameters: W (p, d, H), V (p, d, H) with V[s] = V_s^T (see the module docstring),
    c (p, H), b (p, d).  With ``tied=True`` (V_s = W_s^T) there is no V: W serves both uses.
    Data: time-major (T, B) windows of ids, T <= p.

    Initialisation (host, numpy.random.default_rng(seed); W drawn before V, so a tied and
    an untied model with one seed share W):  W, V ~ N(0, init_scale^2), c = 0, b = 0.

    Dropout: with ``dropout > 0`` and ``model.training``, each e_s = V_s x_s is multiplied by
    an inverted-dropout mask drawn from the model's own NumPy stream (seeded by ``seed``);
    ``logits`` drops too while training, while log_prob, loss and sample run in eval mode.

    Gradients: every ``loss_and_grads`` call returns new arrays (safe to keep).  With
    ``model.reuse_buffers = True`` (the training loop, the benchmarks; W alone is p d H
    floats) dW and dV live in (p, d, H) buffers kept on the model that the NEXT call
    overwrites; an optimizer step in between is fine, and so is scaling them in place
    (gradient clipping).  The logits always go into one buffer kept on the model.  With
    ``model.compact_grads = True`` (the training loop's setting for scratchnade's optimizers)
    an untied model returns dW and dV compact (:func:`backward`), valid until the next call.
    """

    def __init__(self, vocab_size, p=8, H=256, tied=False, dropout=0.0, seed=0, dtype=None,
                 init_scale=0.01, device=None):
        if p < 1 or H < 1 or vocab_size < 1:
            raise ValueError(f"need vocab_size, p, H >= 1, got {vocab_size}, {p}, {H}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        d = vocab_size
        params = {"W": rng.normal(0.0, init_scale, size=(p, d, H))}           # W[s] = W_s
        if not tied:
            params["V"] = rng.normal(0.0, init_scale, size=(p, d, H))         # V[s] = V_s^T
        params["c"] = np.zeros((p, H))                                        # c[s] = c_s
        params["b"] = np.zeros((p, d))                                        # b[s] = b_s
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.config = {"vocab_size": vocab_size, "p": p, "H": H, "tied": tied, "dropout": dropout,
                       "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = vocab_size, p, dropout
        self._rng = np.random.default_rng(None if seed is None else [seed, 1])   # dropout masks

    def logits(self, x, out=None):
        """f_t for every position of windows x (T, B): (T, B, d), a new array unless `out`."""
        x = self.check_tokens(x)
        h = hidden_states(self.params, x, self._dropout_mask((*x.shape, self.config["H"])))
        return output_logits(self.params["W"], self.params["b"], h, out)

    def loss_and_grads(self, x):
        """Mean NLL per token (nats) of windows x (T, B) and the gradients (new arrays unless
        ``reuse_buffers``: see the class docstring)."""
        x = self.check_tokens(x)
        T, B = x.shape
        f = self._buffer("f", (T, B, self.vocab_size))
        loss, cache = forward(self.params, x, self._dropout_mask((*x.shape, self.config["H"])), out=f)
        if self.compact_grads and not is_tied(self.params):     # dW and dV need no (p, d, H) buffers
            return float(loss), backward(1.0, cache, compact=True)
        return float(loss), backward(1.0, cache, out=self._grad_buffers(["W", "V"]))


# ----------------------------------------------------------------------------- helpers

def is_tied(params):
    """True for the weight-sharing NADE (V_s = W_s^T): params hold W and no V."""
    return "V" not in params


def _input_weights(params):
    """The (p, d, H) array whose row [s, j] is V_s's column j: V, or W itself when tied."""
    return params["W"] if is_tied(params) else params["V"]
