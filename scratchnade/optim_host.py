"""The optimizers' fast kernels: the rules of :mod:`scratchnade.optim`, rewritten for speed on the host.

scratchnade.optim holds the rules as the papers write them and the classes; this module holds what
the classes run by default (``Optimizer.host_kernels = True``).  Each trick is explained in the
function that does it:

- :func:`sgd_update`, :func:`nesterov_update`, :func:`adam_update`: the rules written in place with
  ``out=`` into one scratch array, so a step allocates nothing parameter-sized; Adam folds its bias
  corrections into two scalars (:func:`_adam_step`).  These also run on a GPU, on whole arrays.
- :func:`update_blocked`: on the host, the rule runs over cache-sized blocks (:data:`BLOCK_BYTES`);
  a block whose gradient is exactly zero (:func:`_all_zero`) takes the rule's g = 0 form
  (:func:`nesterov_update_zero_grad`, :func:`adam_update_zero_grad`); decaying moments are flushed
  before they turn subnormal (:func:`flush_subnormals_`, :func:`flush_threshold`).

What the tests prove (tests/test_optim.py): the blocked, zero-gradient and flushed host path gives
the same bits as these rules run once on whole arrays.  Against the textbook rules of
scratchnade.optim, SGD and Nesterov give the same bits too (the same operations in the same order);
Adam's folded bias corrections round differently, so Adam agrees with the textbook to a few ulps
per step (float64: relative 1e-14 after 50 steps; float32: 1e-6), not bit for bit.  Its moments
m and v are computed as in the textbook and do agree bit for bit.
"""
import numpy as np

import threading
from contextlib import nullcontext

from .backend import get_xp
from .compact import is_compact
from .parallel import blas_one_thread, for_each_block, threads

BLOCK_BYTES = 1 << 20    # host updates run over 1 MB blocks of each array (see update_blocked: why blocks)


# ----------------------------------------------------------------------------- the rules, in place

def sgd_update(w, dw, lr, tmp=None):
    """``w <- w - lr * dw`` with lr * dw written into the scratch `tmp` (no temporary).

    The same bits as :func:`scratchnade.optim.sgd_update`.
    Shapes: w, dw, tmp (...) -- tmp is optional scratch space (else one temporary).
    """
    xp = get_xp(w, dw)
    step = xp.multiply(dw, lr, out=tmp)          # lr * dw
    w -= step
    return w


def nesterov_update(w, dw, v, lr, momentum, tmp=None):
    """``v <- mu v + dw;  w <- w - lr (dw + mu v)`` in place, through the scratch `tmp`.

    The same bits as :func:`scratchnade.optim.nesterov_update`: each operation is the textbook's,
    in the textbook's order (x + y and x * y are commutative in floating point, so mu v + dw
    computed as ``v *= mu; v += dw`` rounds exactly as the expression does).
    Shapes: w, dw, v, tmp (...) -- v is updated in place; tmp is optional scratch.
    """
    xp = get_xp(w, dw, v)
    v *= momentum
    v += dw                                      # v = mu v + g
    step = xp.multiply(v, momentum, out=tmp)     # mu v
    step += dw                                   # g + mu v: look-ahead gradient
    step *= lr
    w -= step
    return w


def nesterov_update_zero_grad(w, v, lr, momentum, tmp=None):
    """:func:`nesterov_update` with dw = 0 written out (the same values, two passes over g fewer):

        v <- mu v;   w <- w - lr mu v

    Used by :func:`update_blocked` for a block whose gradient is all zero.
    """
    xp = get_xp(w, v)
    v *= momentum
    step = xp.multiply(v, momentum, out=tmp)     # mu v
    step *= lr
    w -= step
    return w


def adam_update(w, dw, m, v, t, lr, beta1, beta2, eps, tmp=None):
    """Adam at step t = 1, 2, ... in place, through the scratch `tmp`, bias corrections folded.

    The moments m, v are computed as :func:`scratchnade.optim.adam_update` computes them (the same
    bits); the step on w is :func:`_adam_step`, a few ulps from the textbook's.
    Shapes: w, dw, m, v, tmp (...) -- m and v are updated in place; tmp is optional scratch.
    """
    xp = get_xp(w, dw, m, v)
    m *= beta1
    tmp = xp.multiply(dw, 1.0 - beta1, out=tmp)
    m += tmp                                     # m = b1 m + (1 - b1) g
    v *= beta2
    xp.square(dw, out=tmp)
    tmp *= 1.0 - beta2
    v += tmp                                     # v = b2 v + (1 - b2) g^2
    return _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp)


