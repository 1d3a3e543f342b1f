"""The pieces of a decoder-only transformer, each with its hand-written backward pass:
layer normalisation, GELU, causal multi-head self-attention and the position-wise MLP.

Shapes: T positions, B windows, d = d_model features, h heads of d_h = d / h features.
Arrays are time-major, x (T, B, d), so x[t] (B, d) reads as x_t.  Linear maps act on
row vectors, y = x W + b with W (d_in, d_out).

Layer normalisation of each row x (d,) (eps = 1e-5; g, beta (d,)):

    mu = 1/d sum_i x_i,   sigma^2 = 1/d sum_i (x_i - mu)^2
    xhat = (x - mu) / sqrt(sigma^2 + eps)
    y = g * xhat + beta

GELU (tanh form, c = sqrt(2 / pi)):

    gelu(a) = a/2 (1 + tanh(c (a + 0.044715 a^3)))

Causal self-attention; head i owns the columns i d_h .. (i+1) d_h - 1 of q, k, v and c:

    q_t = x_t W_q + b_q,   k_t = x_t W_k,   v_t = x_t W_v + b_v            (B, d) each
    s_{t,r} = q_t^i . k_r^i / sqrt(d_h)   for r <= t;   -inf for r > t     causal mask
    p_{t,r} = exp(s_{t,r}) / sum_r' exp(s_{t,r'})                           softmax over r
    c_t^i = sum_r m_{t,r} p_{t,r} v_r^i                                     m: dropout mask (or 1)
    y_t = [c_t^1 ... c_t^h] W_a + b_a                                       heads merged, projected

The keys have no bias: a bias b_k would add q_t . b_k to every score s_{t,r} of row t, the same
for all r, which the softmax ignores -- its gradient is exactly 0, so it could never learn.

Position-wise MLP (W_1 (d, 4d), W_2 (4d, d)):

    y_t = gelu(x_t W_1 + b_1) W_2 + b_2

Convention: ``op(x, ...) -> (y, cache)`` and ``op_backward(dy, cache) -> (dx, grads)``, with
the cache a NamedTuple; GELU, pointwise, follows scratchnade.functional: ``gelu(a) -> y`` and
``gelu_backward(dy, a) -> da``.  Each op has a ``reference_`` form (the equations as written,
loops over heads and positions where the maths has them) and a fast form; the tests prove them
equal.  The weights of attention and MLP come as dicts keyed by their symbols (ATTENTION_KEYS,
MLP_KEYS), and their gradients come back under the same keys.
"""
import math
from typing import NamedTuple

from ..backend import get_xp

EPS = 1e-5                                  # layer-norm epsilon
GELU_C = math.sqrt(2.0 / math.pi)           # c of the tanh form
GELU_A = 0.044715                           # cubic coefficient of the tanh form
ATTENTION_KEYS = ("W_q", "b_q", "W_k", "W_v", "b_v", "W_a", "b_a")
MLP_KEYS = ("W_1", "b_1", "W_2", "b_2")


# ============================================================================= layer normalisation

class LayerNormReferenceCache(NamedTuple):
    xc: object        # (..., d) x - mu
    std: object       # (..., 1) sqrt(sigma^2 + eps)
    xhat: object      # (..., d) normalised rows
    g: object         # (d,) gain


def reference_layer_norm(x, g, beta, eps=EPS):
    """y = g * (x - mu) / sqrt(sigma^2 + eps) + beta, one line per equation.

    Shapes: x (..., d), g (d,), beta (d,) -> (y (..., d), LayerNormReferenceCache).
    """
    xp = get_xp(x, g)
    mu = x.mean(axis=-1, keepdims=True)                 # mu, per row
    xc = x - mu                                         # x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)        # sigma^2 (the biased variance)
    std = xp.sqrt(var + eps)                            # sqrt(sigma^2 + eps)
    xhat = xc / std                                     # xhat
    y = g * xhat + beta                                 # y
    return y, LayerNormReferenceCache(xc, std, xhat, g)


