"""Fully-visible softmax belief network (FVSBN) over windows of p tokens (the lecture's Definition 2).

A window w_1..w_T (T <= p) of ids in a vocabulary of d tokens, x_s the encoding of w_s:

    f_t  = b_t + sum_{s<t} P_s x_s                  logits of position t                 (d,)
    w_t  ~ Categorical(softmax(f_t))                p(w_t | w_<t) = softmax(f_t)[w_t]
    loss = 1/(T B) sum_{t,j} -log softmax(f_t^j)[w_t^j]      mean NLL per token of B windows

The two encodings (``encoding=``), with b (p, d), b[t] = b_t, and P[s] = P_s:

    "onehot":     x_s = m_s onehot(w_s)   (d,)    P (p, d, d);  P_s x_s = m_s P_s[:, w_s]
    "embedding":  x_s = m_s * E[w_s]      (K,)    P (p, d, K),  E (d, K) learned jointly

m_s is the input-dropout mask while training (0 or 1/(1-q)), else 1: a scalar per token for
one-hot (the whole column P_s[:, w_s] is dropped), a (K,) vector for embeddings.  With K = d
and E = I the embedding model is the one-hot model.

Index notes: b_1 plays the lecture's P_{0,0} (w_1 ~ Categorical(softmax(b_1))); the other b_t
are per-position unigram terms the slide leaves out.  P_T multiplies x_T, which conditions
nothing inside the window: its gradient is exactly 0.  A batch is time-major, w (T, B); a
window shorter than p uses the first T positions' parameters.
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, scatter_add, to_device
from ..functional import (check_targets, embedding, embedding_backward, log_softmax,
                          softmax_cross_entropy, softmax_cross_entropy_backward)
from .sequence import SequenceModel, cumsum_, reverse_cumsum_, grad_buffer

ENCODINGS = ("onehot", "embedding")
MAX_ONEHOT_ENTRIES = 2 ** 28   # p d^2 limit of the one-hot P: 1 GiB in float32 (Adam holds 4 copies)


# ----------------------------------------------------------------------------- reference: the slide

class SoftmaxFVSBNReferenceCache(NamedTuple):
    w: object                 # (T, B) token ids
    mask: object              # m: (T, B) one-hot / (T, B, K) embedding (ones without dropout)
    x: list                   # x[s] = x_s (B, K), embedding only (None for one-hot)
    logp: list                # logp[t] = log softmax(f_t), (B, d)
    params: dict


def reference_forward(params, w, mask=None):
    """Mean NLL per token of windows w, as the loop over t of the slide.

    Inputs: params {b (p, d), P (p, d, d)} one-hot or {b, P (p, d, K), E (d, K)} embedding;
    w (T, B) ids, T <= p; mask: fixed dropout mask, (T, B) one-hot / (T, B, K) embedding, or
    None.  Returns (loss, SoftmaxFVSBNReferenceCache).  P_s x_s is a column gather (one-hot)
    or a product with the embedding; no one-hot vector of size d is built.
    """
    _check_input(params, w, mask)
    b, P, E = params["b"], params["P"], params.get("E")
    xp = get_xp(P, w)
    T, B = w.shape
    d = b.shape[1]
    m = xp.ones(mask_shape(params, w), dtype=P.dtype) if mask is None else mask   # no dropout: m_s = 1
    x, Px = [None] * T, [None] * T
    for s in range(T - 1):                                      # x_T conditions nothing
        if E is None:
            Px[s] = P[s][:, w[s]].T * m[s][:, None]             # P_s x_s = m_s P_s[:, w_s]     (B, d)
        else:
            x[s] = m[s] * E[w[s]]                               # x_s = m_s * E[w_s]           (B, K)
            Px[s] = x[s] @ P[s].T                               # P_s x_s                      (B, d)
    logp, loss = [], 0.0
    for t in range(T):
        f_t = xp.zeros((B, d), dtype=P.dtype) + b[t]            # b_t
        for s in range(t):
            f_t = f_t + Px[s]                                   # + P_s x_s,  s < t
        logp.append(log_softmax(f_t))                           # log softmax(f_t)
        loss = loss - logp[t][xp.arange(B), w[t]].sum()         # - log p(w_t | w_<t)
    return loss / (T * B), SoftmaxFVSBNReferenceCache(w, m, x, logp, params)


def reference_backward(dloss, cache):
    """Gradients of every parameter, {b, P} or {b, P, E}, by one plain reverse loop over t.

        df_t       = dloss/(T B) (softmax(f_t) - onehot(w_t))     (B, d)
        db_t       = sum_j df_t^j
        d(P_s x_s) = sum_{t>s} df_t                               complete once every t > s is done
        one-hot:    dP_s[:, w_s^j] += m_s^j d(P_s x_s)^j          one column j at a time
        embedding:  dP_s = d(P_s x_s)^T x_s,   dx_s = d(P_s x_s) P_s,   dE[w_s^j] += m_s^j * dx_s^j

    Repeated ids add up (the loops over j).  dP_T = 0.
    """
    w, m, x, logp, params = cache
    b, P, E = params["b"], params["P"], params.get("E")
    xp = get_xp(P)
    T, B = w.shape
    d = b.shape[1]
    db, dP = xp.zeros_like(b), xp.zeros_like(P)
    dE = None if E is None else xp.zeros_like(E)
    dPx = [xp.zeros((B, d), dtype=P.dtype) for _ in range(T)]   # dPx[s] = d(P_s x_s)
    for t in reversed(range(T)):
        df_t = xp.exp(logp[t])                                  # softmax(f_t)
        df_t[xp.arange(B), w[t]] -= 1.0                         # - onehot(w_t)
        df_t = df_t * (dloss / (T * B))                         # df_t
        db[t] = df_t.sum(axis=0)                                # db_t
        for s in range(t):
            dPx[s] += df_t                                      # f_t = ... + P_s x_s
        if t == T - 1:
            continue                                            # x_T conditions nothing
        if E is None:
            for j in range(B):
                dP[t][:, w[t, j]] += m[t, j] * dPx[t][j]        # dP_t[:, w_t] += m_t d(P_t x_t)
        else:
            dP[t] = dPx[t].T @ x[t]                             # dP_t = d(P_t x_t)^T x_t
            dx_t = dPx[t] @ P[t]                                # dx_t                         (B, K)
            for j in range(B):
                dE[w[t, j]] += m[t, j] * dx_t[j]                # dE[w_t] += m_t * dx_t
    grads = {"b": db, "P": dP}
    if E is not None:
        grads["E"] = dE
    return grads


# ----------------------------------------------------------------------------- fast: every position at once

class SoftmaxFVSBNCache(NamedTuple):
    w: object                 # (T, B) token ids
    mask: Optional[object]    # dropout mask, (T, B) one-hot / (T, B, K) embedding, or None
    xs: Optional[object]      # (T-1, B, K) x_s = m_s * E[w_s], embedding only
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, d) logits buffer
    params: dict


def output_logits(params, w, mask=None, out=None):
    """f_t = b_t + sum_{s<t} P_s x_s for t = 1..T.

    Inputs: w (T, B) ids; mask: input-dropout mask (see :func:`mask_shape`) or None;
    out: optional (T, B, d) buffer to write f into.
    Returns (f (T, B, d), xs): xs (T-1, B, K) are the (dropped-out) embeddings x_s for the
    backward pass, None for the one-hot encoding.

    Trick over the reference: every position at once, and each P_s x_s computed once.

        G_s = P_s[:, w_s]          one-hot: one column gather for all s < T     (T-1, B, d)
        G_s = x_s P_s^T            embedding: (T-1, B, K) @ (T-1, K, d), one batched matmul
        f_t = b_t + sum_{s<t} G_s  exclusive running sum, in place

    G_s is written straight into f[s+1], so the exclusive sum over s < t is an ordinary
    in-place running sum over f[1:] (:func:`cumsum_`): no (T, B, d) array besides f, which
    may be a buffer reused across steps (``out``).
    """
    b, P = params["b"], params["P"]
    xp = get_xp(P, w)
    T, B = w.shape
    d = b.shape[1]
    if out is None:
        out = xp.empty((T, B, d), dtype=P.dtype)
    elif tuple(out.shape) != (T, B, d):
        raise ValueError(f"out must have shape {(T, B, d)}, got {tuple(out.shape)}")
    f, xs = out, None
    f[0] = 0.0                                              # f_1 = b_1: no history
    if T > 1:
        G = f[1:]                                           # G[s] = G_s lands in f[s+1]
        if "E" not in params:
            G[...] = P[xp.arange(T - 1)[:, None], :, w[:-1]]   # G_s = P_s[:, w_s], column gather
            if mask is not None:
                G *= mask[:T - 1, :, None]                  # drop the whole token
        else:
            xs = embedding(params["E"], w[:-1])             # (T-1, B, K) x_s = E[w_s]
            if mask is not None:
                xs *= mask[:T - 1]                          # embedding dropout
            xp.matmul(xs, P[:T - 1].transpose(0, 2, 1), out=G)   # G_s = P_s x_s, batched
        cumsum_(G)                                         # f_t = sum_{s<t} G_s
    f += b[:T, None]                                        # + b_t
    return f, xs


def logits(params, w, mask=None, out=None):
    """f_t for every position of windows w (T, B): shape (T, B, d).  See :func:`output_logits`."""
    _check_input(params, w, mask)
    return output_logits(params, w, mask, out)[0]


def forward(params, w, mask=None, out=None):
    """Mean NLL per token (nats) of windows w, as :func:`reference_forward`.  Returns
    (loss, SoftmaxFVSBNCache).

    Inputs: params {b, P} (one-hot) or {b, P, E} (embedding); w (T, B) ids, T <= p;
    mask: fixed input-dropout mask (None: no dropout); out: optional (T, B, d) buffer for
    the logits (it then holds the softmax, and the backward pass writes df into it).

    Tricks over the reference: the logits of all positions at once (:func:`output_logits`),
    then the fused in-place softmax cross-entropy over the (T B, d) rows: the logits buffer
    becomes the softmax (no log-softmax temporary of the size of the logits), and the
    backward pass writes df into it again.
    """
    _check_input(params, w, mask)
    f, xs = output_logits(params, w, mask, out)
    T, B, d = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, d), w.reshape(T * B), inplace=True)
    return loss, SoftmaxFVSBNCache(w, mask, xs, ce, params)


def backward(dloss, cache, out=None):
    """Gradients of every parameter: {b, P} or {b, P, E}, as :func:`reference_backward`.

    Overwrites the logits buffer in the cache (call once per forward).  out: optional dict
    of buffers for "P" and "E" that receive dP and dE (reused across steps); without it
    (out=None) every call returns new arrays.

        df_t  = dloss/(T B) (softmax(f_t) - onehot(w_t))        (T, B, d), in place
        db_t  = sum_j df_t^j
        dG_s  = sum_{t>s} df_t                                  reverse running sum over f[1:], in place
        one-hot:    dP_s[:, w_s] += dG_s (* mask)               one scatter-add into columns
        embedding:  dP_s = dG_s^T x_s                           batched matmul  (d, K)
                    dx_s = dG_s P_s (* mask)                    batched matmul  (B, K)
                    dE[w_s] += dx_s                             one scatter-add into rows
        dP_T = 0 (x_T conditions nothing); repeated ids accumulate in the scatter-adds.

    Tricks over the reference: df is written into the forward's logits buffer; the sums over
    t > s are one in-place reverse running sum (:func:`reverse_cumsum_`) instead of a loop
    over (t, s) pairs; the per-column loops become one scatter-add each and the per-position
    products batched matmuls.  dx_s is computed as (P_s^T dG_s^T)^T: same numbers, but
    OpenBLAS is ~6x slower on the (B, d) @ (d, K) form (a long inner dimension with few
    rows) at WikiText-2 sizes.
    """
    w, mask, xs, ce, params = cache
    b, P = params["b"], params["P"]
    xp = get_xp(P)
    T, B = w.shape
    d = b.shape[1]
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, d)   # df_t
    db = xp.zeros_like(b)
    db[:T] = df.sum(axis=1)                                 # db_t
    dP = grad_buffer(out, "P", P)
    grads = {"b": db, "P": dP}
    if "E" in params:
        dE = grads["E"] = grad_buffer(out, "E", params["E"])
        dE[...] = 0.0                                       # dense; only rows w_s get values
    if T == 1:
        dP[...] = 0.0                                       # f_1 = b_1 uses no P
        return grads
    dG = reverse_cumsum_(df[1:])                           # dG[s] = dG_s = sum_{t>s} df_t
    if "E" not in params:
        if mask is not None:
            dG *= mask[:T - 1, :, None]                     # through the token dropout
        dP[...] = 0.0
        scatter_add(dP, (xp.arange(T - 1)[:, None], slice(None), w[:-1]), dG)   # dP_s[:, w_s] += dG_s
        return grads
    xp.matmul(dG.transpose(0, 2, 1), xs, out=dP[:T - 1])   # dP_s = dG_s^T x_s
    dP[T - 1:] = 0.0                                        # P_T, ... unused
    dx = xp.matmul(P[:T - 1].transpose(0, 2, 1), dG.transpose(0, 2, 1))   # (dx_s)^T = P_s^T dG_s^T
    dx = dx.transpose(0, 2, 1)                              # dx_s = dG_s P_s   (T-1, B, K)
    if mask is not None:
        dx *= mask[:T - 1]                                  # through the embedding dropout
    embedding_backward(dx, w[:-1], out=dE)                  # dE[w_s] += dx_s
    return grads


# ----------------------------------------------------------------------------- model

class SoftmaxFVSBN(SequenceModel):
    """Fully-visible softmax belief network of order p over d tokens (see the module docstring).

    Parameters
    ----------
    vocab_size : d.
    p : order (window length); ``context = p``.
    encoding : "onehot" (b (p, d), P (p, d, d)) or "embedding" (b (p, d), P (p, d, K), E (d, K)).
    embed_dim : K, the embedding width (embedding encoding only; default 128).
    dropout : input dropout probability q during training (module docstring: what it drops).
    seed : initialisation (host, numpy.random.default_rng(seed)); dropout masks use their own
        stream seeded by [seed, 1].
    dtype : float32 (training, default) or float64 (gradient checks).
    init_scale : P ~ N(0, init_scale^2); b = 0 (so the model starts near uniform);
        E ~ N(0, 1) (unit-variance embeddings, as torch.nn.Embedding), drawn after P.
    device : where the parameters live (default: scratchnade.backend.default_device()).

    The one-hot P holds p d^2 numbers: fine for characters (tiny-shakespeare d = 65),
    hopeless for words (WikiText-2 d = 33,278).  Above MAX_ONEHOT_ENTRIES (2^28) entries the
    constructor raises ValueError: use ``encoding="embedding"`` for word-level vocabularies.
    For the one-hot encoding the loss is convex in (b, P) (p softmax regressions); the
    embedding encoding is bilinear.

    Gradients: every ``loss_and_grads`` call returns new arrays (safe to keep).  With
    ``model.reuse_buffers = True`` (the training loop, the benchmarks) dP and dE live in
    buffers kept on the model that the NEXT call overwrites, which saves allocating them
    each step.  The logits always go into one buffer kept on the model (never handed out).
    """

    def __init__(self, vocab_size, p=8, encoding="onehot", embed_dim=None, dropout=0.0, seed=0,
                 dtype=None, init_scale=0.01, device=None):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if vocab_size < 1 or p < 1:
            raise ValueError(f"need vocab_size, p >= 1, got {vocab_size}, {p}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        d = int(vocab_size)
        if encoding == "onehot":
            if embed_dim is not None:
                raise ValueError("embed_dim is only used with encoding='embedding'")
            if p * d * d > MAX_ONEHOT_ENTRIES:
                raise ValueError(
                    f"one-hot SoftmaxFVSBN needs P of p*d^2 = {p}*{d}^2 = {p * d * d:,} entries, more than "
                    f"MAX_ONEHOT_ENTRIES = 2^28 ({MAX_ONEHOT_ENTRIES:,}); use encoding='embedding' "
                    f"(P is then p*d*K) or a smaller vocabulary")
        else:
            embed_dim = 128 if embed_dim is None else int(embed_dim)
            if embed_dim < 1:
                raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        K = d if encoding == "onehot" else embed_dim
        params = {"b": np.zeros((p, d), dtype=dt),                 # b[t] = b_t (b_1: the P_{0,0})
                  "P": _normal(rng, (p, d, K), init_scale, dt)}    # P[s] = P_s
        if encoding == "embedding":
            params["E"] = _normal(rng, (d, K), 1.0, dt)            # E[w] = x for token w
        device = device or default_device()
        self.params = {k: to_device(v, device) for k, v in params.items()}
        self.config = {"vocab_size": d, "p": p, "encoding": encoding, "embed_dim": embed_dim,
                       "dropout": dropout, "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = d, p, dropout
        self._rng = np.random.default_rng([seed, 1])   # dropout masks, apart from the init stream

    @property
    def encoding(self):
        return self.config["encoding"]

    def logits(self, w, out=None):
        """f_t for every position of windows w (T, B): (T, B, d), a new array unless `out`."""
        w = self.check_tokens(w)
        return logits(self.params, w, self._dropout_mask(mask_shape(self.params, w)), out)

    def loss_and_grads(self, w, mask=None):
        """Mean NLL per token (nats) of windows w (T, B) and the gradients (new arrays unless
        ``reuse_buffers``: see the class docstring).

        mask: optional fixed input-dropout mask (gradient checks), shape :func:`mask_shape`;
        else one is drawn when training with dropout > 0.
        """
        w = self.check_tokens(w)
        T, B = w.shape
        if mask is None:
            mask = self._dropout_mask(mask_shape(self.params, w))
        else:
            mask = to_device(mask, self.device).astype(self.dtype, copy=False)
        f = self._buffer("f", (T, B, self.vocab_size))
        loss, cache = forward(self.params, w, mask, out=f)
        return float(loss), backward(1.0, cache, out=self._grad_buffers(["P", "E"]))


# ----------------------------------------------------------------------------- checks and helpers

def encoding_of(params):
    """"embedding" when params hold an embedding table E, else "onehot"."""
    return "embedding" if "E" in params else "onehot"


def mask_shape(params, w):
    """Shape of an input-dropout mask for windows w (T, B): (T, B) one-hot, (T, B, K) embedding."""
    return tuple(w.shape) if "E" not in params else (*w.shape, params["E"].shape[1])


def _check_input(params, w, mask=None):
    """Raise ValueError unless w is a (T, B) array of ids in [0, d) with 1 <= T <= p and mask fits."""
    p, d = params["b"].shape
    if w.ndim != 2 or not 1 <= w.shape[0] <= p:
        raise ValueError(f"SoftmaxFVSBN expects token windows of shape (T, B) with 1 <= T <= p = {p}, "
                         f"got shape {tuple(w.shape)}")
    check_targets(w, d, name="token ids")
    if mask is not None and tuple(mask.shape) != mask_shape(params, w):
        raise ValueError(f"dropout mask must have shape {mask_shape(params, w)}, got {tuple(mask.shape)}")


def _normal(rng, shape, scale, dtype):
    """scale * N(0, 1) of `shape` on the host, drawn in float64 one leading slice at a time
    (the same numbers as one big draw, without a float64 copy of a large P)."""
    a = np.empty(shape, dtype=dtype)
    for s in range(shape[0]):
        a[s] = scale * rng.standard_normal(shape[1:])
    return a
