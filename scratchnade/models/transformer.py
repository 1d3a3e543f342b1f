"""A decoder-only transformer language model (GPT-style, pre-LayerNorm) over token windows.

A window x_1 .. x_T (T <= context) of ids in a vocabulary of V tokens; d = d_model, L blocks,
h heads (scratchnade.models.attention has the blocks' pieces and their equations).  The input
of position t is the previous token, so f_t sees x_<t only; position 1 reads a learned start
vector s, so every token of a window is predicted, the first one included (as the other token
models do: chunked evaluation scores the same tokens):

    e_1 = s + P_1,   e_t = E[x_{t-1}] + P_t   (t >= 2)       input of position t         (d,)
    for each block l = 1 .. L:
        a = e + m1 * Attn_l(LN1_l(e))                         causal self-attention, residual
        e = a + m2 * MLP_l(LN2_l(a))                          position-wise GELU MLP, residual
    h_t = LN(e_t)                                             final layer norm            (d,)
    f_t = b + W_o h_t                                         logits of x_t               (V,)
    loss = 1/(T B) sum_{t,j} -log softmax(f_t^j)[x_t^j]       mean NLL per token

m1, m2 (T, B, d) are inverted-dropout masks on the residual branches and Attn_l drops its
attention probabilities with a mask (B, h, T, T) while training; all are 1 otherwise.  Index
note: arrays are 0-based, e[0] = s + P[0] is position 1, and x[T-1] is the input of nothing.

Parameters (per-block arrays stacked on a leading L axis; row-vector maps y = x W + b):

    E (V, d)          token embeddings, E[w] = the lecture's W_x x_w
    P (context, d)    position embeddings, P[t] of position t + 1
    s (d,)            start vector, the input of position 1
    W_q, W_k, W_v, W_a (L, d, d); b_q, b_v, b_a (L, d)            attention (W_a: output projection;
                                                                  the keys have no bias, see attention)
    g1, beta1, g2, beta2 (L, d)                                   the blocks' layer norms
    W_1 (L, d, 4d), b_1 (L, 4d), W_2 (L, 4d, d), b_2 (L, d)       MLP
    g, beta (d,)      final layer norm
    W_o (V, d), b (V,) output layer.  Tied (``tied=True``): W_o = E (the lecture's W_x = W_o^T),
                      one array under ``E`` and no ``W_o``; dE is the sum of both uses.
"""
import math
from typing import NamedTuple

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, to_device
from ..functional import (check_targets, embedding, embedding_backward, linear_softmax_cross_entropy,
                          linear_softmax_cross_entropy_backward, log_softmax)
from .attention import (ATTENTION_KEYS, MLP_KEYS, attend, attention, attention_backward, layer_norm,
                        layer_norm_backward, merge_heads, mlp, mlp_backward, reference_attention,
                        reference_attention_backward, reference_layer_norm, reference_layer_norm_backward,
                        reference_mlp, reference_mlp_backward, split_heads)
from .sequence import SequenceModel, draw_tokens, grad_buffer

NORM_KEYS = ("g1", "beta1", "g2", "beta2")
BLOCK_KEYS = ATTENTION_KEYS + NORM_KEYS + MLP_KEYS        # the stacked (L, ...) parameters
MASK_KEYS = ("attn", "attn_out", "mlp_out")               # dropout masks: probabilities, m1, m2


# ----------------------------------------------------------------------------- reference (the equations)

class BlockReferenceCache(NamedTuple):
    ln1: object       # LayerNormReferenceCache of LN1(e)
    att: object       # AttentionReferenceCache
    ln2: object       # LayerNormReferenceCache of LN2(a)
    mlp: object       # MLPReferenceCache


class TransformerReferenceCache(NamedTuple):
    x: object         # (T, B) token ids
    blocks: list      # BlockReferenceCache of each block
    lnf: object       # LayerNormReferenceCache of the final LN
    h: object         # (T, B, d) h_t
    logp: list        # logp[t] = log softmax(f_t) (B, V)
    masks: dict       # the dropout masks given ({} for none)
    heads: int
    params: dict


