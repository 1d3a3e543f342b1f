"""Exact enumeration of {0, 1}^D: every binary vector, and the exact entropy of a model.

For D <= 20 the whole space fits in memory in chunks, so sums over it are exact:

    H(p) = -sum_{x in {0,1}^D} p(x) log p(x),        sum_x p(x) = 1  (normalisation)

Models (FVSBN.exact_entropy) and the synthetic data sources both use it, so it sits below
both layers: it imports only NumPy and the backend shim.
"""
import numpy as np

from .backend import asnumpy

MAX_ENUM_D = 20          # 2^20 ~ 1e6 vectors: enumeration is still a few seconds
_CHUNK = 1 << 16         # vectors per log_prob call when enumerating


def all_binary_vectors(D, start=0, stop=None):
    """Every x in {0, 1}^D in counting order, x_1 the most significant bit.

    Row i is the binary expansion of i: all_binary_vectors(2) = [[0,0],[0,1],[1,0],[1,1]].
    `start`, `stop` select rows start..stop-1 (for chunked enumeration).

    Shapes: -> (stop - start, D) uint8 host array (stop defaults to 2^D).
    """
    if D < 0 or D > 62:
        raise ValueError(f"all_binary_vectors: D must be in [0, 62], got {D}")
    stop = (1 << D) if stop is None else stop
    i = np.arange(start, stop, dtype=np.int64)[:, None]          # row index
    shift = np.arange(D - 1, -1, -1, dtype=np.int64)             # bit of x_1 is the highest
    return ((i >> shift) & 1).astype(np.uint8)


def exact_entropy(log_prob, D, chunk=_CHUNK):
    """H(p) = -sum_x p(x) log p(x) in nats, enumerating {0, 1}^D in chunks.

    log_prob: host (N, D) uint8 -> (N,) natural-log probabilities (any array; read on the
    host in float64).  Raises ValueError for D > 20 (2^D terms) and when the probabilities
    do not sum to 1 (to 1e-6), which would make the number meaningless.
    """
    if D > MAX_ENUM_D:
        raise ValueError(f"exact entropy enumerates all 2^D vectors; D = {D} > {MAX_ENUM_D} "
                         f"is too many (2^{D} = {2 ** D:,})")
    H, total = 0.0, 0.0
    for start in range(0, 1 << D, chunk):
        x = all_binary_vectors(D, start, min(start + chunk, 1 << D))
        logp = np.asarray(asnumpy(log_prob(x)), dtype=np.float64)   # (N,) log p(x)
        p = np.exp(logp)                                            # p(x)
        H -= float(np.sum(p * logp))                                # -sum p log p
        total += float(np.sum(p))
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"probabilities sum to {total!r}, not 1: log_prob is not normalised")
    return H