def reference_layer_norm_backward(dy, cache):
    """The chain rule back through the forward's lines, one stage at a time.

        dg = sum_rows dy * xhat,   dbeta = sum_rows dy,   dxhat = dy * g
        xhat = xc / std:           dxc = dxhat / std,   dstd = -sum_i dxhat_i xc_i / std^2
        std = sqrt(var + eps):     dvar = dstd / (2 std)
        var = mean(xc^2):          dxc += dvar 2 xc / d
        xc = x - mu, mu = mean(x): dx = dxc - mean(dxc)

    Shapes: dy (..., d) -> (dx (..., d), dg (d,), dbeta (d,)).
    """
    xc, std, xhat, g = cache
    d = xc.shape[-1]
    dg = (dy * xhat).reshape(-1, d).sum(axis=0)                    # dg
    dbeta = dy.reshape(-1, d).sum(axis=0)                          # dbeta
    dxhat = dy * g                                                 # dxhat
    dxc = dxhat / std                                              # through xhat = xc / std ...
    dstd = -(dxhat * xc).sum(axis=-1, keepdims=True) / std ** 2    # ... and its denominator
    dvar = dstd / (2.0 * std)                                      # std = sqrt(var + eps)
    dxc = dxc + dvar * 2.0 * xc / d                                # var = mean(xc^2)
    dx = dxc - dxc.sum(axis=-1, keepdims=True) / d                 # xc = x - mean(x)
    return dx, dg, dbeta


class LayerNormCache(NamedTuple):
    xhat: object      # (..., d) normalised rows
    rstd: object      # (..., 1) 1 / sqrt(sigma^2 + eps)
    g: object         # (d,) gain


def layer_norm(x, g, beta, eps=EPS):
    """Layer normalisation as :func:`reference_layer_norm`, keeping only what the backward needs.

    Shapes: x (..., d), g (d,), beta (d,) -> (y (..., d), LayerNormCache).

    Speed: xhat is built in place in one new array (x - mu, then scaled by 1/sigma), and the
    cache keeps xhat and 1/sigma, not x: the caller may overwrite x afterwards (the
    transformer's residual stream is one array updated in place).
    """
    xp = get_xp(x, g)
    xhat = x - x.mean(axis=-1, keepdims=True)           # x - mu
    var = (xhat * xhat).mean(axis=-1, keepdims=True)    # sigma^2
    rstd = 1.0 / xp.sqrt(var + eps)                     # 1 / sqrt(sigma^2 + eps)
    xhat *= rstd                                        # xhat
    y = xhat * g                                        # g * xhat
    y += beta                                           # + beta
    return y, LayerNormCache(xhat, rstd, g)


def layer_norm_backward(dy, cache):
    """The gradients of :func:`reference_layer_norm_backward` in one closed form.

        dxhat = g * dy
        dx = (dxhat - mean_i(dxhat) - xhat mean_i(dxhat xhat)) / sqrt(sigma^2 + eps)

    (the three stages of the reference collapse: mu and sigma^2 are means over the row, so
    their paths subtract the row means of dxhat and of dxhat * xhat).
    Shapes: dy (..., d) -> (dx (..., d), dg (d,), dbeta (d,)).
    """
    xhat, rstd, g = cache
    d = xhat.shape[-1]
    dg = (dy * xhat).reshape(-1, d).sum(axis=0)                    # dg
    dbeta = dy.reshape(-1, d).sum(axis=0)                          # dbeta
    dxhat = dy * g                                                 # dxhat
    dx = dxhat - dxhat.mean(axis=-1, keepdims=True)                # - mean(dxhat)
    dxhat *= xhat
    dx -= xhat * dxhat.mean(axis=-1, keepdims=True)                # - xhat mean(dxhat xhat)
    dx *= rstd                                                     # / sqrt(sigma^2 + eps)
    return dx, dg, dbeta


# ============================================================================= GELU

