"""Deep NADE of order p over token windows: L ReLU hidden layers (the lecture's Deep NADE).

For a window x_1..x_T of token ids (T <= p; x_s read as a one-hot vector of size d, the
vocabulary size |V| = d), with hidden layers l = 0..L-1 and ReLU(a) = max(a, 0):

    h_{0,t} = ReLU(c_{0,t} + sum_{s<t}  W_s^T x_s)              first layer          (H,)
    h_{l,t} = ReLU(c_{l,t} + sum_{s<=t} V_{l,s} h_{l-1,s})      l = 1..L-1           (H,)
    f_t     = b_t + sum_{s<=t} W_s h_{L-1,s}                    output logits        (d,)
    p(x_t | x_<t) = softmax(f_t)[x_t]
    loss    = -1/(T B) sum_{t,b} log p(x_t | x_<t)              mean NLL per token (nats)

Parameters (0-based positions in the arrays: W[0] is W_1; the lecture's k is H):

    W  (p, d, H)         W[s] = W_s, the output block of position s         (lecture: p x d x k)
                         its row W[s, v] = W_s^T e_v is also the first-layer input of token v
    b  (p, d)            b[s] = b_s
    c0 (p, H)            c0[s] = c_{0,s}
    V  (L-1, p, H, H)    V[l-1, s] = V_{l,s}, read as V_{l,s} h (out, in)     only when L > 1
    c  (L-1, p, H)       c[l-1, s] = c_{l,s}                                  only when L > 1

Notes.  V has L-1 blocks (lecture: (L-1) x p x k x k), so the layers are h_0 .. h_{L-1}: the
slide's h_{L,s} in f_t is our h_{L-1,s}, and L = 1 has no V and no c.  W serves two uses, so
dW = (output use) + (first-layer use); W_p's rows are never an input (x_p conditions nothing in
the window).  h_{0,t} sees x_<t, and later layers and the output mix s <= t only, so f_t
depends on x_<t -- and on x_{t-1}, through h_{0,t}.  ReLU'(0) = 0, i.e. dh/da = 1[a > 0], in
every layer.  Dropout (optional) multiplies each input W_s^T x_s by a fixed mask m_s (B, H).
Windows shorter than p use the first T positions' parameters; a batch is time-major, x (T, B).
"""
from typing import NamedTuple, Optional

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, scatter_add, to_device
from ..functional import (log_softmax, log_softmax_backward, relu, relu_backward, softmax_cross_entropy,
                          softmax_cross_entropy_backward)
from .sequence import (SequenceModel, check_window, cumsum_, flat_rows, grad_buffer, output_logits,
                       reverse_cumsum_)


# ----------------------------------------------------------------------------- reference (the slide)

class DeepNADEReferenceCache(NamedTuple):
    X: object                 # (T, B, d) x_s as one-hot rows
    m: object                 # (T, B, H) dropout mask m_s (ones when no dropout)
    a: object                 # (L, T, B, H) pre-activations, a[l, t] = a_{l,t}
    h: object                 # (L, T, B, H) hidden units, h[l, t] = h_{l,t} = ReLU(a_{l,t})
    logp: object              # (T, B, d) log softmax(f_t)
    params: dict