def reference_forward(params, x, heads, masks=None):
    """Mean NLL per token of windows x, the module docstring line by line.

    Inputs: params (module docstring); x (T, B) ids, 1 <= T <= context; heads h; masks: None or
    a dict with any of "attn" (L, B, h, T, T), "attn_out" (L, T, B, d), "mlp_out" (L, T, B, d),
    fixed inverted-dropout masks.  Returns (loss, TransformerReferenceCache).
    """
    _check_input(params, x, heads, masks)
    xp = get_xp(params["E"], x)
    masks = masks or {}
    E, P, s = params["E"], params["P"], params["s"]
    T, B = x.shape
    e = xp.zeros((T, B, E.shape[1]), dtype=E.dtype)
    for t in range(T):
        e[t] = (s if t == 0 else E[x[t - 1]]) + P[t]               # e_t = E[x_{t-1}] + P_t  (s at t = 1)
    blocks = []
    for l in range(params["W_q"].shape[0]):
        u, ln1 = reference_layer_norm(e, params["g1"][l], params["beta1"][l])       # LN1(e)
        z, att = reference_attention(u, _block(params, l, ATTENTION_KEYS), heads, _mask(masks, "attn", l))
        a = e + _drop(z, _mask(masks, "attn_out", l))                               # a = e + m1 * Attn
        v, ln2 = reference_layer_norm(a, params["g2"][l], params["beta2"][l])       # LN2(a)
        r, mlp_cache = reference_mlp(v, _block(params, l, MLP_KEYS))
        e = a + _drop(r, _mask(masks, "mlp_out", l))                                # e = a + m2 * MLP
        blocks.append(BlockReferenceCache(ln1, att, ln2, mlp_cache))
    h, lnf = reference_layer_norm(e, params["g"], params["beta"])                  # h_t = LN(e_t)
    W_o = output_weights(params)
    loss, logp = 0.0, []
    for t in range(T):
        f = params["b"] + h[t] @ W_o.T                             # f_t = b + W_o h_t
        logp.append(log_softmax(f))                                # log softmax(f_t)
        loss = loss - logp[t][xp.arange(B), x[t]].sum()            # -log p(x_t | x_<t)
    loss = loss / (T * B)                                          # mean per token
    return loss, TransformerReferenceCache(x, blocks, lnf, h, logp, masks, heads, params)


def reference_backward(dloss, cache):
    """Gradients of every parameter (the keys of params), by the reverse of each forward loop.

        df_t = dloss/(T B) (softmax(f_t) - onehot(x_t)),  db += df_t,  dW_o += df_t^T h_t,  dh_t = df_t W_o
        de = LN backward of dh
        block l, last to first:   e' = a + m2 r:   da = de',  dr = m2 de'
                                  r = MLP(LN2(a)):  da += LN2 backward(MLP backward(dr))
                                  a = e + m1 z:    de = da,   dz = m1 da
                                  z = Attn(LN1(e)): de += LN1 backward(Attn backward(dz))
        dP_t = sum_j de_t^j,   ds = sum_j de_1^j,   dE[x_{t-1}^j] += de_t^j  (t >= 2, one j at a time)

    Tied: dE also gets the output use dW_o.
    """
    x, blocks, lnf, h, logp, masks, heads, params = cache
    xp = get_xp(params["E"])
    T, B = x.shape
    grads = {k: xp.zeros_like(v) for k, v in params.items()}
    W_o = output_weights(params)
    dW_o = xp.zeros_like(W_o)
    dh = xp.zeros_like(h)
    for t in reversed(range(T)):
        df = xp.exp(logp[t])                                       # softmax(f_t)
        df[xp.arange(B), x[t]] -= 1.0                              # - onehot(x_t)
        df = df * (dloss / (T * B))                                # df_t
        grads["b"] += df.sum(axis=0)                               # db
        dW_o += df.T @ h[t]                                        # dW_o
        dh[t] = df @ W_o                                           # dh_t
    de, grads["g"], grads["beta"] = reference_layer_norm_backward(dh, lnf)
    for l in reversed(range(len(blocks))):
        c = blocks[l]
        da = de                                                    # e' = a + m2 r
        dr = _drop(de, _mask(masks, "mlp_out", l))
        dv, dw_mlp = reference_mlp_backward(dr, c.mlp)
        da_ln, dg2, dbeta2 = reference_layer_norm_backward(dv, c.ln2)
        da = da + da_ln                                            # r = MLP(LN2(a))
        dz = _drop(da, _mask(masks, "attn_out", l))                # a = e + m1 z
        du, dw_att = reference_attention_backward(dz, c.att)
        de_ln, dg1, dbeta1 = reference_layer_norm_backward(du, c.ln1)
        de = da + de_ln                                            # z = Attn(LN1(e))
        for k, g in {**dw_att, **dw_mlp, "g1": dg1, "beta1": dbeta1, "g2": dg2, "beta2": dbeta2}.items():
            grads[k][l] = g
    for t in range(T):
        grads["P"][t] = de[t].sum(axis=0)                          # dP_t
        if t == 0:
            grads["s"] = de[0].sum(axis=0)                         # ds
            continue
        for j in range(B):                                         # repeated tokens add up
            grads["E"][x[t - 1, j]] += de[t, j]                    # dE[x_{t-1}]
    if is_tied(params):
        grads["E"] += dW_o                                         # both uses of E
    else:
        grads["W_o"] = dW_o
    return grads