def gelu(a, out=None):
    """gelu(a) = a/2 (1 + tanh(c (a + 0.044715 a^3))), c = sqrt(2/pi).  Shapes: (...) -> (...).

    Built in place in a single array (`out`, or a new one): no other temporaries of a's size.
    """
    xp = get_xp(a)
    y = xp.multiply(a, a, out=out)                      # a^2
    y *= GELU_A
    y += 1.0
    y *= a                                              # a + 0.044715 a^3
    y *= GELU_C
    xp.tanh(y, out=y)                                   # t = tanh(c (a + 0.044715 a^3))
    y += 1.0
    y *= a
    y *= 0.5                                            # a/2 (1 + t)
    return y


def gelu_backward(dy, a):
    """da = dy * (1/2 (1 + t) + a/2 (1 - t^2) c (1 + 3 * 0.044715 a^2)), t = tanh(c (a + 0.044715 a^3)).

    `a` is the forward's input.  Shapes: dy, a (...) -> (...).
    """
    xp = get_xp(a)
    a2 = a * a
    t = xp.tanh(GELU_C * a * (1.0 + GELU_A * a2))                  # t, as in the forward
    slope = 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * a2)   # gelu'(a)
    return dy * slope


# ============================================================================= causal self-attention

def _head_size(d, heads):
    """d_h = d / h; ValueError unless h >= 1 divides d."""
    if heads < 1 or d % heads:
        raise ValueError(f"heads = {heads} must be >= 1 and divide d_model = {d}")
    return d // heads


def _check_drop(drop, B, heads, T):
    """ValueError unless the attention dropout mask is None or (B, heads, T, T)."""
    if drop is not None and tuple(drop.shape) != (B, heads, T, T):
        raise ValueError(f"attention dropout mask must have shape {(B, heads, T, T)}, got {tuple(drop.shape)}")


class AttentionReferenceCache(NamedTuple):
    x: object         # (T, B, d) input
    q: object         # (T, B, d) queries q_t
    k: object         # (T, B, d) keys k_t
    v: object         # (T, B, d) values v_t
    p: object         # (B, h, T, T) p[j, i, t, r] = p_{t,r} of head i, window j
    c: object         # (T, B, d) merged head outputs c_t
    drop: object      # (B, h, T, T) dropout mask on p, or None
    w: dict           # the weights, ATTENTION_KEYS
    heads: int


def reference_attention(x, w, heads, drop=None):
    """Causal multi-head self-attention as the module docstring writes it: loops over heads
    and positions, one softmax row at a time.

    Inputs: x (T, B, d); w {W_q, W_k, W_v, W_a (d, d); b_q, b_v, b_a (d,)}; heads h
    dividing d; drop (B, h, T, T) dropout mask on the probabilities, or None.
    Returns (y (T, B, d), AttentionReferenceCache).
    """
    xp = get_xp(x, w["W_q"])
    T, B, d = x.shape
    dh = _head_size(d, heads)
    _check_drop(drop, B, heads, T)
    q = x @ w["W_q"] + w["b_q"]                                     # q_t, every t
    k = x @ w["W_k"]                                                # k_t (no bias)
    v = x @ w["W_v"] + w["b_v"]                                     # v_t
    p = xp.zeros((B, heads, T, T), dtype=x.dtype)
    c = xp.zeros((T, B, d), dtype=x.dtype)
    for i in range(heads):
        cols = slice(i * dh, (i + 1) * dh)                          # head i's features
        for t in range(T):
            s = (q[t, None, :, cols] * k[:, :, cols]).sum(axis=2).T / math.sqrt(dh)   # (B, T) s_{t,r}
            s[:, t + 1:] = -xp.inf                                  # causal mask: r > t is the future
            e = xp.exp(s - s.max(axis=1, keepdims=True))            # stable: shift by the row max
            p[:, i, t] = e / e.sum(axis=1, keepdims=True)           # p_{t,r}
            m = p[:, i, t] if drop is None else p[:, i, t] * drop[:, i, t]   # m_{t,r} p_{t,r}
            c[t, :, cols] = (m.T[:, :, None] * v[:, :, cols]).sum(axis=0)     # c_t^i = sum_r m p v_r^i
    y = c @ w["W_a"] + w["b_a"]                                     # y_t = c_t W_a + b_a
    return y, AttentionReferenceCache(x, q, k, v, p, c, drop, w, heads)


