"""NADE of order p over token windows, with position-indexed weights (the lecture's NADE).

For a window x_1..x_T of token ids (T <= p; x_s read as a one-hot vector of size V):

    h_t = sigmoid(c_t + sum_{s<t} V_s x_s)       hidden units for position t      (H,)
    f_t = b_t + sum_{s<=t} W_s h_s               output pre-activations           (V,)
    p(x_t | x_<t) = softmax(f_t)[x_t]

Index note: the slide writes sum_{s<t} W_s h_s.  Since h_s only sees x_<s, that sum would
hide x_{t-1} from f_t; we use s <= t, as the deep-NADE slide does.  f_t still depends on
x_<t only (h_t sees x_<t), so the model stays autoregressive.

Parameters (the lecture's shapes, except V -- read this):

    W (p, V, H)   W[s] = W_s, the output weights of position s            (lecture: p x d x k)
    b (p, V)      b[s] = b_s
    V (p, V, H)   V[s] = V_s^T, i.e. ROW j of V[s] is COLUMN j of V_s     (lecture: p x k x d)
    c (p, H)      c[s] = c_s

V is stored transposed so that V_s x_s is a contiguous row gather V[s, x_s] (and its gradient
a row scatter-add).  It also makes the lecture's weight sharing literal: with ``tied=True``,
V_s = W_s^T means the array V *is* W, so the params hold one array ``W`` and no key ``V``;
the input gather then reads W[s, x_s] and dW is the sum of the output and the input use.
V[p-1] (V_p) is never used: x_p conditions nothing inside the window, so its gradient is 0.

Computation, all positions at once (the lecture's "mini-batch over time steps"):

    e_s = V[s, x_s]  (* dropout mask)            (T, B, H) gather, no one-hot
    a_t = c_t + sum_{s<t} e_s                    exclusive cumulative sum over positions
    h_t = sigmoid(a_t)                           (T, B, H)
    G_s = W_s h_s                                (T, B, H) @ (T, H, V) -> (T, B, V), batched matmul
    f_t = b_t + sum_{s<=t} G_s                   cumulative sum over positions, in place

then the fused in-place softmax cross-entropy.  Windows shorter than p use the first T
positions' parameters.  A batch is time-major, x (T, B).
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, scatter_add, to_device
from ..functional import (sigmoid, sigmoid_backward, softmax_cross_entropy,
                          softmax_cross_entropy_backward)
from .sequence import (SequenceModel, check_window, cumsum_, flat_rows, grad_buffer, output_logits,
                       reverse_cumsum_)


class SequenceNADECache(NamedTuple):
    x: object                 # (T, B) token ids
    mask: Optional[object]    # (T, B, H) dropout mask on e_s = V_s x_s, or None
    h: object                 # (T, B, H) hidden states, h[t] = h_t
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, V) logits buffer
    params: dict


# ----------------------------------------------------------------------------- helpers

def is_tied(params):
    """True for the weight-sharing NADE (V_s = W_s^T): params hold W and no V."""
    return "V" not in params


def _input_weights(params):
    """The (p, V, H) array whose row V[s, j] is V_s's column j: V, or W itself when tied."""
    return params["W"] if is_tied(params) else params["V"]


# ----------------------------------------------------------------------------- forward

def hidden_states(params, x, mask=None):
    """h_t = sigmoid(c_t + sum_{s<t} V_s x_s) for t = 1..T.

    Inputs: x (T, B) ids; mask (T, B, H) dropout mask on e_s = V_s x_s, or None.
    Returns h (T, B, H).
    """
    U, c = _input_weights(params), params["c"]
    xp = get_xp(U, x)
    T = x.shape[0]
    e = U[xp.arange(T)[:, None], x]               # (T, B, H) e_s = V_s x_s, a row gather
    if mask is not None:
        e *= mask                                  # input dropout
    a = xp.empty_like(e)
    a[0] = 0.0
    a[1:] = e[:-1]
    cumsum_(a)                                    # a_t = sum_{s<t} e_s
    a += c[:T, None]                               # + c_t
    return sigmoid(a, out=a)                       # h_t


def forward(params, x, mask=None, out=None):
    """Mean NLL per token (nats) of windows x.  Returns (loss, SequenceNADECache).

    Inputs: params {W, V, c, b} or, tied, {W, c, b}; x (T, B) ids, T <= p;
    mask: (T, B, H) fixed dropout mask on e_s = V_s x_s (None: no dropout);
    out: optional (T, B, V) buffer for the logits (it then holds the softmax).

        loss = 1/(T B) sum_{t,b} -log softmax(f_t)[x_t]
    """
    check_window(params, x, "SequenceNADE")
    h = hidden_states(params, x, mask)
    f = output_logits(params["W"], params["b"], h, out)                              # (T, B, V)
    T, B, V = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, V), x.reshape(T * B), inplace=True)
    return loss, SequenceNADECache(x, mask, h, ce, params)


# ----------------------------------------------------------------------------- backward

