"""Big gradients kept by what they are made of, for the optimizers of scratchnade.optim.

    RowGrad(rows, values, shape)    G2 = G.reshape(-1, k):  G2[rows[i]] = values[i], other rows 0
    ColumnGrad(cols, values, shape) G (k, C):  G[:, cols[i]] = values[i], other columns 0
    OuterGrad(A, Bh, shape)         G[s] = scale * A[s]^T Bh[s] for s < T,  G[s] = 0 for s >= T

A one-hot input's weights (the order-p NADE's V, p x d x H) get a gradient only in the rows of the
batch's tokens: at most T B rows of p d; stored the lecture's way round, as the recurrent NADE's
W_x (H x d), only in the columns of the batch's tokens.  An output layer's weights (its W_s, d x H) get
dG_s^T h_s, a product of rank B.  Written out, each is a p d H array (272 MB in float32 for
WikiText-2's d = 33,278, H = 256, p = 8) that the backward pass zeroes or writes and the optimizer
reads back: for the NaN check or the norm, for clipping, then for the update.  Kept compact, the
norm is a small computation (:meth:`RowGrad.sum_squares`, :meth:`OuterGrad.sum_squares`), clipping
scales a few numbers, and the optimizer writes out only one cache-sized block at a time while it
updates that block (``rows_into``), or touches only the rows that have a gradient (lazy Adam).
On a GPU the optimizer writes them out whole (``toarray``) and takes its ordinary step.

A model hands these out only when asked (``model.compact_grads = True``, which the training loop
sets for the optimizers of scratchnade.optim, whose ``takes_compact_grads`` is True); they refer to
the model's buffers and are valid until its next ``loss_and_grads`` call.  ``toarray()`` gives the
dense gradient, with the same bits as the model's dense backward pass.
"""
import numpy as np

from .backend import get_xp, sum_rows_by_id
from .parallel import zero_


class _HeldValues:
    """What RowGrad and ColumnGrad share: the gradient is `values` (n, k) placed somewhere in a
    zero array, so its scale, norm and check are those of the values."""

    def __init__(self, values, shape):
        self.values, self.shape = values, tuple(shape)
        self.dtype = values.dtype

    def __imul__(self, factor):
        """Scale in place (clipping): the dense array's zeros stay zero."""
        self.values *= factor
        return self

    def sum_squares(self):
        """sum(G^2) as a Python float: that of the held values (inf when it overflows)."""
        flat = self.values.ravel()
        with np.errstate(over="ignore", invalid="ignore"):
            return float(flat @ flat)

    def finite(self):
        """True when no entry is NaN or inf."""
        return all_finite(self.values)


class RowGrad(_HeldValues):
    """A gradient that is zero except in some rows of its (R, k) view (k: the last axis).

    rows (n,) distinct row indices, ascending; values (n, k); shape: the dense shape (..., k).
    """

    def __init__(self, rows, values, shape):
        super().__init__(values, shape)
        self.rows = rows

    def rows_into(self, start, stop, out):
        """Rows start..stop of the (R, k) view of G, written into out (stop - start, k) (host);
        None, with out untouched, when none of them is held (they are all zero)."""
        a, b = np.searchsorted(self.rows, [start, stop])
        if a == b:
            return None
        out[...] = 0
        out[self.rows[a:b] - start] = self.values[a:b]
        return out

    def toarray(self, out=None):
        """The dense gradient (shape), written into `out` when given."""
        xp = get_xp(self.values)
        out = xp.zeros(self.shape, dtype=self.dtype) if out is None else zero_(out)
        out.reshape(-1, self.shape[-1])[self.rows] = self.values
        return out


class ColumnGrad(_HeldValues):
    """A gradient G (k, C) that is zero except in some columns: G[:, cols[i]] = values[i].

    cols (n,) distinct column indices, ascending; values (n, k); shape (k, C).  The one-hot input
    weights W_x (H, d) of the recurrent NADE: d W_x = sum_t da_t x_t^T lives in the columns of the
    window's tokens.  Written out whole it is a (H, d) array zeroed, then scatter-added into with
    a stride of d, then read back by the optimizer; here each block of rows is made in cache.
    """

    def __init__(self, cols, values, shape):
        super().__init__(values, shape)
        self.cols = cols

    def rows_into(self, start, stop, out):
        """Rows start..stop of G, written into out (stop - start, C) (host); None, with out
        untouched, when no column is held (G = 0)."""
        if self.cols.size == 0:
            return None
        out[...] = 0
        out[:, self.cols] = self.values[:, start:stop].T
        return out

    def toarray(self, out=None):
        """The dense gradient (shape), written into `out` when given."""
        xp = get_xp(self.values)
        out = xp.zeros(self.shape, dtype=self.dtype) if out is None else zero_(out)
        out[:, self.cols] = self.values.T
        return out