def reference_attention_backward(dy, cache):
    """Backward of :func:`reference_attention`, the same loops in reverse order of the maths.

        dc_t = dy_t W_a^T,   dW_a = sum_t c_t^T dy_t,   db_a = sum_t dy_t
        per head, per t:  dm_{t,r} = dc_t . v_r,   dv_r += m_{t,r} p_{t,r} dc_t
                          dp = dm * m,   ds_{t,r} = p_{t,r} (dp_{t,r} - sum_r' dp_{t,r'} p_{t,r'})
                          dq_t = sum_r ds_{t,r} k_r / sqrt(d_h),   dk_r += ds_{t,r} q_t / sqrt(d_h)
        dW_q = sum_t x_t^T dq_t (same for k, v),   dx_t = dq_t W_q^T + dk_t W_k^T + dv_t W_v^T

    Masked entries have p = 0, so they pass no gradient.  Shapes: dy (T, B, d) ->
    (dx (T, B, d), {W_q, b_q, W_k, W_v, b_v, W_a, b_a}).
    """
    x, q, k, v, p, c, drop, w, heads = cache
    xp = get_xp(x)
    T, B, d = x.shape
    dh = d // heads
    dc = dy @ w["W_a"].T                                            # dc_t
    dq, dk, dv = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    for i in range(heads):
        cols = slice(i * dh, (i + 1) * dh)
        for t in range(T):
            m = p[:, i, t] if drop is None else p[:, i, t] * drop[:, i, t]   # (B, T) m p
            dm = (dc[t, None, :, cols] * v[:, :, cols]).sum(axis=2).T         # dc_t . v_r
            dv[:, :, cols] += m.T[:, :, None] * dc[t, None, :, cols]         # dv_r += m p dc_t
            dp = dm if drop is None else dm * drop[:, i, t]                  # through the dropout
            ds = p[:, i, t] * (dp - (dp * p[:, i, t]).sum(axis=1, keepdims=True))   # softmax backward
            ds = ds / math.sqrt(dh)                                          # s = q.k / sqrt(d_h)
            dq[t, :, cols] = (ds.T[:, :, None] * k[:, :, cols]).sum(axis=0)  # dq_t
            dk[:, :, cols] += ds.T[:, :, None] * q[t, None, :, cols]         # dk_r
    grads = {}
    for name, dz in (("q", dq), ("k", dk), ("v", dv), ("a", dy)):
        inp = c if name == "a" else x
        grads["W_" + name] = inp.reshape(T * B, d).T @ dz.reshape(T * B, d)   # dW = sum_t input_t^T dz_t
        if name != "k":                                                      # keys: no bias
            grads["b_" + name] = dz.reshape(T * B, d).sum(axis=0)            # db = sum_t dz_t
    dx = dq @ w["W_q"].T + dk @ w["W_k"].T + dv @ w["W_v"].T         # dx_t: x feeds q, k and v
    return dx, {key: grads[key] for key in ATTENTION_KEYS}


def causal_mask(T, xp, dtype):
    """The additive mask of the scores: (T, T), 0 where r <= t, -inf on the strict upper
    triangle (r > t: the future)."""
    return xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=1)



def split_heads(y, heads, parts=1):
    """Cut `parts` side-by-side projections (q | k | v) into heads, batched over (window, head).

    Shapes: y (T, B, parts d) -> (parts, B h, T, d_h); entry [j, b h + i, t] is head i of
    projection j at position t of window b.  A copy, contiguous for the batched matmuls.
    """
    T, B, width = y.shape
    dh = width // (parts * heads)
    y = y.reshape(T, B, parts, heads, dh).transpose(2, 1, 3, 0, 4)    # (parts, B, h, T, d_h)
    return y.reshape(parts, B * heads, T, dh)