def reference_forward(params, x, mask=None):
    """The slide as a loop over t: mean NLL per token (nats) and a DeepNADEReferenceCache.

    Inputs: params {W (p, d, H), b (p, d), c0 (p, H)} plus {V (L-1, p, H, H), c (L-1, p, H)}
    when L > 1; x (T, B) ids with T <= p; mask (T, B, H) fixed dropout mask on W_s^T x_s, or None.
    Returns (loss, cache); loss is a 0-d array, the same number as :func:`forward`'s.
    """
    check_window(params, x, "DeepNADE")
    xp = get_xp(params["W"], x)
    W, b, c0, V, c = params["W"], params["b"], params["c0"], params.get("V"), params.get("c")
    L, (T, B), (_, d, H) = num_layers(params), x.shape, W.shape
    X = xp.eye(d, dtype=W.dtype)[x]                                   # x_s as one-hot rows (T, B, d)
    m = xp.ones((T, B, H), dtype=W.dtype) if mask is None else mask   # dropout mask m_s
    a = xp.zeros((L, T, B, H), dtype=W.dtype)
    h = xp.zeros((L, T, B, H), dtype=W.dtype)
    f = xp.zeros((T, B, d), dtype=W.dtype)
    for t in range(T):
        a[0, t] = c0[t] + sum((X[s] @ W[s]) * m[s] for s in range(t))      # c_{0,t} + sum_{s<t} W_s^T x_s
        h[0, t] = relu(a[0, t])                                            # h_{0,t}
        for l in range(1, L):                                              # V[l-1] = V_l, c[l-1] = c_l
            a[l, t] = c[l - 1, t] + sum(h[l - 1, s] @ V[l - 1, s].T for s in range(t + 1))   # a_{l,t}
            h[l, t] = relu(a[l, t])                                        # h_{l,t}
        f[t] = b[t] + sum(h[L - 1, s] @ W[s].T for s in range(t + 1))      # f_t
    logp = log_softmax(f)                                                  # log softmax(f_t)
    loss = -(X * logp).sum() / (T * B)                                     # -mean log p(x_t | x_<t)
    return loss, DeepNADEReferenceCache(X, m, a, h, logp, params)


def reference_backward(dloss, cache):
    """The slide's chain rule as plain reverse loops over t and s: {W, b, c0} plus {V, c} when L > 1.

    Inputs: dloss (scalar); cache from :func:`reference_forward`.  Returns new arrays shaped like
    the params.  At time t (latest first) every dh_{l,t} is complete, since only t' >= t use h_{l,t}.
    dW is the sum of its two uses: the output (f_t reads W_s h_{L-1,s}) and the input (a_{0,t}
    reads W_s^T x_s).  ReLU'(0) = 0.
    """
    X, m, a, h, logp, params = cache
    xp = get_xp(logp)
    W, V = params["W"], params.get("V")
    L, T, B, H = h.shape
    dW_out, dW_in = xp.zeros_like(W), xp.zeros_like(W)                 # the two uses of W
    db, dc0 = xp.zeros_like(params["b"]), xp.zeros_like(params["c0"])
    dV, dc = (xp.zeros_like(V), xp.zeros_like(params["c"])) if L > 1 else (None, None)
    df = log_softmax_backward(-dloss * X / (T * B), logp)   # df_t = dloss (softmax(f_t) - x_t) / (T B)
    dh = xp.zeros_like(h)                                               # dh[l, s] = dloss/dh_{l,s}
    for t in reversed(range(T)):
        db[t] = df[t].sum(axis=0)                                       # db_t
        for s in range(t + 1):
            dW_out[s] += df[t].T @ h[L - 1, s]                          # dW_s, output use (f_t)
            dh[L - 1, s] += df[t] @ W[s]                                # dh_{L-1,s}
        for l in range(L - 1, 0, -1):
            da = relu_backward(dh[l, t], a[l, t])                       # da_{l,t}
            dc[l - 1, t] = da.sum(axis=0)                               # dc_{l,t}
            for s in range(t + 1):
                dV[l - 1, s] += da.T @ h[l - 1, s]                      # dV_{l,s}
                dh[l - 1, s] += da @ V[l - 1, s]                        # dh_{l-1,s}
        da = relu_backward(dh[0, t], a[0, t])                           # da_{0,t}
        dc0[t] = da.sum(axis=0)                                         # dc_{0,t}
        for s in range(t):
            dW_in[s] += X[s].T @ (da * m[s])                            # dW_s, input use (a_{0,t})
    grads = {"W": dW_out + dW_in, "b": db, "c0": dc0}
    if L > 1:
        grads.update(V=dV, c=dc)
    return grads


# ----------------------------------------------------------------------------- fast forward

