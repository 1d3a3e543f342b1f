"""Fully-visible softmax belief network (FVSBN) over windows of p tokens (the lecture's Definition 2).

For a window w_1..w_T of token ids (T <= p), with x_s the encoding of token w_s:

    f_t = b_t + sum_{s<t} P_s x_s                 logits of position t              (V,)
    w_t ~ Categorical(softmax(f_t))               p(w_t | w_<t) = softmax(f_t)[w_t]

A log-linear model: position t is a softmax regression on the encodings of the tokens
before it, with its own weights P_s for every earlier position s.  b_1 plays the lecture's
P_{0,0} (w_1 ~ Categorical(softmax(b_1)), a real parameter, so always a distribution); the
other b_t are biases the slide leaves out (they only add a unigram term per position).
P_T multiplies x_T, which conditions nothing inside the window: its gradient is exactly 0.

The two input encodings of the lecture (``encoding=``):

``"onehot"``:  x_s = onehot(w_s) in R^V, params b (p, V), P (p, V, V) with P[s] = P_s.
    P_s x_s is the column P_s[:, w_s]: a gather, no one-hot vector is ever built.
    Memory p V^2: fine for characters (tiny-shakespeare V = 65), hopeless for words
    (WikiText-2 V = 33,278); above MAX_ONEHOT_ENTRIES entries of P the class refuses.

``"embedding"``:  x_s = E[w_s] in R^K (learned jointly), params b (p, V), P (p, V, K), E (V, K).
    The lecture's "word embeddings" encoding.  With K = V and E = I it is the one-hot model.

Computation, all positions at once (G_s = P_s x_s is only needed for s < T):

    G_s = P_s[:, w_s]          one-hot: column gather                    (T-1, B, V)
    G_s = x_s P_s^T            embedding: (T-1, B, K) @ (T-1, K, V) batched matmul
    f_t = b_t + sum_{s<t} G_s  exclusive cumulative sum over positions, in place in f

then the fused in-place softmax cross-entropy.  G_s is written straight into f[s+1], so
the exclusive sum is an ordinary running sum over f[1:].

Input dropout (option ``dropout``, training only): embedding: each x_s = E[w_s] is multiplied
by an inverted-dropout mask (T, B, K).  One-hot: dropout on x_s = onehot(w_s) only acts
through its one non-zero entry, so it is a per-token mask (T, B): the whole column
G_s = P_s[:, w_s] is dropped (token w_s unseen by every later position) or scaled by 1/(1-q).
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, scatter_add, to_device
from ..functional import (check_targets, embedding, embedding_backward, softmax_cross_entropy,
                          softmax_cross_entropy_backward)
from .sequence import SequenceModel, cumsum_, reverse_cumsum_, grad_buffer

ENCODINGS = ("onehot", "embedding")
MAX_ONEHOT_ENTRIES = 2 ** 28   # p V^2 limit of the one-hot P: 1 GiB in float32 (Adam holds 4 copies)


class SoftmaxFVSBNCache(NamedTuple):
    w: object                 # (T, B) token ids
    mask: Optional[object]    # dropout mask, (T, B) one-hot / (T, B, K) embedding, or None
    xs: Optional[object]      # (T-1, B, K) x_s = E[w_s] (* mask), embedding only
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, V) logits buffer
    params: dict


# ----------------------------------------------------------------------------- helpers

def encoding_of(params):
    """"embedding" when params hold an embedding table E, else "onehot"."""
    return "embedding" if "E" in params else "onehot"


def mask_shape(params, w):
    """Shape of an input-dropout mask for windows w (T, B): (T, B) one-hot, (T, B, K) embedding."""
    return tuple(w.shape) if "E" not in params else (*w.shape, params["E"].shape[1])


def _check_input(params, w, mask=None):
    """Raise ValueError unless w is a (T, B) array of ids in [0, V) with 1 <= T <= p and mask fits."""
    p, V = params["b"].shape
    if w.ndim != 2 or not 1 <= w.shape[0] <= p:
        raise ValueError(f"SoftmaxFVSBN expects token windows of shape (T, B) with 1 <= T <= p = {p}, "
                         f"got shape {tuple(w.shape)}")
    check_targets(w, V, name="token ids")
    if mask is not None and tuple(mask.shape) != mask_shape(params, w):
        raise ValueError(f"dropout mask must have shape {mask_shape(params, w)}, got {tuple(mask.shape)}")


# ----------------------------------------------------------------------------- forward

def output_logits(params, w, mask=None, out=None):
    """f_t = b_t + sum_{s<t} P_s x_s for t = 1..T.

    Inputs: w (T, B) ids; mask: input-dropout mask (see :func:`mask_shape`) or None;
    out: optional (T, B, V) buffer to write f into.
    Returns (f (T, B, V), xs): xs (T-1, B, K) are the (dropped-out) embeddings x_s for the
    backward pass, None for the one-hot encoding.
    """
    b, P = params["b"], params["P"]
    xp = get_xp(P, w)
    T, B = w.shape
    V = b.shape[1]
    if out is None:
        out = xp.empty((T, B, V), dtype=P.dtype)
    elif tuple(out.shape) != (T, B, V):
        raise ValueError(f"out must have shape {(T, B, V)}, got {tuple(out.shape)}")
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
    """f_t for every position of windows w (T, B): shape (T, B, V).  See :func:`output_logits`."""
    _check_input(params, w, mask)
    return output_logits(params, w, mask, out)[0]


def forward(params, w, mask=None, out=None):
    """Mean NLL per token (nats) of windows w.  Returns (loss, SoftmaxFVSBNCache).

    Inputs: params {b, P} (one-hot) or {b, P, E} (embedding); w (T, B) ids, T <= p;
    mask: fixed input-dropout mask (None: no dropout); out: optional (T, B, V) buffer for
    the logits (it then holds the softmax, and the backward pass writes df into it).

        loss = 1/(T B) sum_{t,j} -log softmax(f_t^j)[w_t^j]
    """
    _check_input(params, w, mask)
    f, xs = output_logits(params, w, mask, out)
    T, B, V = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, V), w.reshape(T * B), inplace=True)
    return loss, SoftmaxFVSBNCache(w, mask, xs, ce, params)


# ----------------------------------------------------------------------------- backward

def backward(dloss, cache, out=None):
    """Gradients of every parameter: {b, P} or {b, P, E}.

    Overwrites the logits buffer in the cache (call once per forward).  out: optional dict
    of buffers for "P" and "E" that receive dP and dE (reused across steps).

        df_t  = dloss/(T B) (softmax(f_t) - onehot(w_t))        (T, B, V), in place
        db_t  = sum_j df_t^j
        dG_s  = sum_{t>s} df_t                                  reverse cumsum over f[1:], in place
        one-hot:    dP_s[:, w_s] += dG_s (* mask)               scatter-add into columns
        embedding:  dP_s = dG_s^T x_s                           batched matmul  (V, K)
                    dx_s = dG_s P_s (* mask)                    batched matmul  (B, K)
                    dE[w_s] += dx_s                             scatter-add into rows
        dP_T = 0 (x_T conditions nothing); repeated ids accumulate in the scatter-adds.

    dx_s is computed as (P_s^T dG_s^T)^T: same numbers, but OpenBLAS is ~6x slower on the
    (B, V) @ (V, K) form (a long inner dimension with few rows) at WikiText-2 sizes.
    """
    w, mask, xs, ce, params = cache
    b, P = params["b"], params["P"]
    xp = get_xp(P)
    T, B = w.shape
    V = b.shape[1]
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, V)   # df_t
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

def _normal(rng, shape, scale, dtype):
    """scale * N(0, 1) of `shape` on the host, drawn in float64 one leading slice at a time
    (the same numbers as one big draw, without a float64 copy of a large P)."""
    a = np.empty(shape, dtype=dtype)
    for s in range(shape[0]):
        a[s] = scale * rng.standard_normal(shape[1:])
    return a


class SoftmaxFVSBN(SequenceModel):
    """Fully-visible softmax belief network of order p over V tokens (see the module docstring).

    Parameters
    ----------
    vocab_size : V.
    p : order (window length); ``context = p``.
    encoding : "onehot" (b (p, V), P (p, V, V)) or "embedding" (b (p, V), P (p, V, K), E (V, K)).
    embed_dim : K, the embedding width (embedding encoding only; default 128).
    dropout : input dropout probability q during training (module docstring: what it drops).
    seed : initialisation (host, numpy.random.default_rng(seed)); dropout masks use their own
        stream seeded by [seed, 1].
    dtype : float32 (training, default) or float64 (gradient checks).
    init_scale : P ~ N(0, init_scale^2); b = 0 (so the model starts near uniform);
        E ~ N(0, 1) (unit-variance embeddings, as torch.nn.Embedding), drawn after P.
    device : where the parameters live (default: scratchnade.backend.default_device()).

    The one-hot encoding raises ValueError when p V^2 > MAX_ONEHOT_ENTRIES (2^28): use
    ``encoding="embedding"`` for word-level vocabularies.  For the one-hot encoding the
    loss is convex in (b, P) (p softmax regressions); the embedding encoding is bilinear.

    Buffer reuse (for speed): ``loss_and_grads`` writes the logits into one buffer kept on
    the model and returns dP and dE in arrays that the NEXT call overwrites.  An optimizer
    step in between (the training loop) is fine; copy them if you keep them longer.
    """

    def __init__(self, vocab_size, p=8, encoding="onehot", embed_dim=None, dropout=0.0, seed=0,
                 dtype=None, init_scale=0.01, device=None):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if vocab_size < 1 or p < 1:
            raise ValueError(f"need vocab_size, p >= 1, got {vocab_size}, {p}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        V = int(vocab_size)
        if encoding == "onehot":
            if embed_dim is not None:
                raise ValueError("embed_dim is only used with encoding='embedding'")
            if p * V * V > MAX_ONEHOT_ENTRIES:
                raise ValueError(
                    f"one-hot SoftmaxFVSBN needs P of p*V^2 = {p}*{V}^2 = {p * V * V:,} entries, more than "
                    f"MAX_ONEHOT_ENTRIES = 2^28 ({MAX_ONEHOT_ENTRIES:,}); use encoding='embedding' "
                    f"(P is then p*V*K) or a smaller vocabulary")
        else:
            embed_dim = 128 if embed_dim is None else int(embed_dim)
            if embed_dim < 1:
                raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        K = V if encoding == "onehot" else embed_dim
        params = {"b": np.zeros((p, V), dtype=dt),                 # b[t] = b_t (b_1: the P_{0,0})
                  "P": _normal(rng, (p, V, K), init_scale, dt)}    # P[s] = P_s
        if encoding == "embedding":
            params["E"] = _normal(rng, (V, K), 1.0, dt)            # E[w] = x for token w
        device = device or default_device()
        self.params = {k: to_device(v, device) for k, v in params.items()}
        self.config = {"vocab_size": V, "p": p, "encoding": encoding, "embed_dim": embed_dim,
                       "dropout": dropout, "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = V, p, dropout
        self._rng = np.random.default_rng([seed, 1])   # dropout masks, apart from the init stream
        self._buffers = {}

    @property
    def encoding(self):
        return self.config["encoding"]

    def to(self, device):
        self._buffers = {}
        return super().to(device)

    def logits(self, w, out=None):
        """f_t for every position of windows w (T, B): (T, B, V), a new array unless `out`."""
        w = self.check_tokens(w)
        return logits(self.params, w, self._dropout_mask(mask_shape(self.params, w)), out)

    def loss_and_grads(self, w, mask=None):
        """Mean NLL per token (nats) of windows w (T, B) and the gradients (see buffer reuse).

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
        out = {k: self._buffer("d" + k, self.params[k].shape) for k in ("P", "E") if k in self.params}
        return float(loss), backward(1.0, cache, out=out)
