"""Deep NADE of order p over token windows: L ReLU hidden layers (the lecture's Deep NADE).

For a window x_1..x_T of token ids (T <= p; x_s read as a one-hot vector of size V), with
the hidden layers numbered l = 0..L-1:

    h_{0,t} = ReLU(c_{0,t} + sum_{s<t}  W_s^T x_s)              first layer             (H,)
    h_{l,t} = ReLU(c_{l,t} + sum_{s<=t} V_{l,s} h_{l-1,s})      l = 1..L-1              (H,)
    f_t     = b_t + sum_{s<=t} W_s h_{L-1,s}                    output pre-activations  (V,)
    p(x_t | x_<t) = softmax(f_t)[x_t]

Layer numbering: V has L-1 blocks (lecture: (L-1) x p x k x k), so there are L layers,
h_0 .. h_{L-1}; the slide's h_{L,s} in f_t is the last of them, our h_{L-1,s}.  L = 1 is
a one-layer ReLU NADE whose input and output weights are shared (no V, no c).

Autoregressive: h_{0,t} sees x_<t only and every later layer and the output mix positions
s <= t only, so f_t depends on x_<t -- and on x_{t-1}, through h_{0,t}.

Parameters (positions are 0-based in the arrays: W[0] is W_1):

    W  (p, V, H)         W[s] = W_s, the (V, H) output block of position s        (lecture: p x d x k)
                         ROW W[s, v] = W_s^T e_v is also the first-layer input of token v at s
    b  (p, V)            b[s] = b_s
    c0 (p, H)            c0[s] = c_{0,s}
    V  (L-1, p, H, H)    V[l-1, s] = V_{l,s}, read as V_{l,s} h (out, in)   only when L > 1
    c  (L-1, p, H)       c[l-1, s] = c_{l,s}                                only when L > 1

W serves two uses, so dW = (output use) + (first-layer use, a row scatter-add).  W[p-1]'s
rows are never an input (x_p conditions nothing inside the window).

ReLU at 0: we use the subgradient ReLU'(0) = 0, i.e. dh/da = 1[a > 0], in every layer.  With
the default c = 0, the units of position 1 see no input (a_{l,1} = c_{l,1} + V_{l,1} 0 = 0) and
so sit exactly on the kink and stay 0: harmless, since they are constants anyway (x_<1 is
empty) and any constant they could add is already a bias c_{l,t} or b_t of a later position.

Computation, all positions at once (the lecture's "mini-batch over time steps"):

    e_s     = W[s, x_s]  (* dropout mask)            (T, B, H) row gather, no one-hot
    a_{0,t} = c_{0,t} + sum_{s<t} e_s                exclusive cumulative sum over positions
    g_{l,s} = V_{l,s} h_{l-1,s}                      (T, B, H) @ (T, H, H), batched matmul
    a_{l,t} = c_{l,t} + sum_{s<=t} g_{l,s}           inclusive cumulative sum
    G_s     = W_s h_{L-1,s}                          (T, B, H) @ (T, H, V) -> (T, B, V)
    f_t     = b_t + sum_{s<=t} G_s                   cumulative sum in place

then the fused in-place softmax cross-entropy.  Windows shorter than p use the first T
positions' parameters.  A batch is time-major, x (T, B).
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, scatter_add, to_device
from ..functional import relu_backward, softmax_cross_entropy, softmax_cross_entropy_backward
from .sequence import (SequenceModel, check_window, cumsum_, flat_rows, grad_buffer, output_logits,
                       reverse_cumsum_)


class DeepNADECache(NamedTuple):
    x: object                 # (T, B) token ids
    mask: Optional[object]    # (T, B, H) dropout mask on e_s = W_s^T x_s, or None
    hs: tuple                 # L arrays (T, B, H): hs[l][t] = h_{l,t}
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, V) logits buffer
    params: dict


# ----------------------------------------------------------------------------- helpers

def num_layers(params):
    """L, the number of hidden layers: 1 + the number of V blocks."""
    return 1 + (params["V"].shape[0] if "V" in params else 0)


# ----------------------------------------------------------------------------- forward

def first_layer(W, c0, x, mask=None):
    """h_{0,t} = ReLU(c_{0,t} + sum_{s<t} W_s^T x_s) for t = 1..T.

    Inputs: W (p, V, H), c0 (p, H), x (T, B) ids; mask (T, B, H) dropout mask on
    e_s = W_s^T x_s, or None (mask[T-1] is never used).  Returns h0 (T, B, H).
    """
    xp = get_xp(W, x)
    T, B = x.shape
    a = xp.empty((T, B, W.shape[2]), dtype=W.dtype)
    a[0] = 0.0                                          # empty sum at t = 1
    a[1:] = W[xp.arange(T - 1)[:, None], x[:-1]]        # e_s = W_s^T x_s, a row gather, s < T
    if mask is not None:
        a[1:] *= mask[:-1]                              # input dropout
    cumsum_(a)                                         # sum_{s<t} e_s
    a += c0[:T, None]                                   # + c_{0,t}
    return xp.maximum(a, 0.0, out=a)                    # h_{0,t}


def hidden_layer(V_l, c_l, h):
    """h_{l,t} = ReLU(c_{l,t} + sum_{s<=t} V_{l,s} h_{l-1,s}) for t = 1..T.

    Inputs: V_l (p, H, H) with V_l[s] = V_{l,s}; c_l (p, H); h (T, B, H) = h_{l-1}.
    Returns h_l (T, B, H).
    """
    xp = get_xp(V_l, h)
    T = h.shape[0]
    a = xp.matmul(h, V_l[:T].transpose(0, 2, 1))       # g_s = V_{l,s} h_{l-1,s}, batched matmul
    cumsum_(a)                                         # sum_{s<=t} g_s
    a += c_l[:T, None]                                  # + c_{l,t}
    return xp.maximum(a, 0.0, out=a)                    # h_{l,t}


def hidden_states(params, x, mask=None):
    """[h_0, ..., h_{L-1}], each (T, B, H), for windows x (T, B)."""
    hs = [first_layer(params["W"], params["c0"], x, mask)]
    for l in range(1, num_layers(params)):
        hs.append(hidden_layer(params["V"][l - 1], params["c"][l - 1], hs[-1]))
    return hs


def forward(params, x, mask=None, out=None):
    """Mean NLL per token (nats) of windows x.  Returns (loss, DeepNADECache).

    Inputs: params {W, b, c0} plus {V, c} when L > 1; x (T, B) ids, T <= p;
    mask: (T, B, H) fixed dropout mask on e_s = W_s^T x_s (None: no dropout);
    out: optional (T, B, V) buffer for the logits (it then holds the softmax).

        loss = 1/(T B) sum_{t,b} -log softmax(f_t)[x_t]
    """
    check_window(params, x, "DeepNADE")
    hs = hidden_states(params, x, mask)
    f = output_logits(params["W"], params["b"], hs[-1], out)       # (T, B, V)
    T, B, V = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, V), x.reshape(T * B), inplace=True)
    return loss, DeepNADECache(x, mask, tuple(hs), ce, params)


# ----------------------------------------------------------------------------- backward

def hidden_layer_backward(dh, h, h_prev, V_l):
    """Back through h_l = ReLU(c_l + cumsum_{s<=t} V_{l,s} h_{l-1,s}).

    Inputs: dh (T, B, H) = dloss/dh_l; h (T, B, H) = h_l; h_prev = h_{l-1};
    V_l (p, H, H).  Returns (dh_prev (T, B, H), dV_l (T, H, H), dc_l (T, H)):

        da_t  = dh_t * 1[a_t > 0]               ReLU'(0) = 0
        dc_t  = sum_b da_t
        dg_s  = sum_{t>=s} da_t                 reverse cumsum
        dV_s  = dg_s^T h_{l-1,s}                batched matmul
        dh_{l-1,s} = dg_s V_{l,s}               batched matmul
    """
    xp = get_xp(dh, V_l)
    T = dh.shape[0]
    da = relu_backward(dh, h)                           # h > 0 exactly where a > 0
    dc = da.sum(axis=1)                                 # dc_{l,t}
    dg = reverse_cumsum_(da)                           # dg_s = sum_{t>=s} da_t
    dV = xp.matmul(dg.transpose(0, 2, 1), h_prev)       # dV_{l,s}
    return xp.matmul(dg, V_l[:T]), dV, dc               # dh_{l-1,s}


def first_layer_backward(dh0, h0, x, mask, dW):
    """Back through h_0 = ReLU(c_0 + sum_{s<t} W[s, x_s]); ADDS the input use into dW.

    Inputs: dh0, h0 (T, B, H); x (T, B); mask (T, B, H) or None; dW (p, V, H), contiguous.
    Returns dc0 (T, H):

        da_t  = dh_t * 1[a_t > 0]               ReLU'(0) = 0
        dc0_t = sum_b da_t
        de_s  = sum_{t>s} da_t  (* mask)        reverse exclusive cumsum, s < T
        dW[s, x_s] += de_s                      scatter-add (repeated ids add up)
    """
    T, B, H = h0.shape
    p, V, _ = dW.shape
    da = relu_backward(dh0, h0)                         # da_{0,t}
    dc0 = da.sum(axis=1)                                # dc_{0,t}
    de = reverse_cumsum_(da[1:])                       # de_s = sum_{t>s} da_t, s = 0..T-2
    if mask is not None:
        de *= mask[:-1]                                 # through the dropout
    scatter_add(dW.reshape(p * V, H), flat_rows(x[:-1], V), de.reshape(-1, H))
    return dc0


def backward(dloss, cache, out=None):
    """Gradients of every parameter: {W, b, c0} plus {V, c} when L > 1.

    Overwrites the logits buffer in the cache (call once per forward).  out: optional dict
    with a (p, V, H) buffer "W" that receives dW (reused across steps).

        df_t  = dloss/(T B) (softmax(f_t) - onehot(x_t))        (T, B, V)
        db_t  = sum_b df_t
        dG_s  = sum_{t>=s} df_t                                 reverse cumsum, in place
        dW_s  = dG_s^T h_{L-1,s}                                output use, batched matmul
        dh_{L-1,s} = dG_s W_s                                   batched matmul
        ... back through layers L-1 .. 1 (hidden_layer_backward) ...
        dW[s, x_s] += sum_{t>s} da_{0,t}                        first-layer use (first_layer_backward)
    """
    x, mask, hs, ce, params = cache
    W, b = params["W"], params["b"]
    xp = get_xp(W)
    T, B, H = hs[0].shape
    V = b.shape[1]
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, V)   # df_t
    grads = {"W": grad_buffer(out, "W", W), "b": xp.zeros_like(b), "c0": xp.zeros_like(params["c0"])}
    grads["b"][:T] = df.sum(axis=1)                     # db_t
    dG = reverse_cumsum_(df)                           # dG_s = sum_{t>=s} df_t
    dW = grads["W"]
    xp.matmul(dG.transpose(0, 2, 1), hs[-1], out=dW[:T])    # dW_s = dG_s^T h_{L-1,s}, output use
    dW[T:] = 0.0
    # dh_{L-1,s} = dG_s W_s, computed as (W_s^T dG_s^T)^T: the same product, but OpenBLAS's
    # threaded (B, V) @ (V, H) with small B is up to 50x slower on a busy 2-core machine.
    dh = xp.matmul(W[:T].transpose(0, 2, 1), dG.transpose(0, 2, 1)).transpose(0, 2, 1)
    if num_layers(params) > 1:
        dV = grads["V"] = xp.zeros_like(params["V"])
        dc = grads["c"] = xp.zeros_like(params["c"])
        for l in range(num_layers(params) - 1, 0, -1):                  # layers L-1 .. 1
            dh, dV[l - 1, :T], dc[l - 1, :T] = hidden_layer_backward(
                dh, hs[l], hs[l - 1], params["V"][l - 1])                # dh becomes dh_{l-1}
    grads["c0"][:T] = first_layer_backward(dh, hs[0], x, mask, dW)   # + first-layer use of W
    return grads


# ----------------------------------------------------------------------------- model

class DeepNADE(SequenceModel):
    """Deep NADE of order p over a vocabulary of V tokens: L layers of H ReLU units.

    Parameters (see the module docstring): W (p, V, H) shared by the first layer and the
    output, b (p, V), c0 (p, H), and for L > 1: V (L-1, p, H, H), c (L-1, p, H).
    Data: time-major (T, B) windows of ids, T <= p.

    Initialisation (host, numpy.random.default_rng(seed); W drawn first, one position at a
    time, so a seed gives the same W as SequenceNADE's):
        W ~ N(0, init_scale^2)      one scale for both uses: the first-layer pre-activation of
                                    position t sums t-1 rows (std init_scale sqrt(t-1)), and
                                    the initial logits stay small, so predictions start near
                                    uniform
        V ~ N(0, 2 / (p H))         He scale for ReLU with the largest fan-in, p H (a_{l,p}
                                    sums V_{l,s} h_{l-1,s} over all p positions), so no
                                    position's pre-activation variance starts above He's
        c0 = 0, c = 0, b = 0        (position 1 then sits on the ReLU kink: see the module doc)

    Dropout: with ``dropout > 0`` and ``model.training``, each e_s = W_s^T x_s is multiplied by
    an inverted-dropout mask drawn from the model's own NumPy stream (seeded by ``seed``).

    Buffer reuse (for speed; W alone is p V H floats): ``loss_and_grads`` writes the logits
    into one buffer kept on the model, and returns dW in a (p, V, H) buffer that the NEXT
    call overwrites.  An optimizer step in between is fine, and so is scaling it in place
    (gradient clipping); copy it if you keep it longer.
    """

    def __init__(self, vocab_size, p=8, H=256, layers=2, dropout=0.0, seed=0, dtype=None,
                 init_scale=0.1, device=None):
        if p < 1 or H < 1 or vocab_size < 1 or layers < 1:
            raise ValueError(f"need vocab_size, p, H, layers >= 1, got {vocab_size}, {p}, {H}, {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        W = np.empty((p, vocab_size, H), dtype=dt)
        for s in range(p):                                  # one block at a time: no float64 copy of W
            W[s] = rng.normal(0.0, init_scale, size=(vocab_size, H))          # W[s] = W_s
        params = {"W": W, "b": np.zeros((p, vocab_size)), "c0": np.zeros((p, H))}
        if layers > 1:
            params["V"] = rng.normal(0.0, np.sqrt(2.0 / (p * H)), size=(layers - 1, p, H, H))  # V_{l,s}
            params["c"] = np.zeros((layers - 1, p, H))                        # c_{l,s}
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt, copy=False), device) for k, v in params.items()}
        self.config = {"vocab_size": vocab_size, "p": p, "H": H, "layers": layers, "dropout": dropout,
                       "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = vocab_size, p, dropout
        self._rng = np.random.default_rng([seed, 1])   # dropout masks, apart from the init stream
        self._buffers = {}

    def logits(self, x, out=None):
        """f_t for every position of windows x (T, B): (T, B, V), a new array unless `out`."""
        x = self.check_tokens(x)
        hs = hidden_states(self.params, x, self._dropout_mask((*x.shape, self.config["H"])))
        return output_logits(self.params["W"], self.params["b"], hs[-1], out)

    def loss_and_grads(self, x):
        """Mean NLL per token (nats) of windows x (T, B) and the gradients (see buffer reuse)."""
        x = self.check_tokens(x)
        T, B = x.shape
        W = self.params["W"]
        f = self._buffer("f", (T, B, W.shape[1]))
        loss, cache = forward(self.params, x, self._dropout_mask((*x.shape, self.config["H"])), out=f)
        return float(loss), backward(1.0, cache, out={"W": self._buffer("dW", W.shape)})