class OuterGrad:
    """A gradient G (P, d, k) whose first T blocks are products: G[s] = scale * A[s]^T Bh[s].

    A (T, n, d), Bh (T, n, k) with T <= P; G[s] = 0 for s >= T.  scale: None, or the factor
    clipping multiplied G by, applied after each product as ``G *= scale`` on the written-out
    array would be.
    """

    def __init__(self, A, Bh, shape):
        self.A, self.Bh, self.shape, self.scale = A, Bh, tuple(shape), None
        self.dtype = A.dtype

    def __imul__(self, factor):
        """Scale in place (clipping): remembered, applied when blocks are written out."""
        self.scale = factor if self.scale is None else self.scale * factor
        return self

    def sum_squares(self):
        """sum(G^2) as a Python float, without writing G out (the Gram trick):

            ||A_s^T Bh_s||_F^2 = sum_ij (A_s A_s^T)_ij (Bh_s Bh_s^T)_ij      (n x n matrices)

        n^2 (d + k) multiply-adds per position instead of d k n; the rounding differs from the
        sum over the written-out array in the last bits.
        """
        xp = get_xp(self.A)
        with np.errstate(over="ignore", invalid="ignore"):       # NumPy only; inf is handled by the caller
            ga = xp.matmul(self.A, self.A.transpose(0, 2, 1))      # (T, n, n)
            gb = xp.matmul(self.Bh, self.Bh.transpose(0, 2, 1))
            total = float((ga * gb).sum())
        return total if self.scale is None else total * self.scale * self.scale

    def finite(self):
        """True when the factors hold no NaN or inf (then neither does G, short of overflow)."""
        return all_finite(self.A) and all_finite(self.Bh)

    def rows_into(self, start, stop, out):
        """Rows start..stop of the (P d, k) view of G, written into out (stop - start, k) (host);
        None, with out untouched, when they all lie in positions s >= T (all zero)."""
        T, _, d = self.A.shape
        if start >= T * d:
            return None
        i = start
        while i < stop:
            s, r = divmod(i, d)
            j = min(stop, (s + 1) * d)
            piece = out[i - start:j - start]
            if s < T:
                np.matmul(self.A[s, :, r:r + j - i].T, self.Bh[s], out=piece)
                if self.scale is not None:
                    piece *= self.scale
            else:
                piece[...] = 0
            i = j
        return out

    def toarray(self, out=None):
        """The dense gradient (shape), written into `out` when given: one batched matmul."""
        xp = get_xp(self.A)
        out = xp.empty(self.shape, dtype=self.dtype) if out is None else out
        T = self.A.shape[0]
        xp.matmul(self.A.transpose(0, 2, 1), self.Bh, out=out[:T])
        out[T:] = 0
        if self.scale is not None:
            out *= self.scale
        return out


def row_grad(ids, values, shape):
    """The RowGrad of a one-hot input's weights: rows ids (N,) of the (R, k) view get values
    (N, k) added, repeated ids summed as the dense backward pass sums them
    (:func:`scratchnade.backend.sum_rows_by_id`), so ``toarray()`` has its bits."""
    return RowGrad(*sum_rows_by_id(ids, values), shape)


def column_grad(ids, values, shape):
    """The ColumnGrad of one-hot input weights (k, C): columns ids (N,) get values (N, k) added,
    repeated ids summed as the dense backward pass sums them (:func:`scratchnade.backend.sum_rows_by_id`),
    so ``toarray()`` has its bits."""
    return ColumnGrad(*sum_rows_by_id(ids, values), shape)


def all_finite(a):
    """True when array a holds no NaN or inf.  A finite sum of squares (one dot product, no
    temporary) settles it; only when that overflows are the entries looked at one by one."""
    flat = a.ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(float(flat @ flat)):
            return True
    return bool(get_xp(a).isfinite(a).all())


def is_compact(g):
    """True for a RowGrad, a ColumnGrad or an OuterGrad."""
    return isinstance(g, (RowGrad, ColumnGrad, OuterGrad))