class DeepNADECache(NamedTuple):
    x: object                 # (T, B) token ids
    mask: Optional[object]    # (T, B, H) dropout mask on e_s = W_s^T x_s, or None
    hs: tuple                 # L arrays (T, B, H): hs[l][t] = h_{l,t}
    ce: object                # SoftmaxCECache; ce.probs is the (T*B, d) logits buffer
    params: dict


def forward(params, x, mask=None, out=None):
    """Mean NLL per token (nats) of windows x, all positions at once.  Returns (loss, DeepNADECache).

    Inputs: params as in :func:`reference_forward`; x (T, B) ids, T <= p; mask (T, B, H) fixed
    dropout mask on e_s = W_s^T x_s (None: no dropout); out: optional (T, B, d) buffer for the
    logits (it then holds the softmax).

    Tricks over the reference: every layer is computed for all T positions at once (the lecture's
    "mini-batch over time steps"): one gather or batched matmul per layer and a running sum over
    positions instead of the double loop over (t, s), O(T) instead of O(T^2) products
    (:func:`first_layer`, :func:`hidden_layer`, :func:`output_logits`); then the fused in-place
    softmax cross-entropy, which turns the logits buffer into the softmax instead of allocating a
    (T, B, d) log-softmax beside it.

        loss = 1/(T B) sum_{t,b} -log softmax(f_t)[x_t]
    """
    check_window(params, x, "DeepNADE")
    hs = hidden_states(params, x, mask)
    f = output_logits(params["W"], params["b"], hs[-1], out)       # (T, B, d)
    T, B, d = f.shape
    loss, ce = softmax_cross_entropy(f.reshape(T * B, d), x.reshape(T * B), inplace=True)
    return loss, DeepNADECache(x, mask, tuple(hs), ce, params)


def hidden_states(params, x, mask=None):
    """[h_0, ..., h_{L-1}], each (T, B, H), for windows x (T, B)."""
    hs = [first_layer(params["W"], params["c0"], x, mask)]
    for l in range(1, num_layers(params)):
        hs.append(hidden_layer(params["V"][l - 1], params["c"][l - 1], hs[-1]))
    return hs


def first_layer(W, c0, x, mask=None):
    """h_{0,t} = ReLU(c_{0,t} + sum_{s<t} W_s^T x_s) for t = 1..T.

    Inputs: W (p, d, H), c0 (p, H), x (T, B) ids; mask (T, B, H) dropout mask on
    e_s = W_s^T x_s, or None (mask[T-1] is never used).  Returns h0 (T, B, H).

    Tricks: W_s^T x_s is row x_s of W_s, so all of them come from ONE row gather W[s, x_s]
    (no one-hot, no (B, d) @ (d, H) product); the sums over s < t are one exclusive running
    sum over positions, a_{0,t} = a_{0,t-1} + e_{t-1}, written in place into the gathered array.

        e_s     = W[s, x_s]  (* m_s)            (T-1, B, H) row gather, s < T
        a_{0,t} = c_{0,t} + sum_{s<t} e_s       exclusive cumulative sum over positions
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

    Tricks: all T products V_{l,s} h_{l-1,s} in one batched matmul, then an inclusive running
    sum in place (no (T, T) double loop), and the ReLU written into the same array.

        g_{l,s} = V_{l,s} h_{l-1,s}             (T, B, H) @ (T, H, H), batched matmul
        a_{l,t} = c_{l,t} + sum_{s<=t} g_{l,s}  inclusive cumulative sum
    """
    xp = get_xp(V_l, h)
    T = h.shape[0]
    a = xp.matmul(h, V_l[:T].transpose(0, 2, 1))       # g_s = V_{l,s} h_{l-1,s}, batched matmul
    cumsum_(a)                                         # sum_{s<=t} g_s
    a += c_l[:T, None]                                  # + c_{l,t}
    return xp.maximum(a, 0.0, out=a)                    # h_{l,t}


# ----------------------------------------------------------------------------- fast backward