def merge_heads(z, B):
    """The inverse of :func:`split_heads`: (parts, B h, T, d_h) -> (T, B, parts d), heads side by side."""
    parts, BH, T, dh = z.shape
    heads = BH // B
    z = z.reshape(parts, B, heads, T, dh).transpose(3, 1, 0, 2, 4)    # (T, B, parts, h, d_h)
    return z.reshape(T, B, parts * heads * dh)


def attend(q, k, v, causal=True, drop=None):
    """Scaled dot-product attention for a batch of heads: c = (m * softmax(q k^T + mask)) v.

    Inputs: q (N, T, d_h) queries ALREADY divided by sqrt(d_h); k, v (N, R, d_h); causal:
    add :func:`causal_mask` (needs R = T); drop (N, T, R) dropout mask on the probabilities
    or None.  Returns (c (N, T, d_h), p (N, T, R) probabilities, m (N, T, R) the dropped
    probabilities, p itself without dropout).

    Speed: the scores of every (window, head) pair are one batched matmul, and the softmax
    runs in place in the scores' array (shift by the row max, exp, divide by the row sum).
    """
    xp = get_xp(q, k)
    s = xp.matmul(q, k.transpose(0, 2, 1))              # s_{t,r} = q_t . k_r / sqrt(d_h)
    if causal:
        s += causal_mask(s.shape[1], xp, s.dtype)       # -inf for r > t
    s -= s.max(axis=-1, keepdims=True)                  # stable softmax: row max is 0
    xp.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)                  # p_{t,r}
    m = s if drop is None else s * drop                 # dropout on the probabilities
    return xp.matmul(m, v), s, m                        # c_t = sum_r m_{t,r} v_r


class AttentionCache(NamedTuple):
    x: object         # (T, B, d) input
    W: object         # (d, 3d) [W_q | W_k | W_v]
    qkv: object       # (3, B h, T, d_h) queries / sqrt(d_h), keys, values
    p: object         # (B h, T, T) probabilities
    m: object         # (B h, T, T) dropped probabilities (p itself without dropout)
    c: object         # (T B, d) merged head outputs
    drop: object      # (B h, T, T) dropout mask, or None
    w: dict
    heads: int


def attention(x, w, heads, drop=None):
    """Causal multi-head self-attention, as :func:`reference_attention`.

    Inputs: x (T, B, d); w {W_q, W_k, W_v, W_a (d, d); b_q, b_v, b_a (d,)}; heads h;
    drop (B, h, T, T) dropout mask on the probabilities, or None.
    Returns (y (T, B, d), AttentionCache).

    Speed: the three projections are one (T B, d) @ (d, 3d) matmul against [W_q | W_k | W_v];
    one reshape cuts q, k, v into heads batched over (window, head) (:func:`split_heads`);
    1/sqrt(d_h) scales q (T d_h products) instead of the scores (T^2); the scores of all
    positions are one batched matmul with the additive -inf mask (:func:`attend`) instead of
    a loop over t.
    """
    xp = get_xp(x, w["W_q"])
    T, B, d = x.shape
    dh = _head_size(d, heads)
    _check_drop(drop, B, heads, T)
    W = xp.concatenate([w["W_q"], w["W_k"], w["W_v"]], axis=1)        # (d, 3d)
    y = xp.matmul(x.reshape(T * B, d), W)                              # [x W_q | x W_k | x W_v], every t
    y[:, :d] += w["b_q"]                                               # q = x W_q + b_q
    y[:, 2 * d:] += w["b_v"]                                           # v = x W_v + b_v (k: no bias)
    qkv = split_heads(y.reshape(T, B, 3 * d), heads, parts=3)          # (3, B h, T, d_h)
    qkv[0] *= 1.0 / math.sqrt(dh)                                      # q / sqrt(d_h)
    drop = None if drop is None else drop.reshape(B * heads, T, T)
    c, p, m = attend(qkv[0], qkv[1], qkv[2], causal=True, drop=drop)
    c = merge_heads(c[None], B).reshape(T * B, d)                      # [c^1 ... c^h]
    y = xp.matmul(c, w["W_a"])                                         # c_t W_a
    y += w["b_a"]                                                      # + b_a
    return y.reshape(T, B, d), AttentionCache(x, W, qkv, p, m, c, drop, w, heads)