# ----------------------------------------------------------------------------- fast (the same maths, faster)

class BlockCache(NamedTuple):
    ln1: object       # LayerNormCache of LN1(e)
    att: object       # AttentionCache
    ln2: object       # LayerNormCache of LN2(a)
    mlp: object       # MLPCache
    m1: object        # (T, B, d) dropout mask of the attention branch, or None
    m2: object        # (T, B, d) dropout mask of the MLP branch, or None


class TransformerCache(NamedTuple):
    x: object         # (T, B) token ids
    blocks: list      # BlockCache of each block
    lnf: object       # LayerNormCache of the final LN
    h: object         # (T B, d) h_t, stacked
    ce: object        # SoftmaxCECache; ce.probs is the (T B, V) logits buffer
    heads: int
    params: dict


def embed(params, x):
    """e_1 = s + P_1, e_t = E[x_{t-1}] + P_t for every position.  (T, B) ids -> (T, B, d), a new array.

    One row gather for all positions t >= 2 (no one-hot), then the position rows broadcast over B.
    """
    E = params["E"]
    xp = get_xp(E, x)
    T, B = x.shape
    e = xp.empty((T, B, E.shape[1]), dtype=E.dtype)
    e[0] = params["s"]                                             # s at position 1
    e[1:] = embedding(E, x[:-1])                                   # E[x_{t-1}]
    e += params["P"][:T, None]                                     # + P_t
    return e


def decoder(params, x, heads, masks=None):
    """The L blocks and the final LN.  Returns (h (T, B, d), [BlockCache], final LayerNormCache).

    Inputs as :func:`forward`.  Speed: the residual stream e is ONE (T, B, d) array updated in
    place (e += m1 * Attn, e += m2 * MLP): no cache needs it, since a layer norm keeps its
    normalised output and 1/sigma, not its input.  Each block is a handful of big matmuls
    (scratchnade.models.attention's fast ops), and a branch's dropout scales its output in place.
    """
    masks = masks or {}
    e = embed(params, x)                                           # the residual stream
    blocks = []
    for l in range(params["W_q"].shape[0]):
        u, ln1 = layer_norm(e, params["g1"][l], params["beta1"][l])                 # LN1(e)
        z, att = attention(u, _block(params, l, ATTENTION_KEYS), heads, _mask(masks, "attn", l))
        m1 = _mask(masks, "attn_out", l)
        if m1 is not None:
            z *= m1
        e += z                                                                      # a = e + m1 * Attn
        v, ln2 = layer_norm(e, params["g2"][l], params["beta2"][l])                 # LN2(a)
        r, mlp_cache = mlp(v, _block(params, l, MLP_KEYS))
        m2 = _mask(masks, "mlp_out", l)
        if m2 is not None:
            r *= m2
        e += r                                                                      # e = a + m2 * MLP
        blocks.append(BlockCache(ln1, att, ln2, mlp_cache, m1, m2))
    h, lnf = layer_norm(e, params["g"], params["beta"])                            # h_t = LN(e_t)
    return h, blocks, lnf


def output_logits(params, h, out=None):
    """f = b + W_o h for a stack of states.  Shapes: h (N, d) -> (N, V); `out` reuses a buffer."""
    xp = get_xp(h)
    f = xp.matmul(h, output_weights(params).T, out=out)            # W_o h: the one big matmul
    f += params["b"]                                               # + b
    return f