def backward(dloss, cache, out=None):
    """Gradients of every parameter: {W, b, c0} plus {V, c} when L > 1.

    out: optional dict with a (p, d, H) buffer "W" that receives dW (the caller's buffer,
    reused across steps); out=None allocates a new dW.

    Tricks over the reference: dloss/df is written into the logits buffer of the forward pass
    (no second (T*B, d) array; so call backward once per forward); the sums over t >= s that
    the reference loops over become one reverse running sum per layer, and each layer's products
    one batched matmul; the first-layer use of W is a row scatter-add into dW instead of a
    one-hot (d, B) @ (B, H) product (:func:`first_layer_backward`).

        df_t  = dloss/(T B) (softmax(f_t) - onehot(x_t))        (T, B, d)
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
    d = b.shape[1]
    df = softmax_cross_entropy_backward(dloss, ce, out=ce.probs).reshape(T, B, d)   # df_t
    grads = {"W": grad_buffer(out, "W", W), "b": xp.zeros_like(b), "c0": xp.zeros_like(params["c0"])}
    grads["b"][:T] = df.sum(axis=1)                     # db_t
    dG = reverse_cumsum_(df)                           # dG_s = sum_{t>=s} df_t
    dW = grads["W"]
    xp.matmul(dG.transpose(0, 2, 1), hs[-1], out=dW[:T])    # dW_s = dG_s^T h_{L-1,s}, output use
    dW[T:] = 0.0
    # dh_{L-1,s} = dG_s W_s, computed as (W_s^T dG_s^T)^T: the same product, but OpenBLAS's
    # threaded (B, d) @ (d, H) with small B is up to 50x slower on a busy 2-core machine.
    dh = xp.matmul(W[:T].transpose(0, 2, 1), dG.transpose(0, 2, 1)).transpose(0, 2, 1)
    if num_layers(params) > 1:
        dV = grads["V"] = xp.zeros_like(params["V"])
        dc = grads["c"] = xp.zeros_like(params["c"])
        for l in range(num_layers(params) - 1, 0, -1):                  # layers L-1 .. 1
            dh, dV[l - 1, :T], dc[l - 1, :T] = hidden_layer_backward(
                dh, hs[l], hs[l - 1], params["V"][l - 1])                # dh becomes dh_{l-1}
    grads["c0"][:T] = first_layer_backward(dh, hs[0], x, mask, dW)   # + first-layer use of W
    return grads


def hidden_layer_backward(dh, h, h_prev, V_l):
    """Back through h_l = ReLU(c_l + cumsum_{s<=t} V_{l,s} h_{l-1,s}).

    Inputs: dh (T, B, H) = dloss/dh_l; h (T, B, H) = h_l; h_prev = h_{l-1};
    V_l (p, H, H).  Returns (dh_prev (T, B, H), dV_l (T, H, H), dc_l (T, H)).

    Tricks: the reference's loop over t >= s is one in-place reverse running sum dg_s; the
    products for every s are then two batched matmuls.

        da_t  = dh_t * 1[a_t > 0]               ReLU'(0) = 0 (h > 0 exactly where a > 0)
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

    Inputs: dh0, h0 (T, B, H); x (T, B); mask (T, B, H) or None; dW (p, d, H), contiguous.
    Returns dc0 (T, H).

    Tricks: the input use of W_s touches only the rows x_s, so its gradient is a row
    scatter-add (repeated ids add up) into a flat (p*d, H) view of dW, not a one-hot product;
    the sums over t > s are one reverse running sum.

        da_t  = dh_t * 1[a_t > 0]               ReLU'(0) = 0
        dc0_t = sum_b da_t
        de_s  = sum_{t>s} da_t  (* m_s)         reverse exclusive cumsum, s < T
        dW[s, x_s] += de_s                      scatter-add
    """
    T, B, H = h0.shape
    p, d, _ = dW.shape
    da = relu_backward(dh0, h0)                         # da_{0,t}
    dc0 = da.sum(axis=1)                                # dc_{0,t}
    de = reverse_cumsum_(da[1:])                       # de_s = sum_{t>s} da_t, s = 0..T-2
    if mask is not None:
        de *= mask[:-1]                                 # through the dropout
    scatter_add(dW.reshape(p * d, H), flat_rows(x[:-1], d), de.reshape(-1, H))
    return dc0


# ----------------------------------------------------------------------------- model

class DeepNADE(SequenceModel):
    """Deep NADE of order p over a vocabulary of d = vocab_size tokens: L layers of H ReLU units.

    Parameters (see the module docstring): W (p, d, H) shared by the first layer and the
    output, b (p, d), c0 (p, H), and for L > 1: V (L-1, p, H, H), c (L-1, p, H).
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
        c0 = 0, c = 0, b = 0        the units of position 1 then see no input (a_{l,1} =
                                    c_{l,1} + V_{l,1} 0 = 0), sit exactly on the kink and stay 0
                                    (ReLU'(0) = 0): harmless, since they are constants anyway
                                    (x_<1 is empty) and any constant they could add is already
                                    a bias c_{l,t} or b_t of a later position

    Dropout: with ``dropout > 0`` and ``model.training``, each e_s = W_s^T x_s is multiplied by
    an inverted-dropout mask drawn from the model's own NumPy stream (seeded by ``seed``).

    Gradients: ``loss_and_grads`` returns new arrays by default.  With ``model.reuse_buffers =
    True`` (the training loop; W alone is p d H floats) dW lives in a (p, d, H) buffer that the
    NEXT call overwrites: apply (or scale) it before the next call.  The logits always live in
    one buffer kept on the model.
    """

    def __init__(self, vocab_size, p=8, H=256, layers=2, dropout=0.0, seed=0, dtype=None,
                 init_scale=0.1, device=None):
        if p < 1 or H < 1 or vocab_size < 1 or layers < 1:
            raise ValueError(f"need vocab_size, p, H, layers >= 1, got {vocab_size}, {p}, {H}, {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        dt = resolve_dtype(dtype)
        d = vocab_size
        rng = np.random.default_rng(seed)
        W = np.empty((p, d, H), dtype=dt)
        for s in range(p):                                  # one block at a time: no float64 copy of W
            W[s] = rng.normal(0.0, init_scale, size=(d, H))                   # W[s] = W_s
        params = {"W": W, "b": np.zeros((p, d)), "c0": np.zeros((p, H))}
        if layers > 1:
            params["V"] = rng.normal(0.0, np.sqrt(2.0 / (p * H)), size=(layers - 1, p, H, H))  # V_{l,s}
            params["c"] = np.zeros((layers - 1, p, H))                        # c_{l,s}
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt, copy=False), device) for k, v in params.items()}
        self.config = {"vocab_size": vocab_size, "p": p, "H": H, "layers": layers, "dropout": dropout,
                       "seed": seed, "dtype": dt.name, "init_scale": init_scale}
        self.vocab_size, self.context, self.dropout = vocab_size, p, dropout
        self._rng = np.random.default_rng([seed, 1])   # dropout masks, apart from the init stream

    def logits(self, x, out=None):
        """f_t for every position of windows x (T, B): (T, B, d), a new array unless `out`."""
        x = self.check_tokens(x)
        hs = hidden_states(self.params, x, self._dropout_mask((*x.shape, self.config["H"])))
        return output_logits(self.params["W"], self.params["b"], hs[-1], out)

    def loss_and_grads(self, x):
        """Mean NLL per token (nats) of windows x (T, B) and the gradients (new arrays unless
        ``reuse_buffers``: see the class docstring)."""
        x = self.check_tokens(x)
        T, B = x.shape
        f = self._buffer("f", (T, B, self.vocab_size))
        loss, cache = forward(self.params, x, self._dropout_mask((*x.shape, self.config["H"])), out=f)
        return float(loss), backward(1.0, cache, out=self._grad_buffers(["W"]))


# ----------------------------------------------------------------------------- helpers

def num_layers(params):
    """L, the number of hidden layers: 1 + the number of V blocks."""
    return 1 + (params["V"].shape[0] if "V" in params else 0)