def backward(dloss, cache, out=None):
    """Gradients of every parameter: {W, V, c, b}, or {W, c, b} when tied.

    Overwrites the logits buffer in the cache (call once per forward).  out: optional dict
    of (p, V, H) buffers for "W" and "V" that receive dW and dV (reused across steps).

        df_t  = dloss/(T B) (softmax(f_t) - onehot(x_t))        (T, B, V)
        db_t  = sum_b df_t
        dG_s  = sum_{t>=s} df_t                                 reverse cumsum, in place
        dW_s  = dG_s^T h_s                                      batched matmul  (V, H)
        dh_s  = dG_s W_s = (W_s^T dG_s^T)^T                     batched matmul  (B, H)
        da_t  = dh_t * h_t (1 - h_t)
        dc_t  = sum_b da_t
        de_s  = sum_{t>s} da_t  (* dropout mask)                reverse exclusive cumsum
        dV[s, x_s] += de_s                                      scatter-add (repeated ids add up)

    Tied: the scatter-add goes into dW, so dW = output use + input use.
    """
    x, mask, h, ce, params = cache
    W, c, b = params["W"], params["c"], params["b"]
    xp = get_xp(W)
    T, B, H = h.shape
    p, V = b.shape
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, V)   # df_t
    db = xp.zeros_like(b)
    db[:T] = df.sum(axis=1)                        # db_t
    dG = reverse_cumsum_(df)                      # dG_s = sum_{t>=s} df_t
    dW = grad_buffer(out, "W", W)
    xp.matmul(dG.transpose(0, 2, 1), h, out=dW[:T])   # dW_s = dG_s^T h_s
    dW[T:] = 0.0
    # dh_s^T = W_s^T dG_s^T, (T, H, B): OpenBLAS runs this form ~3x faster than dG_s W_s
    dhT = xp.matmul(W[:T].transpose(0, 2, 1), dG.transpose(0, 2, 1))
    da = sigmoid_backward(dhT.transpose(0, 2, 1), h)   # da_t = dh_t * h_t (1 - h_t)
    dc = xp.zeros_like(c)
    dc[:T] = da.sum(axis=1)                        # dc_t
    de = xp.empty_like(da)
    de[-1] = 0.0
    de[:-1] = da[1:]
    reverse_cumsum_(de)                           # de_s = sum_{t>s} da_t
    if mask is not None:
        de *= mask                                 # through the dropout
    grads = {"W": dW, "c": dc, "b": db}
    if is_tied(params):
        dU = dW                                    # V_s = W_s^T: the input use adds to dW
    else:
        dU = grads["V"] = grad_buffer(out, "V", params["V"])
        dU[...] = 0.0                              # dense gradient; only rows x_s get values
    scatter_add(dU.reshape(p * V, H), flat_rows(x, V), de.reshape(T * B, H))   # dV[s, x_s] += de_s
    return grads


# ----------------------------------------------------------------------------- model

class SequenceNADE(SequenceModel):
    """NADE of order p over a vocabulary of V tokens, H sigmoid hidden units.

    Parameters: W (p, V, H), V (p, V, H) with V[s] = V_s^T (see the module docstring),
    c (p, H), b (p, V).  With ``tied=True`` (V_s = W_s^T) there is no V: W serves both uses.
    Data: time-major (T, B) windows of ids, T <= p.

    Initialisation (host, numpy.random.default_rng(seed); W drawn before V, so a tied and
    an untied model with one seed share W):  W, V ~ N(0, init_scale^2), c = 0, b = 0.

    Dropout: with ``dropout > 0`` and ``model.training``, each e_s = V_s x_s is multiplied by
    an inverted-dropout mask drawn from the model's own NumPy stream (seeded by ``seed``);
    ``logits`` drops too while training, while log_prob, loss and sample run in eval mode.

    Buffer reuse (for speed; W alone is p V H floats): ``loss_and_grads`` writes the logits
    into one buffer kept on the model, and returns dW and dV in (p, V, H) buffers that the
    NEXT call overwrites.  An optimizer step in between (the training loop) is fine, and so
    is scaling them in place (gradient clipping); copy them if you keep them longer.
    """

    def __init__(self, vocab_size, p=8, H=256, tied=False, dropout=0.0, seed=0, dtype=None,
                 init_scale=0.01, device=None):
        if p < 1 or H < 1 or vocab_size < 1:
            raise ValueError(f"need vocab_size, p, H >= 1, got {vocab_size}, {p}, {H}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        params = {"W": rng.normal(0.0, init_scale, size=(p, vocab_size, H))}   # W[s] = W_s
        if not tied:
            params["V"] = rng.normal(0.0, init_scale, size=(p, vocab_size, H))  # V[s] = V_s^T
        params["c"] = np.zeros((p, H))                                         # c[s] = c_s
        params["b"] = np.zeros((p, vocab_size))                                # b[s] = b_s
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.config = {"vocab_size": vocab_size, "p": p, "H": H, "tied": tied, "dropout": dropout,
                       "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = vocab_size, p, dropout
        self._rng = np.random.default_rng(None if seed is None else [seed, 1])   # dropout masks
        self._buffers = {}

    def logits(self, x, out=None):
        """f_t for every position of windows x (T, B): (T, B, V), a new array unless `out`."""
        x = self.check_tokens(x)
        h = hidden_states(self.params, x, self._dropout_mask((*x.shape, self.config["H"])))
        return output_logits(self.params["W"], self.params["b"], h, out)

    def loss_and_grads(self, x):
        """Mean NLL per token (nats) of windows x (T, B) and the gradients (see buffer reuse)."""
        x = self.check_tokens(x)
        T, B = x.shape
        p, V, H = self.params["W"].shape
        f = self._buffer("f", (T, B, V))
        loss, cache = forward(self.params, x, self._dropout_mask((*x.shape, self.config["H"])), out=f)
        out = {k: self._buffer("d" + k, (p, V, H)) for k in ("W", "V") if k in self.params}
        return float(loss), backward(1.0, cache, out=out)