def forward(params, x, heads, masks=None, out=None):
    """Mean NLL per token (nats) of windows x, as :func:`reference_forward`.  Returns
    (loss, TransformerCache).

    Inputs: as :func:`reference_forward`; out: optional (T B, V) buffer for the logits (it then
    holds the softmax, and :func:`backward` writes dlogits into it).

    Speed: the blocks run on all positions at once (:func:`decoder`); the output layer, which
    dominates for a word-level vocabulary, is ONE (T B, d) @ (d, V) matmul into `out` (the
    class reuses one buffer: no 100 MB page faults per step), then the fused in-place softmax
    cross-entropy turns the logits into the softmax with no V-sized temporaries, the bias and
    the column sums for db inside its cache-sized blocks, on exp2 (the logits in bits:
    :func:`~scratchnade.functional.linear_softmax_cross_entropy`).
    """
    _check_input(params, x, heads, masks)
    T, B = x.shape
    h, blocks, lnf = decoder(params, x, heads, masks)
    h = h.reshape(T * B, -1)
    loss, ce = linear_softmax_cross_entropy(h, output_weights(params), params["b"], x.reshape(T * B),
                                            out=out)                # f_t = b + W_o h_t; out becomes softmax(f_t)
    return loss, TransformerCache(x, blocks, lnf, h, ce, heads, params)


def backward(dloss, cache, out=None):
    """The gradients of :func:`reference_backward`, with whole-window matmuls.

    Overwrites the logits buffer (call once per forward).  out: optional dict of (V, d)
    buffers "E" and "W_o" to receive dE and dW_o (reused across steps); without it every
    gradient is a new array.  Returns a dict with the keys of params.

        dF = dloss/(T B) (softmax(F) - onehot(x))          = s D, D in place in the logits buffer
        db = sum dF,  dW_o = dF^T H,  dH = dF W_o          three ops for every position, the
                                                           scale s on the small H and dH sides
        blocks in reverse, on one (T, B, d) gradient of the residual stream updated in place:
            de += LN2 backward(MLP backward(m2 de));   de += LN1 backward(Attn backward(m1 de))
        dP[:T] = sum_j de,  ds = sum_j de_1,  dE[x_{t-1}] += de_t  (ONE scatter-add, t >= 2)

    Tied: dW_o lands in dE's buffer first, and the scatter-add of the input use adds to it.
    """
    x, blocks, lnf, h, ce, heads, params = cache
    xp = get_xp(params["E"])
    T, B = x.shape
    d = h.shape[1]
    W_o = output_weights(params)
    dW_o = grad_buffer(out, "E" if is_tied(params) else "W_o", W_o)
    dh, dW_o, db = linear_softmax_cross_entropy_backward(dloss, ce, h, W_o, dW=dW_o)   # dH = dF W_o, dF^T H, sum dF
    grads = {"b": db}
    de, grads["g"], grads["beta"] = layer_norm_backward(dh.reshape(T, B, d), lnf)
    for k in BLOCK_KEYS:
        grads[k] = xp.empty_like(params[k])
    for l in reversed(range(len(blocks))):
        c = blocks[l]
        dr = de if c.m2 is None else de * c.m2                     # e' = a + m2 r
        dv, dw_mlp = mlp_backward(dr, c.mlp)
        da_ln, grads["g2"][l], grads["beta2"][l] = layer_norm_backward(dv, c.ln2)
        de += da_ln                                                # de is now da
        dz = de if c.m1 is None else de * c.m1                     # a = e + m1 z
        du, dw_att = attention_backward(dz, c.att)
        de_ln, grads["g1"][l], grads["beta1"][l] = layer_norm_backward(du, c.ln1)
        de += de_ln                                                # de is now de of the block's input
        for k, g in {**dw_att, **dw_mlp}.items():
            grads[k][l] = g
    grads["P"] = xp.zeros_like(params["P"])
    grads["P"][:T] = de.sum(axis=1)                                # dP_t
    grads["s"] = de[0].sum(axis=0)                                 # ds
    if is_tied(params):
        grads["E"] = dE = dW_o                                     # output use, already in place
    else:
        grads["W_o"] = dW_o
        grads["E"] = dE = grad_buffer(out, "E", params["E"])
        dE[...] = 0.0
    embedding_backward(de[1:], x[:-1], out=dE)                     # dE[x_{t-1}] += de_t
    return {k: grads[k] for k in params}


# ----------------------------------------------------------------------------- decoding with a key/value cache

class KVCache(NamedTuple):
    keys: object      # (L, n h, capacity, d_h): keys[l, :, r] = k_r of block l, per (window, head)
    values: object    # (L, n h, capacity, d_h): values v_r, the same layout