def attention_backward(dy, cache):
    """The gradients of :func:`reference_attention_backward`, every head and position at once.

        dC = dY W_a^T,   dW_a = C^T dY,   db_a = sum dY                    (T B, d)
        dM = dC V^T,   dV = M^T dC                                        batched over (window, head)
        dP = dM * drop,   dS = P * (dP - rowsum(dP * P))                  softmax backward, in place
        dQ = dS K / sqrt(d_h),   dK = dS^T Q / sqrt(d_h)
        [dW_q | dW_k | dW_v] = X^T [dQ | dK | dV],   db_q = sum dQ,   db_v = sum dV
        dX = [dQ | dK | dV] [W_q | W_k | W_v]^T

    Speed: dQ, dK, dV are written (matmul out=) into one (3, B h, T, d_h) array that merges
    back into the (T B, 3d) gradient of the fused projection, so the three input projections
    cost one matmul for their weights and one for dX; the softmax backward reuses dM's array.
    Shapes: dy (T, B, d) -> (dx (T, B, d), {W_q, b_q, W_k, W_v, b_v, W_a, b_a}).
    """
    x, W, qkv, p, m, c, drop, w, heads = cache
    xp = get_xp(x, dy)
    T, B, d = x.shape
    dh = d // heads
    dy = dy.reshape(T * B, d)
    grads = {"W_a": xp.matmul(c.T, dy), "b_a": dy.sum(axis=0)}         # output projection
    dc = split_heads(xp.matmul(dy, w["W_a"].T).reshape(T, B, d), heads)[0]   # (B h, T, d_h)
    q, k, v = qkv
    dqkv = xp.empty_like(qkv)
    xp.matmul(m.transpose(0, 2, 1), dc, out=dqkv[2])                   # dV = M^T dC
    ds = xp.matmul(dc, v.transpose(0, 2, 1))                           # dM = dC V^T
    if drop is not None:
        ds *= drop                                                     # dP
    ds -= (ds * p).sum(axis=-1, keepdims=True)
    ds *= p                                                            # dS
    xp.matmul(ds, k, out=dqkv[0])
    dqkv[0] *= 1.0 / math.sqrt(dh)                                     # dQ
    xp.matmul(ds.transpose(0, 2, 1), q, out=dqkv[1])                   # dK (q already scaled)
    dz = merge_heads(dqkv, B).reshape(T * B, 3 * d)                    # [dQ | dK | dV]
    dW = xp.matmul(x.reshape(T * B, d).T, dz)                          # (d, 3d)
    for j, name in enumerate("qkv"):
        grads["W_" + name] = dW[:, j * d:(j + 1) * d].copy()
    grads["b_q"] = dz[:, :d].sum(axis=0)                               # db_q = sum dQ
    grads["b_v"] = dz[:, 2 * d:].sum(axis=0)                           # db_v = sum dV (keys: no bias)
    dx = xp.matmul(dz, W.T).reshape(T, B, d)                           # x feeds q, k and v
    return dx, {key: grads[key] for key in ATTENTION_KEYS}


# ============================================================================= position-wise MLP

class MLPReferenceCache(NamedTuple):
    x: object         # (T, B, d) input
    a: object         # (T, B, 4d) pre-activations a_t = x_t W_1 + b_1
    z: object         # (T, B, 4d) gelu(a_t)
    w: dict


