"""Synthetic binary data with a known answer: samples of a random FVSBN and its exact entropy.

A model trained on samples of p (train size n -> infinity, perfect fit) reaches a test NLL of

    E_p[-log q(x)] = H(p) + KL(p || q)  >=  H(p),    H(p) = -sum_x p(x) log p(x)

so the gap between a model's test NLL and H(p) measures how far it is from the truth.
For D <= 20, H(p) is computed exactly by enumerating all 2^D binary vectors.
"""
from dataclasses import dataclass

import numpy as np

from ..backend import asnumpy
from ..models.fvsbn import FVSBN

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


def random_fvsbn(D, seed=0, scale=1.0, dtype=np.float64, device=None):
    """A ground-truth FVSBN (matrix form) with b ~ N(0, scale^2), W_{t,s} ~ N(0, scale^2) for s < t.

    Larger `scale` gives sharper conditionals (lower entropy, stronger dependencies).
    """
    model = FVSBN(D, form="matrix", seed=seed, dtype=dtype, device=device)
    rng = np.random.default_rng(seed)
    b = scale * rng.standard_normal(D)                             # bias
    W = np.tril(scale * rng.standard_normal((D, D)), -1)           # strictly lower weights
    model.load_state_dict({"b": b, "W": W})
    model.config["init_scale"] = None                              # weights are not an init
    model.config["truth_scale"] = scale
    return model


def sample_dataset(model, n, seed=0):
    """n ancestral samples of `model` as a host uint8 array (n, D), like binarized MNIST."""
    return asnumpy(model.sample(n, rng=seed)).astype(np.uint8)


@dataclass
class SyntheticSource:
    """Train / valid / test samples of a known model and its exact entropy (nats per example)."""
    train: np.ndarray       # (n_train, D) uint8
    valid: np.ndarray       # (n_valid, D) uint8
    test: np.ndarray        # (n_test, D) uint8
    entropy: float          # H(p), the best achievable expected NLL
    model: FVSBN            # the ground truth

    @property
    def D(self):
        return self.train.shape[1]

    def __getitem__(self, key):   # source["train"] works too, like an .npz
        return getattr(self, key)


def fvsbn_source(D=10, n_train=10000, n_valid=2000, n_test=2000, seed=0, scale=1.0):
    """Samples of random_fvsbn(D, seed, scale) split into train/valid/test, plus its entropy.

    The three splits use independent streams (seeds derived from `seed`), so changing
    n_train does not change the test set.
    """
    truth = random_fvsbn(D, seed=seed, scale=scale)
    seeds = np.random.SeedSequence(seed).spawn(3)
    splits = [sample_dataset(truth, n, np.random.default_rng(s))
              for n, s in zip((n_train, n_valid, n_test), seeds)]
    return SyntheticSource(*splits, entropy=truth.exact_entropy(), model=truth)