def kv_cache(params, n, heads, capacity):
    """An empty KVCache for n windows of up to `capacity` positions (on the parameters' device)."""
    W_q = params["W_q"]
    xp = get_xp(W_q)
    L, d, _ = W_q.shape
    shape = (L, n * heads, capacity, d // heads)
    return KVCache(xp.empty(shape, dtype=W_q.dtype), xp.empty(shape, dtype=W_q.dtype))


def decode_step(params, heads, cache, t, prev=None):
    """h_t (n, d) of position t + 1 (0-based t) from the cached keys and values of positions < t.

    Inputs: prev (n,) ids of x_{t-1}, the input of this position (None at t = 0: the start
    vector s); cache: a KVCache whose rows < t hold the earlier positions' k and v.  Writes
    row t of every block's keys and values, then attends over rows 0 .. t: O(t) attention
    work per step instead of re-running the window, and no mask is needed (every cached row
    is in the past or the present).  The logits are :func:`output_logits` of the result.
    """
    E = params["E"]
    xp = get_xp(E)
    n = cache.keys.shape[1] // heads
    d = E.shape[1]
    scale = 1.0 / math.sqrt(d // heads)
    inp = xp.broadcast_to(params["s"], (n, d)) if t == 0 else embedding(E, prev)
    e = inp + params["P"][t]                                       # e_t
    for l in range(params["W_q"].shape[0]):
        w = _block(params, l, ATTENTION_KEYS)
        u, _ = layer_norm(e, params["g1"][l], params["beta1"][l])                   # LN1(e_t)
        q = split_heads((u @ w["W_q"] + w["b_q"])[None], heads)[0]                  # (n h, 1, d_h)
        cache.keys[l, :, t] = split_heads((u @ w["W_k"])[None], heads)[0, :, 0]             # k_t
        cache.values[l, :, t] = split_heads((u @ w["W_v"] + w["b_v"])[None], heads)[0, :, 0]  # v_t
        c, _, _ = attend(q * scale, cache.keys[l, :, :t + 1], cache.values[l, :, :t + 1], causal=False)
        e = e + merge_heads(c[None], n)[0] @ w["W_a"] + w["b_a"]                    # a_t
        v, _ = layer_norm(e, params["g2"][l], params["beta2"][l])                   # LN2(a_t)
        e = e + mlp(v, _block(params, l, MLP_KEYS))[0]                              # e_t of the next block
    return layer_norm(e, params["g"], params["beta"])[0]                           # h_t


# ----------------------------------------------------------------------------- the class

class Transformer(SequenceModel):
    """A decoder-only transformer over d = vocab_size tokens (see the module docstring).

    Windows: time-major (T, B) ids with T <= context; every position is predicted, the first one
    from the start vector s.  Longer windows are refused (the model has P rows for `context`
    positions only).  Past `context` tokens, sampling and next_token_logits slide a window
    over the last context - 1 tokens, as the other windowed models and sliding evaluation do.

    Options
    -------
    context : the number of positions (rows of P), the model's order p.
    d_model, layers, heads : d, L and h; heads must divide d_model (d_h = d / h); the MLP is 4d wide.
    tied : W_o = E, one (V, d) array under ``E``; its gradient sums the input and output uses.
    dropout : probability q of the inverted dropout on the attention probabilities and on both
        residual branches of every block, while ``model.training`` (log_prob, loss and sample
        run in eval mode).  Masks come from the model's own host stream ``self._rng``, so a
        seed gives the same masks on every device, and a checkpoint resumes them.
    init_scale : E, P, s, W_q, W_k, W_v, W_1, W_o ~ N(0, init_scale^2); the branch outputs
        W_a, W_2 ~ N(0, init_scale^2 / (2 L)) (GPT-2: each block adds two branches to the
        residual stream, so its variance stays O(1) in L); biases 0, gains 1.

    ``loss_and_grads`` reuses its (T B, V) logits buffer from call to call and returns new
    gradient arrays, safe to keep; with ``model.reuse_buffers = True`` (the training loop) the
    (V, d) gradients of E and W_o live in buffers that the NEXT call overwrites.
    """

    def __init__(self, vocab_size, context=128, d_model=256, layers=2, heads=4, tied=False, dropout=0.0,
                 seed=0, dtype=None, init_scale=0.02, device=None):
        for name, value in (("vocab_size", vocab_size), ("context", context), ("d_model", d_model),
                            ("layers", layers), ("heads", heads)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if d_model % heads:
            raise ValueError(f"heads = {heads} must divide d_model = {d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        V, d, L = vocab_size, d_model, layers
        branch = init_scale / math.sqrt(2 * L)                     # W_a, W_2: scaled by 1/sqrt(2L)

        def normal(std, *shape):
            return rng.normal(0.0, std, size=shape)

        params = {"E": normal(init_scale, V, d), "P": normal(init_scale, context, d),
                  "s": normal(init_scale, d)}
        params.update({"W_q": normal(init_scale, L, d, d), "b_q": np.zeros((L, d)),
                       "W_k": normal(init_scale, L, d, d),                          # keys: no bias
                       "W_v": normal(init_scale, L, d, d), "b_v": np.zeros((L, d)),
                       "W_a": normal(branch, L, d, d), "b_a": np.zeros((L, d)),
                       "g1": np.ones((L, d)), "beta1": np.zeros((L, d)),
                       "g2": np.ones((L, d)), "beta2": np.zeros((L, d)),
                       "W_1": normal(init_scale, L, d, 4 * d), "b_1": np.zeros((L, 4 * d)),
                       "W_2": normal(branch, L, 4 * d, d), "b_2": np.zeros((L, d)),
                       "g": np.ones(d), "beta": np.zeros(d)})
        if not tied:
            params["W_o"] = normal(init_scale, V, d)               # drawn last: tied or not, the rest agree
        params["b"] = np.zeros(V)
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.vocab_size, self.context, self.d_model = vocab_size, context, d_model
        self.layers, self.heads, self.tied, self.dropout = layers, heads, tied, dropout
        self.config = {"vocab_size": vocab_size, "context": context, "d_model": d_model, "layers": layers,
                       "heads": heads, "tied": tied, "dropout": dropout, "seed": seed, "dtype": dt.name,
                       "init_scale": init_scale}
        self._rng = np.random.default_rng(None if seed is None else [seed, 1])     # dropout masks

    def dropout_masks(self, T, B):
        """Fresh dropout masks for a (T, B) window while training with dropout > 0, else None.

        {"attn": (L, B, h, T, T), "attn_out": (L, T, B, d), "mlp_out": (L, T, B, d)}, drawn in
        that order from ``self._rng``.
        """
        if not (self.training and self.dropout > 0):
            return None
        return {k: self._dropout_mask(shape) for k, shape in _mask_shapes(self.params, self.heads, T, B).items()}

    def loss_and_grads(self, x, masks=None):
        """Mean NLL per token (nats) of windows x (T, B) and the gradient of every parameter.

        masks: optional fixed dropout masks (a dict as :func:`forward` takes; gradient checks),
        else fresh ones are drawn when training with dropout > 0.
        """
        x = self.check_tokens(x)
        T, B = x.shape
        if masks is None:
            masks = self.dropout_masks(T, B)
        else:
            masks = {k: to_device(m, self.device) for k, m in masks.items()}
        f = self._buffer("logits", (T * B, self.vocab_size))
        loss, cache = forward(self.params, x, self.heads, masks, out=f)
        return float(loss), backward(1.0, cache, out=self._grad_buffers(["E", "W_o"]))

    def logits(self, x, out=None):
        """f_t for every position of windows x (T, B): (T, B, V), a new array unless `out`
        (dropout applies while training)."""
        x = self.check_tokens(x)
        T, B = x.shape
        _check_input(self.params, x, self.heads)
        h, _, _ = decoder(self.params, x, self.heads, self.dropout_masks(T, B))
        f = output_logits(self.params, h.reshape(T * B, -1),
                          None if out is None else out.reshape(T * B, self.vocab_size))
        return f.reshape(T, B, self.vocab_size)

    def next_token_logits(self, history):
        """f for the token after `history` (T, B): shape (B, V).

        T < context: runs the history through :func:`decode_step` with a fresh key/value cache
        (the same path as :meth:`sample`); equal to ``logits(window)[T]`` for any window that
        starts with the history.  T >= context: the window of the last context - 1 tokens
        (SequenceModel.next_token_logits: one forward pass), as sliding evaluation scores it.
        """
        if history.shape[0] >= self.context:
            return super().next_token_logits(history)
        history = self.check_tokens(history)
        T, n = history.shape
        cache = kv_cache(self.params, n, self.heads, T + 1)
        for t in range(T + 1):
            h = decode_step(self.params, self.heads, cache, t, None if t == 0 else history[t - 1])
        return output_logits(self.params, h)

    def sample(self, n, length, seed=None, temperature=1.0, top_k=None, prompt=None):
        """Ancestral samples w_t ~ softmax(f_t / temperature), shape (length, n) on the host.

        Same arguments, draws and result as SequenceModel.sample, but each of the first `context`
        steps appends one row of keys and values per block to a cache and attends over the
        cached rows (O(t) work per token, no re-run of the window).  Past `context` tokens there
        is no position left: each step re-runs the window of the last context - 1 tokens
        (:meth:`next_token_logits`), whose positions have all shifted, so nothing is cached.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        rng = np.random.default_rng(seed)
        hist = np.zeros((0, n), dtype=np.int64) if prompt is None else np.asarray(prompt, dtype=np.int64)
        hist = np.repeat(hist[:, None], n, axis=1) if hist.ndim == 1 else hist
        check_targets(hist, self.vocab_size, name="prompt ids")
        if hist.ndim != 2 or hist.shape[1] != n:
            raise ValueError(f"prompt must be (T0,) or (T0, {n}) ids, got shape {hist.shape}")
        T0 = hist.shape[0]
        if T0 >= length:
            return hist[:length]                                   # nothing to draw
        xp = get_xp(self.params["E"])
        out, history = [hist], to_device(hist, self.device)
        cache = kv_cache(self.params, n, self.heads, min(length, self.context))
        for t in range(length):
            if t < self.context:                                   # position t + 1: one cached step
                h = decode_step(self.params, self.heads, cache, t, None if t == 0 else history[t - 1])
            if t < T0:
                continue                                           # x_t is the prompt's (it fills the cache)
            if t < self.context:
                f = output_logits(self.params, h)                  # f_t from the cached step
            else:
                f = self.next_token_logits(history)                # past the context: a sliding window
            w = draw_tokens(f, rng, temperature, top_k)            # (1, n) host
            out.append(w)
            history = xp.concatenate([history, to_device(w, self.device)])
        return np.concatenate(out)[:length]


# ----------------------------------------------------------------------------- checks and helpers

def is_tied(params):
    """True when W_o = E is shared (no separate ``W_o`` array)."""
    return "W_o" not in params


def output_weights(params):
    """The (V, d) output matrix W_o: params["W_o"], or E itself when tied."""
    return params["E"] if is_tied(params) else params["W_o"]


def _block(params, l, keys):
    """{key: params[key][l]}: block l's weights (views of the stacked arrays)."""
    return {k: params[k][l] for k in keys}


def _mask(masks, name, l):
    """Block l's dropout mask `name`, or None."""
    m = masks.get(name) if masks else None
    return None if m is None else m[l]


def _drop(z, m):
    """m * z, or z without a mask (a new array either way when m is given)."""
    return z if m is None else z * m


def _mask_shapes(params, heads, T, B):
    """{name: shape} of the dropout masks of a (T, B) window."""
    L, d, _ = params["W_q"].shape
    return {"attn": (L, B, heads, T, T), "attn_out": (L, T, B, d), "mlp_out": (L, T, B, d)}


def _check_input(params, x, heads, masks=None):
    """ValueError unless x is a (T, B) array of ids in [0, V), 1 <= T <= context, B >= 1, heads
    divides d, and every dropout mask given has a known name and the right shape."""
    context, d = params["P"].shape
    if x.ndim != 2 or x.shape[1] == 0 or not 1 <= x.shape[0] <= context:
        raise ValueError(f"Transformer expects token windows of shape (T, B) with 1 <= T <= context = "
                         f"{context} and B >= 1, got shape {tuple(x.shape)}")
    check_targets(x, params["E"].shape[0], name="token ids")
    if heads < 1 or d % heads:
        raise ValueError(f"heads = {heads} must be >= 1 and divide d_model = {d}")
    shapes = _mask_shapes(params, heads, *x.shape)
    for name, m in (masks or {}).items():
        if name not in shapes:
            raise ValueError(f"unknown dropout mask {name!r}; expected some of {MASK_KEYS}")
        if m is not None and tuple(m.shape) != shapes[name]:
            raise ValueError(f"dropout mask {name!r} must have shape {shapes[name]}, got {tuple(m.shape)}")