def reference_mlp(x, w):
    """y_t = gelu(x_t W_1 + b_1) W_2 + b_2, one position at a time (the same two layers at every t).

    Inputs: x (T, B, d); w {W_1 (d, 4d), b_1 (4d,), W_2 (4d, d), b_2 (d,)}.
    Returns (y (T, B, d), MLPReferenceCache).
    """
    xp = get_xp(x, w["W_1"])
    a, z, y = [], [], []
    for t in range(x.shape[0]):
        a.append(x[t] @ w["W_1"] + w["b_1"])                          # a_t
        z.append(gelu(a[t]))                                          # gelu(a_t)
        y.append(z[t] @ w["W_2"] + w["b_2"])                          # y_t
    return xp.stack(y), MLPReferenceCache(x, xp.stack(a), xp.stack(z), w)


def reference_mlp_backward(dy, cache):
    """Backward of :func:`reference_mlp`, position by position; the weights' gradients sum over t.

        dW_2 += z_t^T dy_t,  db_2 += dy_t,  da_t = gelu'(a_t) * (dy_t W_2^T),
        dW_1 += x_t^T da_t,  db_1 += da_t,  dx_t = da_t W_1^T

    Shapes: dy (T, B, d) -> (dx (T, B, d), {W_1, b_1, W_2, b_2}).
    """
    x, a, z, w = cache
    xp = get_xp(x)
    grads = {key: xp.zeros_like(w[key]) for key in MLP_KEYS}
    dx = xp.zeros_like(x)
    for t in range(x.shape[0]):
        grads["W_2"] += z[t].T @ dy[t]                                # dW_2
        grads["b_2"] += dy[t].sum(axis=0)                             # db_2
        da = gelu_backward(dy[t] @ w["W_2"].T, a[t])                  # da_t
        grads["W_1"] += x[t].T @ da                                   # dW_1
        grads["b_1"] += da.sum(axis=0)                                # db_1
        dx[t] = da @ w["W_1"].T                                       # dx_t
    return dx, grads


class MLPCache(NamedTuple):
    x: object         # (N, d) input rows
    a: object         # (N, 4d) pre-activations
    z: object         # (N, 4d) gelu(a)
    w: dict


def mlp(x, w):
    """The MLP of :func:`reference_mlp` on every position at once.

    Shapes: x (..., d) -> (y (..., d), MLPCache).
    Speed: the rows of all positions and windows are stacked, so each layer is one
    (N, d) @ (d, 4d) matmul; biases are added in place and GELU writes one new array.
    """
    xp = get_xp(x, w["W_1"])
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    a = xp.matmul(x2, w["W_1"])                                        # x W_1
    a += w["b_1"]                                                      # a = x W_1 + b_1
    z = gelu(a)                                                        # gelu(a)
    y = xp.matmul(z, w["W_2"])
    y += w["b_2"]                                                      # y = z W_2 + b_2
    return y.reshape(x.shape), MLPCache(x2, a, z, w)


def mlp_backward(dy, cache):
    """The gradients of :func:`reference_mlp_backward`, all positions in four matmuls.

        dW_2 = Z^T dY,  db_2 = sum dY,  dA = gelu'(A) * (dY W_2^T),  dW_1 = X^T dA,
        db_1 = sum dA,  dX = dA W_1^T

    Shapes: dy (..., d) -> (dx (..., d), {W_1, b_1, W_2, b_2}).
    """
    x, a, z, w = cache
    xp = get_xp(x, dy)
    shape = dy.shape
    dy = dy.reshape(-1, shape[-1])
    grads = {"W_2": xp.matmul(z.T, dy), "b_2": dy.sum(axis=0)}
    da = gelu_backward(xp.matmul(dy, w["W_2"].T), a)                   # dA
    grads["W_1"] = xp.matmul(x.T, da)
    grads["b_1"] = da.sum(axis=0)
    dx = xp.matmul(da, w["W_1"].T).reshape(shape)
    return dx, {key: grads[key] for key in MLP_KEYS}
