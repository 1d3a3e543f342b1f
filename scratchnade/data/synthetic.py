"""Synthetic binary data with a known answer: samples of a random FVSBN and its exact entropy.

A model trained on samples of p (train size n -> infinity, perfect fit) reaches a test NLL of

    E_p[-log q(x)] = H(p) + KL(p || q)  >=  H(p),    H(p) = -sum_x p(x) log p(x)

so the gap between a model's test NLL and H(p) measures how far it is from the truth.
For D <= 20, H(p) is computed exactly by enumerating all 2^D binary vectors.
"""
import bisect
from dataclasses import dataclass

import numpy as np

from ..backend import asnumpy
from ..exact import MAX_ENUM_D, all_binary_vectors, exact_entropy  # noqa: F401  (re-exported)
from ..models.fvsbn import FVSBN

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
    return asnumpy(model.sample(n, seed=seed)).astype(np.uint8)


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


# ----------------------------------------------------------------------------- token and real-valued sources

@dataclass
class MarkovSource:
    """A token stream from a random order-1 Markov chain, and its exact entropy.

        w_1 ~ pi,   w_t | w_{t-1} ~ P[w_{t-1}]          P (V, V) row-stochastic, pi P = pi

        entropy          h    = -sum_i pi_i sum_j P_ij log P_ij     nats per token (entropy rate)
        initial_entropy  H_0  = -sum_i pi_i log pi_i                a token with no history

    The stream starts in the stationary distribution, so every position has marginal pi.
    """
    ids: np.ndarray           # (n_tokens,) int64 token ids in [0, V)
    entropy: float            # h, nats per token given the previous token
    initial_entropy: float    # H_0 = H(pi), nats for a token scored without history
    transition: np.ndarray    # (V, V) P[i, j] = p(w_t = j | w_{t-1} = i)
    stationary: np.ndarray    # (V,) pi

    @property
    def V(self):
        return self.transition.shape[0]

    def expected_nll(self, n_tokens, n_starts):
        """Mean NLL per token of the true chain when n_starts of n_tokens are scored with no history.

            (n_starts H_0 + (n_tokens - n_starts) h) / n_tokens

        Chunked evaluation in windows of p scores ceil(N / p) tokens without history; a sliding
        window (p >= 2) only the first.  Any model's expected NLL on that layout is >= this.
        """
        n_starts = min(n_starts, n_tokens)
        return (n_starts * self.initial_entropy + (n_tokens - n_starts) * self.entropy) / n_tokens


def _plogp(p):
    """sum p log p over the last axis, with 0 log 0 = 0 (no warning for zero entries)."""
    logp = np.log(p, where=p > 0, out=np.zeros_like(p))
    return (p * logp).sum(axis=-1)


def stationary_distribution(P):
    """pi with pi P = pi, sum pi = 1, for a row-stochastic (V, V) P (least squares, float64)."""
    V = P.shape[0]
    A = np.vstack([P.T - np.eye(V), np.ones((1, V))])             # (pi P - pi = 0; sum pi = 1)
    rhs = np.r_[np.zeros(V), 1.0]
    pi = np.linalg.lstsq(A, rhs, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def markov_source(V=16, n_tokens=100000, seed=0, concentration=0.5):
    """A random order-1 Markov chain over V tokens and one stationary stream of n_tokens from it.

    Each row P[i] ~ Dirichlet(concentration * 1_V): small concentrations give peaked rows
    (a low entropy rate), large ones near-uniform rows (h -> log V).  Everything comes from
    ``numpy.random.default_rng(seed)``.  Returns a :class:`MarkovSource`.
    """
    if V < 2 or n_tokens < 1:
        raise ValueError(f"need V >= 2 and n_tokens >= 1, got V = {V}, n_tokens = {n_tokens}")
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, float(concentration)), size=V)   # (V, V) transition rows
    P /= P.sum(axis=1, keepdims=True)
    pi = stationary_distribution(P)
    h = -float(pi @ _plogp(P))                                    # entropy rate
    H0 = -float(_plogp(pi))                                       # entropy of pi
    cdf = np.cumsum(P, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(n_tokens)
    rows, u = cdf.tolist(), u.tolist()                            # Python lists: fast scalar steps
    w = min(bisect.bisect_right(np.cumsum(pi).tolist(), u[0]), V - 1)   # w_1 ~ pi
    ids = [w]
    for u_t in u[1:]:                                             # inverse-cdf draw, one step at a time
        w = min(bisect.bisect_right(rows[w], u_t), V - 1)         # w_t ~ P[w_{t-1}]
        ids.append(w)
    return MarkovSource(np.array(ids, dtype=np.int64), h, H0, P, pi)


@dataclass
class GaussianARSource:
    """Train / valid / test sequences (N, T) of a stationary AR(1) model and their exact entropy.

        x_1 ~ N(mu, sigma^2 / (1 - rho^2)),   x_t | x_{t-1} ~ N(mu + rho (x_{t-1} - mu), sigma^2)

        entropy = 1/2 log(2 pi e sigma^2 / (1 - rho^2)) + (T - 1) 1/2 log(2 pi e sigma^2)

    in nats per sequence (differential entropy, so it may be negative).
    """
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entropy: float
    rho: float
    mu: float
    sigma: float

    def __getitem__(self, key):
        return getattr(self, key)


def gaussian_ar_entropy(T, rho, sigma):
    """Exact differential entropy (nats) of T steps of a stationary AR(1) with |rho| < 1."""
    h = 0.5 * np.log(2 * np.pi * np.e * sigma ** 2)               # each conditional
    return float(h - 0.5 * np.log(1.0 - rho ** 2) + (T - 1) * h)  # first step has variance / (1 - rho^2)


def gaussian_ar_source(T=50, n_train=2000, n_valid=500, n_test=500, rho=0.8, mu=0.5, sigma=0.5, seed=0):
    """Samples of the AR(1) above as float64 (N, T) splits from independent streams, plus the entropy."""
    from ..models.gaussian_ar import LinearGaussianAR   # lazy: keeps this module's imports as they were
    truth = LinearGaussianAR(1, rho=[rho], mu=mu, sigma=sigma, dtype=np.float64, device="cpu")
    seeds = np.random.SeedSequence(seed).spawn(3)
    splits = [np.asarray(asnumpy(truth.sample(n, T, seed=np.random.default_rng(s))))
              for n, s in zip((n_train, n_valid, n_test), seeds)]
    return GaussianARSource(*splits, entropy=gaussian_ar_entropy(T, rho, sigma), rho=rho, mu=mu, sigma=sigma)