def adam_update_zero_grad(w, m, v, t, lr, beta1, beta2, eps, tmp=None):
    """:func:`adam_update` with dw = 0 written out (the same values, five passes fewer):

        m <- beta1 * m;   v <- beta2 * v;   then the same step.

    A one-hot input's weights (an embedding, NADE's V) get a gradient only in the rows of
    the tokens in the batch: most of their blocks are exactly zero on most steps.
    """
    m *= beta1
    v *= beta2
    return _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp)


def _adam_step(w, m, v, t, lr, beta1, beta2, eps, tmp):
    """w <- w - lr m_hat / (sqrt(v_hat) + eps), with the bias corrections folded into scalars.

    With c1 = 1 - beta1^t and c2 = 1 - beta2^t, m_hat = m / c1 and v_hat = v / c2, so

        m_hat / (sqrt(v_hat) + eps) = (sqrt(c2) / c1) * m / (sqrt(v) + eps sqrt(c2))

    which saves the two array passes m / c1 and v / c2 (scalars instead).  The price: other
    roundings than the textbook's, a few ulps per step (never bit for bit the same).
    """
    xp = get_xp(w, m, v)
    c1 = 1.0 - beta1 ** t                        # bias correction of m
    s2 = (1.0 - beta2 ** t) ** 0.5               # sqrt of the bias correction of v
    tmp = xp.sqrt(v, out=tmp)
    tmp += eps * s2                              # (sqrt(v_hat) + eps) * s2
    xp.divide(m, tmp, out=tmp)
    tmp *= lr * s2 / c1                          # lr * m_hat / (sqrt(v_hat) + eps)
    w -= tmp
    return w


# ----------------------------------------------------------------------------- blocks, zero blocks, flush

