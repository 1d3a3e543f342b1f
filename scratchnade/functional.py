"""Pure array operations and their backward passes, written once for NumPy and CuPy.

Convention: ``f(x) -> y`` and ``f_backward(dy, ...) -> dx`` where ``dX`` is dloss/dX.
Each backward takes whatever its forward already computed (``y`` for sigmoid,
``x`` for relu) so that a model's cache holds no extra copies.

All losses start from logits (pre-activations): ``softplus`` and ``log_softmax`` are
written with a max-shift so that logits of +-1e4 give finite values and gradients.
"""
from typing import NamedTuple

import numpy as np

from .backend import get_xp, sum_rows_by_id
from .parallel import for_each_block


# ----------------------------------------------------------------------------- pointwise

def sigmoid(x, out=None):
    """sigmoid(x) = 1 / (1 + exp(-x)), accurate and finite for any x.  Shapes: x (...) -> (...)."""
    xp = get_xp(x)
    e = xp.abs(x)
    xp.negative(e, out=e)
    xp.exp(e, out=e)                                 # e = exp(-|x|) in (0, 1], never overflows
    num = xp.where(x >= 0, 1.0, e)                   # x >= 0: 1/(1+e);  x < 0: e/(1+e)
    e += 1.0
    return xp.divide(num, e, out=out)


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), with y = sigmoid(x) from the forward pass."""
    return dy * y * (1.0 - y)


def relu(x):
    """relu(x) = max(x, 0).  Shapes: x (...) -> (...)."""
    xp = get_xp(x)
    return xp.maximum(x, 0)


def relu_backward(dy, x):
    """dx = dy * 1[x > 0]; `x` is the forward input (or output: same sign pattern)."""
    return dy * (x > 0)


def softplus(x):
    """softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), finite for any x."""
    xp = get_xp(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def softplus_backward(dy, x):
    """dx = dy * sigmoid(x)."""
    return dy * sigmoid(x)


def log_sigmoid(x):
    """log sigmoid(x) = -softplus(-x); never log(sigmoid(x)), which is -inf for x << 0."""
    return -softplus(-x)


def log_sigmoid_backward(dy, x):
    """dx = dy * sigmoid(-x) = dy * (1 - sigmoid(x))."""
    return dy * sigmoid(-x)


# ----------------------------------------------------------------------------- softmax

def logsumexp(f, axis=-1, keepdims=False):
    """log sum_k exp(f_k) along `axis`, shifted by the max so it never overflows."""
    xp = get_xp(f)
    m = f.max(axis=axis, keepdims=True)                          # per-row max
    lse = m + xp.log(xp.exp(f - m).sum(axis=axis, keepdims=True))
    return lse if keepdims else xp.squeeze(lse, axis=axis)


def log_softmax(f, axis=-1):
    """log softmax(f) = f - logsumexp(f).  Shapes: f (..., V) -> (..., V)."""
    return f - logsumexp(f, axis=axis, keepdims=True)


def log_softmax_backward(dlogp, logp, axis=-1):
    """df = dlogp - softmax(f) * sum(dlogp), with logp = log_softmax(f) from the forward."""
    xp = get_xp(logp)
    return dlogp - xp.exp(logp) * dlogp.sum(axis=axis, keepdims=True)


def check_targets(targets, num_classes, name="targets"):
    """Raise ValueError unless `targets` are integers in [0, num_classes)."""
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids, got dtype {targets.dtype}")
    if targets.size:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contain id {bad}, out of range [0, {num_classes})")


class SoftmaxCECache(NamedTuple):
    probs: object       # (N, V) softmax(logits); the logits buffer itself when inplace=True
    targets: object     # (N,) integer ids
    weights: object     # (N,) mask / number of counted tokens
    prob_sum: object = None   # (V,) sum_n softmax(f_n), when the forward took it (column_sum=True)


BLOCK_BYTES = 1 << 20   # host softmax works on ~1 MB row blocks, which stay in the L2 cache


def _row_blocks(a):
    """Row slices of `a` of about BLOCK_BYTES each on the host; one slice on a GPU, where
    every extra block would only add kernel launches."""
    n = a.shape[0]
    step = n if get_xp(a) is not np else max(1, BLOCK_BYTES // max(1, a.shape[1] * a.itemsize))
    return [slice(i, i + step) for i in range(0, n, step)] or [slice(0, 0)]


LN2 = float(np.log(2.0))      # nats per bit
LOG2E = 1.0 / LN2             # bits per nat
COLUMN_GROUP = 8              # row blocks per partial column sum (a fixed grouping: the same bits on any thread count)


def softmax_cross_entropy(logits, targets, mask=None, inplace=False, bias=None, column_sum=False, bits=False):
    """Mean cross-entropy -log softmax(logits + bias)[target] over the (unmasked) rows.

    Shapes: logits (N, V), targets (N,) int, mask (N,) of 0/1 or None, bias (V,) or None
    -> (scalar loss, cache).  No one-hot matrix is built: the target logit is a gather.  With
    ``inplace=True`` the logits buffer is overwritten by the probabilities (no (N, V) temporary
    is kept), and :func:`softmax_cross_entropy_backward` can then write dlogits into the same
    buffer.  On the host the passes run over ~1 MB blocks of rows (about twice as fast for a
    word-level vocabulary as passes over the whole buffer), the blocks on every core
    (:func:`scratchnade.parallel.for_each_block`: the same bits for any thread count).

        loss = sum_n w_n * (logsumexp(f_n) - f_n[y_n]),  w_n = mask_n / sum(mask)

    ``bias``: f = logits + bias, added block by block while each block is in cache (the same
    bits as adding it to the whole buffer first, without that pass over (N, V)); with
    ``inplace=True`` the buffer ends as softmax(f) either way.  ``column_sum=True`` also sums
    the probabilities over the rows, block by block in the same pass (``cache.prob_sum``, (V,)),
    for :func:`softmax_cross_entropy_grad_factors`.
    ``bits=True``: logits and bias are given in bits, f / ln 2 (a caller folds log2(e) into a small
    factor, the hidden states and the bias, instead of into the (N, V) buffer); softmax(f) is then
    2^(f/ln 2 - max) / sum, with NumPy's exp2, 2.2x faster than its exp (0.23 against 0.50 ns per
    float32), and the loss is still in nats.
    """
    xp = get_xp(logits, targets)
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, V) and targets (N,), "
                         f"got {logits.shape} and {targets.shape}")
    if bias is not None and bias.shape != logits.shape[1:]:
        raise ValueError(f"softmax_cross_entropy: bias must have shape ({logits.shape[1]},), got {bias.shape}")
    if column_sum and mask is not None:
        raise ValueError("softmax_cross_entropy: column_sum=True is for unmasked rows (mask=None)")
    check_targets(targets, logits.shape[1])
    n, v = logits.shape
    target_logit = logits[xp.arange(n), targets]                 # f[y], before f is overwritten
    if bias is not None:
        target_logit += bias[targets]                            # + b[y]
    probs = logits if inplace else logits.copy()
    lse = xp.empty(n, dtype=logits.dtype)                        # (N,) logsumexp(f_n) (bits: log2-sum-exp2)
    blocks = _row_blocks(probs)
    groups = [blocks[i:i + COLUMN_GROUP] for i in range(0, len(blocks), COLUMN_GROUP)]
    acc = xp.empty((len(groups), 2, v), dtype=probs.dtype) if column_sum else None   # a sum, a scratch row
    exp, log = (xp.exp2, xp.log2) if bits else (xp.exp, xp.log)

    def softmax_rows(rows):
        f = probs[rows]
        if bias is not None:
            f += bias                                            # f = logits + b, in cache
        m = f.max(axis=1, keepdims=True)                         # row max
        f -= m                                                   # shift: max logit is 0
        exp(f, out=f)                                            # unnormalised softmax
        z = xp.einsum("ij->i", f)[:, None]                       # partition function (einsum: 2.5x np.sum)
        f *= 1.0 / z                                             # softmax
        lse[rows] = (m + log(z))[:, 0]
        return f

    def softmax_group(g):                                        # a few blocks in order, and their column sum
        for j, rows in enumerate(groups[g]):
            f = softmax_rows(rows)
            if column_sum:
                f.sum(axis=0, out=acc[g, 0 if j == 0 else 1])    # this block's probabilities, in cache
                if j:
                    acc[g, 0] += acc[g, 1]
    for_each_block(softmax_group, range(len(groups)))            # row blocks on every core
    nll = lse - target_logit                                     # (N,) -log p(y_n)
    if bits:
        nll *= LN2                                               # bits -> nats
    if mask is None:
        weights = xp.full(n, 1.0 / max(n, 1), dtype=logits.dtype)
    else:
        if mask.shape != (n,):
            raise ValueError(f"mask must have shape ({n},), got {mask.shape}")
        count = mask.sum()
        weights = mask.astype(logits.dtype) / xp.maximum(count, 1)
    loss = (weights * nll).sum()
    prob_sum = acc[:, 0].sum(axis=0) if column_sum else None
    return loss, SoftmaxCECache(probs, targets, weights, prob_sum)


def softmax_cross_entropy_backward(dloss, cache, out=None, column_sum=False):
    """dlogits = dloss * w_n * (softmax(f_n) - onehot(y_n)).  Shape (N, V).

    ``out=cache.probs`` reuses the forward's buffer (after an ``inplace=True`` forward).
    ``column_sum=True`` returns (dlogits, sum_n dlogits_n): the (V,) gradient of a bias added
    to every row, summed while each block of rows is in cache (one (V,) partial sum per block,
    then the sum of the partials) instead of a pass of its own over the (N, V) buffer.
    """
    xp = get_xp(cache.probs)
    probs, targets, weights = cache[:3]
    scale = (dloss * weights)[:, None]                           # (N, 1) w_n dloss
    d = probs if out is probs else (xp.empty_like(probs) if out is None else out)
    blocks = _row_blocks(probs)
    partial = xp.empty((len(blocks), probs.shape[1]), dtype=d.dtype) if column_sum else None

    def grad_rows(k):
        rows = blocks[k]
        xp.multiply(probs[rows], scale[rows], out=d[rows])      # w * softmax
        n = xp.arange(*rows.indices(probs.shape[0]))
        d[n, targets[n]] -= scale[n, 0]                          # - w * onehot, a scatter
        if column_sum:
            d[rows].sum(axis=0, out=partial[k])                  # this block's rows, in cache
    for_each_block(grad_rows, range(len(blocks)))
    return (d, partial.sum(axis=0)) if column_sum else d


def softmax_cross_entropy_grad_factors(dloss, cache):
    """dlogits as a product of factors, with no pass over the (N, V) buffer:

        dlogits = diag(s) D,   D = softmax(f) - onehot(y),   s = dloss w_n     (N,)
        db      = sum_n dlogits_n = sum_n s_n softmax(f_n) - sum_n s_n onehot(y_n)

    D is written over the probabilities in place (N entries change: the targets'), so the
    buffer holds D afterwards.  A caller whose every use of dlogits is a matmul scales the small
    factor instead: dlogits^T h = D^T (s h) and dlogits W = s (D W).  Needs the uniform weights
    of an unmasked forward (s is then the scalar dloss / N) and ``column_sum=True`` there
    (db from ``cache.prob_sum``).  Returns (D (N, V), s (scalar), db (V,)).
    """
    probs, targets, weights, prob_sum = cache
    xp = get_xp(probs)
    if prob_sum is None:
        raise ValueError("softmax_cross_entropy_grad_factors needs the forward's column_sum=True")
    n = probs.shape[0]
    s = dloss * weights[0] if n else 0.0                         # dloss / N for every row
    probs[xp.arange(n), targets] -= 1.0                          # D = softmax - onehot: N entries
    db = prob_sum - xp.bincount(targets, minlength=probs.shape[1]).astype(probs.dtype)
    db *= s
    return probs, s, db


def linear_softmax_cross_entropy(h, W, b, targets, out=None):
    """The output layer of a word-level model and its loss, fast: mean_n -log softmax(W h_n + b)[y_n].

    Shapes: h (N, K), W (V, K), b (V,), targets (N,) -> (loss, cache); out: optional (N, V)
    buffer for the logits, which then holds the softmax (no 150 MB page faults per step).
    ONE (N, K) @ (K, V) matmul, made in bits (log2(e) h: the small factor is scaled, not the
    (N, V) product), then one cache-blocked softmax pass that adds log2(e) b, runs exp2 and sums
    the probabilities per column (:func:`softmax_cross_entropy`, bits=True, column_sum=True).
    """
    xp = get_xp(h)
    f = xp.matmul(LOG2E * h, W.T, out=out)                       # (N, V) (W h_n) / ln 2
    return softmax_cross_entropy(f, targets, inplace=True, bias=LOG2E * b, column_sum=True, bits=True)


def linear_softmax_cross_entropy_backward(dloss, cache, h, W, dW=None):
    """(dh, dW, db) of :func:`linear_softmax_cross_entropy`, with no pass over the (N, V) buffer:

        dlogits = s D  (s = dloss / N, D = softmax - onehot: N entries of the buffer change)
        dW = D^T (s h)      dh = s (D W)      db = s (sum_n softmax_n - counts)

    two matmuls with the scale on their small (N, K) sides (:func:`softmax_cross_entropy_grad_factors`).
    dW: optional (V, K) buffer.  The buffer holds D afterwards: call once per forward.
    """
    xp = get_xp(h)
    D, s, db = softmax_cross_entropy_grad_factors(dloss, cache)
    dW = xp.matmul(D.T, s * h, out=dW)                           # (V, K) sum_n dlogits_n h_n^T
    dh = xp.matmul(D, W)                                         # (N, K) W^T dlogits_n, for every n ...
    dh *= s                                                      # ... with dlogits = s D
    return dh, dW, db


def token_log_prob(logits, targets):
    """log softmax(logits)[target] per row.  Shapes: logits (N, V), targets (N,) -> (N,)."""
    xp = get_xp(logits, targets)
    check_targets(targets, logits.shape[-1])
    lse = xp.empty(logits.shape[0], dtype=logits.dtype)

    def lse_rows(rows):                                          # cache-sized temporaries only
        lse[rows] = logsumexp(logits[rows], axis=1)
    for_each_block(lse_rows, _row_blocks(logits))
    return logits[xp.arange(logits.shape[0]), targets] - lse


# ----------------------------------------------------------------------------- Bernoulli

def check_binary(x, name="x"):
    """Raise ValueError unless every entry of `x` is 0 or 1."""
    xp = get_xp(x)
    if x.size and not bool(xp.all((x == 0) | (x == 1))):
        raise ValueError(f"{name} must be binary (values in {{0, 1}}); found other values")


def bernoulli_nll(logits, x):
    """-log Bern(x; sigmoid(a)) = softplus(a) - x a, elementwise.  Shapes: (...) -> (...)."""
    return softplus(logits) - x * logits


def bernoulli_nll_backward(dnll, logits, x):
    """da = dnll * (sigmoid(a) - x)."""
    return dnll * (sigmoid(logits) - x)


# ----------------------------------------------------------------------------- embeddings

def embedding(E, ids):
    """Row gather: E[ids].  Shapes: E (V, K), ids (...) int -> (..., K).  No one-hot."""
    return E[ids]


def embedding_backward(dy, ids, num_embeddings=None, out=None):
    """dE = scatter-add of dy rows into the rows named by ids (repeated ids accumulate).

    Shapes: dy (..., K), ids (...) -> dE (V, K).  With ``out`` (a (V, K) array, possibly
    a transposed view of a parameter's gradient) the rows are added into it.
    """
    xp = get_xp(dy)
    k = dy.shape[-1]
    if out is None:
        out = xp.zeros((num_embeddings, k), dtype=dy.dtype)
    distinct, sums = sum_rows_by_id(ids.reshape(-1), dy.reshape(-1, k))   # repeated ids summed first
    out[distinct] += sums                                        # then one add per distinct row
    return out


# ----------------------------------------------------------------------------- sampling

def categorical_draw(f, u):
    """One draw per row from softmax(f), by inverse cdf, on f's device.

        p = softmax(f);   w = min{k : p_1 + ... + p_k >= u (p_1 + ... + p_V)}

    The cdf is scaled by its last entry, so round-off in sum(p) never pushes u past it.
    Shapes: f (N, V) logits (-inf allowed, not a whole row), u (N,) uniforms in [0, 1)
    -> (N,) int ids.
    """
    xp = get_xp(f, u)
    prob = xp.exp(f - logsumexp(f, axis=1, keepdims=True))   # softmax(f)
    cdf = xp.cumsum(prob, axis=1)
    w = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=1)         # first k with cdf_k >= u
    return xp.minimum(w, f.shape[1] - 1)


# ----------------------------------------------------------------------------- dropout

def dropout_mask(shape, p, rng, like):
    """Inverted-dropout mask: 0 with probability p, else 1/(1-p).  Drawn on the host from
    the NumPy Generator `rng` (so a seed gives the same mask on every device), then moved
    to the device and dtype of array `like`."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = rng.random(shape) >= p
    xp = get_xp(like)
    return xp.asarray(keep / (1.0 - p), dtype=like.dtype)


def dropout(x, p, rng=None, mask=None):
    """Inverted dropout: y = x * mask.  Pass `mask` to replay a fixed mask (gradient checks).

    Returns (y, mask); mask is None (and y is x) when p == 0 and no mask is given.
    """
    if mask is None:
        if p == 0:
            return x, None
        mask = dropout_mask(x.shape, p, rng, x)
    if mask.shape != x.shape:
        raise ValueError(f"dropout mask shape {mask.shape} != input shape {x.shape}")
    return x * mask, mask


def dropout_backward(dy, mask):
    """dx = dy * mask (or dy when no mask was used)."""
    return dy if mask is None else dy * mask
