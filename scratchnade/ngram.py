"""A smoothed n-gram model of token ids: a fixed reference that scores generated text.

Interpolated additive smoothing (a Dirichlet prior centred on the next lower order), so
every order is a normalised distribution over the V tokens:

    p_0(w | h)   = 1 / V                                              uniform
    p_m(w | h)   = (c(h_m w) + alpha p_{m-1}(w | h)) / (c(h_m) + alpha)    m = 1 .. n

h_m is the last m - 1 tokens of the history h, c(h_m w) the count of the m-gram in the
training ids, c(h_m) = sum_w c(h_m w) (so the m = 1 level is (c(w) + alpha / V) / (N + alpha)).
Summing over w gives (c(h_m) + alpha) / (c(h_m) + alpha) = 1 at every level.  A position
with fewer than n - 1 earlier tokens in its sequence uses the order its history allows.

Counts are stored sparsely: each m-gram is one int64 key sum_j w_j V^(m-1-j), the keys
sorted, and a lookup is a binary search.  So a word-level trigram over V = 33,278 costs
memory in the number of distinct trigrams, never V^3.  The model is a host-side object
(counts are data, not parameters): inputs on any device are copied to the host.
"""
import numpy as np

from .backend import asnumpy


def gram_keys(x, m, V):
    """Keys of the m-grams ending at each position t >= m-1 of every column of x.

    Shapes: x (T, B) int ids -> (T - m + 1, B) int64, key = sum_j x_{t-m+1+j} V^(m-1-j).
    """
    T = x.shape[0]
    key = np.zeros((T - m + 1,) + x.shape[1:], dtype=np.int64)
    for j in range(m):
        key = key * V + x[j:T - m + 1 + j]                        # Horner: oldest token first
    return key


class SortedCounts:
    """Counts of int64 keys, sorted for binary-search lookup."""

    def __init__(self, keys, counts):
        self.keys, self.counts = keys, counts                     # (K,) sorted unique, (K,)

    @classmethod
    def of(cls, keys):
        """The counts of every distinct value in `keys` (any shape)."""
        return cls(*np.unique(np.ravel(keys), return_counts=True))

    def lookup(self, q):
        """Count of each key in `q` (0 when unseen).  Shapes: q (...) -> (...) int64."""
        if self.keys.size == 0:
            return np.zeros(np.shape(q), dtype=np.int64)
        i = np.minimum(np.searchsorted(self.keys, q), self.keys.size - 1)
        return np.where(self.keys[i] == q, self.counts[i], 0)

    @property
    def total(self):
        return int(self.counts.sum())


class NGramModel:
    """Interpolated additive-smoothing n-gram model (see the module docstring).

    order : n (1 unigram, 2 bigram, 3 trigram, ...), with V^n < 2^63 for the keys.
    alpha : strength of the pull towards the lower order (> 0); :meth:`fit` can pick it
            on validation ids from a grid.
    """

    def __init__(self, order=3, alpha=1.0):
        if int(order) != order or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.order, self.alpha = int(order), float(alpha)
        self.V = None
        self.grams = self.contexts = None      # per level m = 1..n: SortedCounts of m-grams, of contexts

    def fit(self, ids, V, valid=None, alphas=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)):
        """Count the 1..n-grams of the 1-D training `ids` (values in [0, V)); returns self.

        valid: optional 1-D ids; then alpha is the value of `alphas` with the lowest NLL on them.
        """
        ids = np.asarray(asnumpy(ids)).reshape(-1).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"ids must lie in [0, {V})")
        if ids.size < self.order:
            raise ValueError(f"need at least order = {self.order} training ids, got {ids.size}")
        if V ** self.order >= 2 ** 63:
            raise ValueError(f"V^order = {V}^{self.order} does not fit int64 keys; use a lower order")
        self.V = int(V)
        self.grams, self.contexts = [], []
        for m in range(1, self.order + 1):
            g = SortedCounts.of(gram_keys(ids[:, None], m, V))
            ctx, first = np.unique(g.keys // V, return_index=True)   # keys sorted: contexts in runs
            self.grams.append(g)
            self.contexts.append(SortedCounts(ctx, np.add.reduceat(g.counts, first)))   # c(h) = sum_w c(h w)
        if valid is not None:
            v = np.asarray(asnumpy(valid)).reshape(-1, 1)
            nll = {a: self._with_alpha(a).nll(v) for a in alphas}
            self.alpha = min(nll, key=nll.get)
        return self

    def _with_alpha(self, alpha):
        other = NGramModel(self.order, alpha)
        other.V, other.grams, other.contexts = self.V, self.grams, self.contexts
        return other

    def log_prob(self, x):
        """log p(x_t | the previous n-1 tokens of its column) in nats.

        Shapes: x (T, B) time-major ids (or (T,)) -> (T, B) (or (T,)).  Row t uses the
        min(t, n-1) tokens above it in its column.
        """
        if self.V is None:
            raise ValueError("fit the n-gram model before scoring with it")
        x = np.asarray(asnumpy(x)).astype(np.int64)
        one = x.ndim == 1
        x = x[:, None] if one else x
        if x.size and (x.min() < 0 or x.max() >= self.V):
            raise ValueError(f"token ids must lie in [0, {self.V})")
        p = np.full(x.shape, 1.0 / self.V)                        # p_0 = 1/V
        for m in range(1, min(self.order, x.shape[0]) + 1):
            key = gram_keys(x, m, self.V)                         # (T-m+1, B) m-grams ending at t
            c_hw = self.grams[m - 1].lookup(key)                  # c(h_m w)
            c_h = self.contexts[m - 1].lookup(key // self.V)      # c(h_m)
            p[m - 1:] = (c_hw + self.alpha * p[m - 1:]) / (c_h + self.alpha)   # p_m from p_{m-1}
        lp = np.log(p)
        return lp[:, 0] if one else lp

    def nll(self, x):
        """Mean NLL per token (nats) of x (T, B) or a 1-D stream."""
        return -float(self.log_prob(x).mean())

    def next_token_probs(self, history):
        """p(w | history) for every w, shape (V,): a 1-D history of ids (may be empty)."""
        h = np.asarray(asnumpy(history), dtype=np.int64).reshape(-1)
        h = h[max(0, len(h) - (self.order - 1)):] if self.order > 1 else h[:0]   # the n-1 that count
        x = np.concatenate([np.repeat(h[:, None], self.V, axis=1), np.arange(self.V)[None]])
        return np.exp(self.log_prob(x)[-1])

    def __repr__(self):
        fitted = f", V={self.V}" if self.V is not None else ", unfitted"
        return f"NGramModel(order={self.order}, alpha={self.alpha:g}{fitted})"