def update_blocked(update, update_zero_grad, w, g, state, tmp, flush=None, row=None, scale=None):
    """Run one parameter's rule on the host: block by block, zero blocks in their g = 0 form.

    update(w, g, state, tmp) and update_zero_grad(w, state, tmp) are the rule (state: {name:
    array}); flush: {state name: threshold} to flush after this step (see :func:`flush_subnormals_`).
    scale: gradient clipping's factor (None: none); g is multiplied by it in place, each block
    just before its update, as if ``g *= scale`` had run first.
    g may be compact (:mod:`scratchnade.compact`; an output layer's dW_s = dG_s^T h_s, or a one-hot
    input's rows): each block of its rows is then written into a per-thread scratch block just
    before its update, by a small matmul for an OuterGrad (see "Why products" below).
    row: lazy rows (``Adam(lazy=True)``), the length k of w's rows (its last axis): a row of g that
    is all +0.0 leaves w and the state untouched (see :func:`update_rows`); blocks are then whole
    rows.  w, g, tmp and the state must be C-contiguous for it.

    Why blocks.  An update rule is a dozen elementwise passes.  Over a (p, V, H) = 68M-float NADE
    weight each pass streams ~272 MB through memory; run block by block (:data:`BLOCK_BYTES` of
    each array, see :func:`_blocks`) all the passes over one block stay in the caches (L2/L3)
    instead of streaming from memory.  Each entry still sees the same operations, so the
    result is bit for bit the rule's on whole arrays.
    Block size: each block costs ~40 us of Python around its dozen ufunc calls, so small blocks
    lose what the cache gains (Adam over 68M float32 at 2 threads: 32 KB blocks 472 ms, 256 KB
    127-184 ms, 1 MB 113-128 ms, 16 MB 166 ms); with 1 MB instead of 256 KB the order-p NADE's
    step is 15-20% faster (benchmarks/revision_speed.py, two runs).

    Why zero blocks.  A one-hot input's weights (an embedding, NADE's V) get a gradient only in
    the rows of the batch's tokens, so a block holding none of them is exactly zero (with 1 MB
    blocks of 256-float rows, that takes a large vocabulary or a small batch).  Such a block
    (:func:`_all_zero`) takes ``update_zero_grad``, which skips the passes over g.

    The flush runs per block too, while the block is in cache, and so does clipping's ``g *= scale``
    (a separate pass reads and writes all of g once more: 24 ms a step on the order-p NADE's 544 MB
    of gradients).  A block whose g is all zero stays zero when scaled, so it is not written.

    Why products.  Written out, the order-p NADE's dW is 272 MB that the backward pass writes and
    the update reads back.  Made block by block inside the update, each block of dW goes from
    the matmul to the rule through the cache.  The matmuls then run on the pool's threads, BLAS
    on one thread in each (:func:`scratchnade.parallel.blas_one_thread`).

    Why threads.  The blocks are independent, so they run on every core
    (:func:`scratchnade.parallel.for_each_block`), with the same bits for any thread count.
    """
    flush = flush or {}

    def rule(w, g, state, tmp):                                 # the update (g None: g = 0), then the flush
        update(w, g, state, tmp) if g is not None else update_zero_grad(w, state, tmp)
        for k, threshold in flush.items():                      # while the block is in cache
            flush_subnormals_(state[k], threshold, tmp)

    def rows_rule(w, g, state, tmp, moved):                     # lazy: the rows where moved
        update_rows(lambda *a: rule(*a, tmp), lambda *a: rule(*a, tmp.reshape(-1, row)[:len(a[0])]),
                    w, g, state, moved, row)

    compact = is_compact(g)
    k_row = w.shape[-1] if compact else None                    # compact: g's row length
    if compact:                                                 # blocks of whole rows of g
        blocks = _blocks(w, tmp, *state.values(), row=k_row)
        if blocks is None:                                      # small or strided: write it out
            g = g.toarray()
            compact = False
    else:
        blocks = _blocks(w, g, tmp, *state.values(), row=row)
    if blocks is None and row:                                  # a small array: one block of rows
        if not all(a.flags.c_contiguous for a in (w, g, tmp, *state.values())):
            raise ValueError("lazy rows need C-contiguous w, g, scratch and state arrays")
        blocks = [slice(0, w.size)]
    if blocks is None:                                          # small or strided arrays
        if scale is not None:
            g *= scale
        rule(w, g, state, tmp)
        return
    w, tmp = w.reshape(-1), tmp.reshape(-1)                     # views: all C-contiguous
    g = g if compact else g.reshape(-1)
    state = {k: a.reshape(-1) for k, a in state.items()}
    few = []                                                    # lazy: row indices in the sparse blocks
    scratch = threading.local()                                 # compact: each thread's block of g

    def grad_block(b):                                          # g's block b (written out, for compact;
        if not compact:                                         # None: a compact g says it is zero)
            return g[b]
        size = b.stop - b.start
        buf = getattr(scratch, "buf", None)
        if buf is None or buf.size < size:
            buf = scratch.buf = np.empty(size, dtype=w.dtype)
        gb = g.rows_into(b.start // k_row, b.stop // k_row, buf[:size].reshape(-1, k_row))
        return None if gb is None else gb.reshape(-1)

    def update_block(b):
        block_state = {k: a[b] for k, a in state.items()}
        gb = grad_block(b)
        zero = gb is None or _all_zero(gb)                      # a one-hot input's untouched rows
        if scale is not None and not zero:
            gb *= scale                                         # clipping, while the block is in cache
        if row:                                                 # lazy: the rows with a gradient only
            if zero:
                return
            moved = rows_with_gradient(gb.reshape(-1, row))
            n = int(np.count_nonzero(moved))
            if n < moved.size:                                  # some rows stay as they are
                if 2 * n > moved.size or compact:               # here: dense and put back
                    rows_rule(w[b], gb, block_state, tmp[b], moved)
                else:                                           # a few: all blocks' together, below
                    few.append(b.start // row + np.flatnonzero(moved))
                return
            zero = False
        rule(w[b], None if zero else gb, block_state, tmp[b])
    with blas_one_thread() if compact and threads() > 1 else nullcontext():   # an OuterGrad's matmuls
        for_each_block(update_block, blocks)                    # the blocks on every core
    if few:                                                     # one gather of the sparse blocks' rows
        moved = np.zeros(w.size // row, dtype=bool)
        moved[np.concatenate(few)] = True
        rows_rule(w, g, state, tmp, moved)


def update_rows(dense, sparse, w, g, state, moved, row):
    """The lazy rule: only the rows of w (R, row) where `moved` (R,) is True; the others keep w
    and the state bit for bit.  No row moved: nothing to do.  Any device, any tier.

    dense(w, g, state) runs the rule on the whole arrays, sparse(w_r, g_r, sub) on gathered
    (r, row) copies; both in place.  Each moved row sees exactly the operations of the dense
    rule, so it gets the dense rule's bits (the rule is elementwise).  Few moved rows (a one-hot
    input's weights) are gathered into small arrays, updated and written back; more than half of
    them (cheaper than gathering) take the dense rule, and the idle rows get their saved w and
    state back (a softmax output layer has no idle rows: there lazy IS the dense step).
    """
    xp = get_xp(w)
    rows = xp.flatnonzero(moved)
    if rows.size == 0:
        return
    w2, g2 = w.reshape(-1, row), g.reshape(-1, row)
    state2 = {k: a.reshape(-1, row) for k, a in state.items()}
    if 2 * rows.size > moved.size:                              # most rows: dense, then put back
        idle = xp.flatnonzero(~moved)
        kept, w_idle = {k: a[idle] for k, a in state2.items()}, w2[idle]
        dense(w, g, state)
        w2[idle] = w_idle
        for k, a in state2.items():
            a[idle] = kept[k]
        return
    update_gathered(sparse, w, state, rows, g2[rows], row)


def update_gathered(sparse, w, state, rows, g_r, row):
    """sparse(w_r, g_r, sub) on copies of the rows `rows` (r,) of w and the state (seen as rows of
    length `row`), written back after.  g_r (r, row): those rows' gradient.  Any device."""
    w2 = w.reshape(-1, row)
    state2 = {k: a.reshape(-1, row) for k, a in state.items()}
    sub = {k: a[rows] for k, a in state2.items()}               # (r, row) gathered copies
    w_r = w2[rows]
    sparse(w_r, g_r, sub)
    w2[rows] = w_r                                              # scatter back: w and the state
    for k, a in state2.items():
        a[rows] = sub[k]


def _blocks(*arrays, row=None):
    """Slices of the flat arrays (all of one size) that an update rule runs over in turn.

    Cache-sized blocks of BLOCK_BYTES on the host, for arrays larger than one block that are
    all C-contiguous (so their flat views write through); with `row`, whole rows of that length
    (at least one).  None otherwise: a small or strided array, or a GPU, where a block would
    only add kernel launches; the rule then runs once.
    """
    a = arrays[0]
    step = max(1, BLOCK_BYTES // a.itemsize)
    if row:
        step = max(row, step // row * row)
    if get_xp(*arrays) is not np or a.size <= step or not all(x.flags.c_contiguous for x in arrays):
        return None
    return [slice(i, min(i + step, a.size)) for i in range(0, a.size, step)]


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}      # float itemsize -> same-size unsigned int


def _all_zero(g):
    """True when every entry of the host block g is +0.0: its bits, read as unsigned
    integers, have maximum 0 (one cheap pass; -0.0 counts as nonzero, which is safe)."""
    return not g.view(_UINT[g.itemsize]).max()


def rows_with_gradient(g2):
    """(R,) bool: True for the rows of g2 (R, k) with any entry other than +0.0.

    On the host one pass over the bits as unsigned integers (no (R, k) temporary, as in
    :func:`_all_zero`; -0.0 counts as a gradient, which only means one more row is updated by
    the ordinary rule); elsewhere ``(g2 != 0).any(axis=1)``.
    """
    if get_xp(g2) is np:
        return g2.view(_UINT[g2.itemsize]).max(axis=1) != 0
    return (g2 != 0).any(axis=1)


def flush_subnormals_(a, threshold, tmp=None):
    """a[|a| < threshold] = 0, in place (a host array; tmp: optional scratch shaped like a).

    Why: a moment whose gradient stays 0 (a rare token's embedding row) decays geometrically,
    m <- 0.9 m, and after ~750 steps enters the subnormal range (|m| < 1.2e-38 in float32),
    where x86 CPUs take ~50x longer per operation: without the flush, Adam on a 33,278 x 256
    input weight with Zipf-drawn rows runs 2.1x slower by step 1,500, when 19% of m is
    subnormal (benchmarks/optim_speed.py).  GPUs run subnormals at full speed.  The optimizers
    flush every ``Optimizer.flush_every`` steps with :func:`flush_threshold`; what is flushed is
    far below anything that moves w (the test checks w ends with the same bits).
    """
    tmp = np.abs(a, out=tmp)
    a[tmp < threshold] = 0
    return a


def flush_threshold(dtype, decay, every):
    """The |a| below which a state decaying by `decay` per step is flushed, every `every` steps:
    tiny / decay^every, so that nothing above it turns subnormal before the next flush.
    At most 2^20 tiny (~1e-32 in float32): a faster decay crosses the subnormals in a step or two."""
    return float(np.finfo(dtype).tiny) / max(decay ** every, 2.0 ** -20)
