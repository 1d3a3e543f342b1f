"""Linear Gaussian autoregressive model: the lecture's first example, generalised to AR(p).

The lecture (p = 1), for t = 2..T:

    x_t ~ N(f(x_{<t}), sigma^2),        f(x_{<t}) = rho (x_{t-1} - mu) + mu
    x_1 ~ N(mu, sigma^2 / (1 - rho^2))                       stationary start

AR(p), with centred values z_t = x_t - mu:

    x_t ~ N(mu + sum_{k=1..p} rho_k z_{t-k}, sigma^2)        t > p
    (x_1..x_p) ~ N(mu, sigma^2 Gamma)                        stationary start (the default)

Gamma (p, p) is the Toeplitz matrix Gamma_ij = g_|i-j| of the stationary autocovariances
g_j = gamma_j / sigma^2, which solve the (p+1) Yule-Walker equations A(rho) g = e_0:

    g_0 - sum_k rho_k g_k = 1,        g_j - sum_k rho_k g_{|j-k|} = 0        (j = 1..p)

For p = 1, g_0 = 1 / (1 - rho^2): the lecture's start.  It exists only when every root of
1 - sum_k rho_k z^k lies outside the unit circle (|rho| < 1 for p = 1).  ``start="conditional"``
conditions on x_1..x_p instead (needs T > p); its maximiser is least squares, :func:`conditional_mle`.

Shapes: x (B, T), B independent sequences; x[:, t] holds x_{t+1} (code counts t from 0).
Loss: -(1/B) sum_b log p(x_b), summed over t.  Parameters: rho (p,), mu (), log_sigma ()
with sigma = exp(log_sigma), unconstrained: any gradient step keeps sigma > 0.
"""
import math
from typing import NamedTuple, Optional

import numpy as np

from ..backend import asnumpy, device_of, get_xp, resolve_dtype, to_device
from .base import Model

STARTS = ("stationary", "conditional")


class NonStationaryError(ValueError):
    """rho outside the stationary region, where the stationary start does not exist.

    A ValueError; ``scratchnade.train.fit`` reports one raised while training (a gradient step
    that left the region) as :class:`scratchnade.train.TrainingDiverged`."""
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- reference (the slide)

def reference_forward(params, x, start="stationary"):
    """Mean per-sequence NLL by the slide's loop over t.  Returns (loss, ARReferenceCache).

    Inputs: params {rho (p,), mu (), log_sigma ()}, x (B, T).  f[t], e[t] are (B,).
    The stationary start of AR(p) has no simpler slide form than the Gaussian
    N(mu, sigma^2 Gamma), so it calls the same Yule-Walker pieces as the fast path (for
    p = 1, Gamma = [[1 / (1 - rho^2)]]: the lecture's start).  Same loss as :func:`forward`.
    """
    rho, mu, log_sigma = params["rho"], params["mu"], params["log_sigma"]
    xp = get_xp(x, rho)
    x = _as_data(x, rho, start)
    p, (B, T) = rho.shape[0], x.shape
    sigma2 = xp.exp(2.0 * log_sigma)                                          # sigma^2
    f, e = {}, {}
    nll = xp.zeros(B, dtype=x.dtype)
    for t in range(p, T):
        f[t] = mu + sum(rho[k - 1] * (x[:, t - k] - mu) for k in range(1, p + 1))  # f(x_<t)
        e[t] = x[:, t] - f[t]                                                 # x_t - f(x_<t)
        nll = nll + 0.5 * xp.log(2 * math.pi * sigma2) + e[t] ** 2 / (2 * sigma2)  # -log N(x_t; f, sigma^2)
    m, yw, Gamma_inv, z0 = 0, None, None, None
    if start == "stationary":
        check_stationary(rho)
        m = min(p, T)
        yw = yule_walker(rho)                                                 # g_j = gamma_j / sigma^2
        Gamma = yw.g[_lag_index(m, xp)]                                       # Gamma_ij = g_|i-j|  (m, m)
        Gamma_inv = xp.linalg.inv(Gamma)
        z0 = x[:, :m] - mu                                                    # z_1..z_m  (B, m)
        q = ((z0 @ Gamma_inv) * z0).sum(axis=1)                               # z^T Gamma^{-1} z  (B,)
        logdet = xp.linalg.slogdet(Gamma)[1]                                  # log det Gamma
        nll = nll + 0.5 * m * xp.log(2 * math.pi * sigma2) + 0.5 * logdet + q / (2 * sigma2)  # -log N(x_<=m)
    loss = nll.sum() / B                                                      # mean over sequences
    return loss, ARReferenceCache(params, x, sigma2, e, m, yw, Gamma_inv, z0)


def reference_backward(dloss, cache):
    """Gradients {rho (p,), mu (), log_sigma ()} of the reference loss, by a plain reverse loop."""
    params, x, sigma2, e, m, yw, Gamma_inv, z0 = cache
    rho, mu = params["rho"], params["mu"]
    xp = get_xp(x, rho)
    p, (B, T) = rho.shape[0], x.shape
    w = dloss / B                                                             # the loss is a mean over B
    drho, dmu, dlog_sigma = xp.zeros_like(rho), xp.zeros_like(mu), xp.zeros_like(params["log_sigma"])
    for t in reversed(range(p, T)):
        de = w * e[t] / sigma2                                                # dloss/de_t  (B,)
        dlog_sigma += w * B - (de * e[t]).sum()                               # log sigma + e_t^2 / 2 sigma^2
        df = -de                                                              # e_t = x_t - f_t
        dmu += df.sum()                                                       # f_t = mu + ...
        for k in range(1, p + 1):
            drho[k - 1] += (df * (x[:, t - k] - mu)).sum()                    # ... + rho_k (x_{t-k} - mu)
            dmu += -rho[k - 1] * df.sum()
    if m:
        dz0 = w * (z0 @ Gamma_inv) / sigma2                                   # dloss/dz_<=m  (B, m)
        dmu += -dz0.sum()                                                     # z0 = x_<=m - mu
        dlog_sigma += w * B * m - (dz0 * z0).sum()                            # m log sigma + q / (2 sigma^2)
        dGamma = (0.5 * w * B * Gamma_inv                                     # d log det(Gamma) / 2
                  - 0.5 * w / sigma2 * Gamma_inv @ (z0.T @ z0) @ Gamma_inv)   # d q / (2 sigma^2)
        dg = xp.zeros(p + 1, dtype=x.dtype)
        for i in range(m):
            for j in range(m):
                dg[abs(i - j)] += dGamma[i, j]                                # Gamma_ij = g_|i-j|
        drho += yule_walker_backward(dg, yw)                                  # A(rho) g = e_0
    return {"rho": drho, "mu": dmu, "log_sigma": dlog_sigma}


class ARReferenceCache(NamedTuple):
    params: dict
    x: object                    # (B, T) the data in the parameters' dtype
    sigma2: object               # () sigma^2
    e: dict                      # e[t] (B,) innovations x_t - f(x_<t), t = p..T-1
    m: int                       # start values under the stationary Gaussian (0: conditional)
    yw: Optional["YuleWalker"]   # Yule-Walker solution (stationary start only)
    Gamma_inv: object            # (m, m) inverse start covariance / sigma^2, or None
    z0: object                   # (B, m) centred start values, or None


# ----------------------------------------------------------------------------- Yule-Walker (both tiers)

class YuleWalker(NamedTuple):
    g: object   # (p+1,) stationary autocovariances / sigma^2 at lags 0..p
    A: object   # (p+1, p+1) Yule-Walker matrix, A g = e_0
    S: object   # (p+1, p+1, p) 0/1 tensor with A = I - S @ rho, so dA/drho_k = -S[:, :, k]


def _yule_walker_selector(p, dtype):
    """Host S (p+1, p+1, p): S[j, |j-k|, k-1] = 1, the place of rho_k in equation j."""
    S = np.zeros((p + 1, p + 1, p), dtype=dtype)
    for j in range(p + 1):
        for k in range(1, p + 1):
            S[j, abs(j - k), k - 1] = 1.0
    return S


def yule_walker(rho):
    """Solve the Yule-Walker equations for g_j = gamma_j / sigma^2, j = 0..p.

        A(rho) g = e_0,     A = I - sum_k rho_k S_k       (see the module docstring)

    Shapes: rho (p,) -> YuleWalker(g (p+1,), A (p+1, p+1), S (p+1, p+1, p)).
    """
    xp = get_xp(rho)
    p = rho.shape[0]
    S = to_device(_yule_walker_selector(p, rho.dtype), device_of(rho))
    A = xp.eye(p + 1, dtype=rho.dtype) - S @ rho             # A(rho)
    e0 = xp.zeros(p + 1, dtype=rho.dtype)
    e0[0] = 1.0                                              # right-hand side e_0
    g = xp.linalg.solve(A, e0)                               # autocovariances / sigma^2
    return YuleWalker(g, A, S)


def yule_walker_backward(dg, yw):
    """drho from dg, by differentiating the linear system A(rho) g = e_0.

        dA g + A dg = 0  =>  dloss/dA = -lam g^T,  with  A^T lam = dloss/dg  (adjoint solve)
        drho_k = sum_{j,i} lam_j g_i S[j, i, k]            since dA/drho_k = -S_k

    Shapes: dg (p+1,) -> drho (p,).
    """
    xp = get_xp(dg)
    lam = xp.linalg.solve(yw.A.T, dg)                        # adjoint variables
    return xp.tensordot(xp.outer(lam, yw.g), yw.S, axes=2)   # drho_k = lam^T S_k g


def _lag_index(m, xp):
    """(m, m) integer matrix |i - j|: Gamma = g[lag] is the Toeplitz matrix of g."""
    i = xp.arange(m)
    return xp.abs(i[:, None] - i[None, :])


def autocovariance(rho, log_sigma, n_lags):
    """Stationary autocovariances gamma_0..gamma_{n_lags-1} of the AR(p) process.

        gamma_j = sigma^2 g_j,   g_0..g_p from Yule-Walker,   g_j = sum_k rho_k g_{j-k} (j > p)

    Shapes: rho (p,), log_sigma () -> (n_lags,).
    """
    xp = get_xp(rho)
    check_stationary(rho)
    p = rho.shape[0]
    g = list(yule_walker(rho).g)                             # lags 0..p
    for j in range(p + 1, n_lags):
        g.append((rho * xp.stack(g[j - p:j][::-1])).sum())   # g_j = sum_k rho_k g_{j-k}
    return xp.exp(2.0 * log_sigma) * xp.stack(g[:n_lags])    # gamma_j = sigma^2 g_j


# ----------------------------------------------------------------------------- fast (same maths)

def predict(rho, z):
    """Centred conditional means sum_k rho_k z_{t-k} for t = p..T-1 (0-based).

    Shapes: rho (p,), z (B, T) with T > p -> (B, T - p).
    """
    p, T = rho.shape[0], z.shape[1]
    f = rho[0] * z[:, p - 1:T - 1]                           # rho_1 z_{t-1}
    for k in range(2, p + 1):
        f = f + rho[k - 1] * z[:, p - k:T - k]               # + rho_k z_{t-k}
    return f


def innovations(rho, z):
    """e_t = z_t - sum_k rho_k z_{t-k} for t = p..T-1; empty when T <= p.

    Shapes: rho (p,), z (B, T) -> (B, max(T - p, 0)).
    """
    xp = get_xp(z, rho)
    p, (B, T) = rho.shape[0], z.shape
    if T <= p:
        return xp.zeros((B, 0), dtype=z.dtype)
    return z[:, p:] - predict(rho, z)                        # innovation e_t ~ N(0, sigma^2)


class ARCache(NamedTuple):
    rho: object                  # (p,) AR coefficients
    z: object                    # (B, T) centred data x - mu
    e: object                    # (B, max(T-p, 0)) innovations
    sigma2: object               # () sigma^2
    m: int                       # start values under the stationary Gaussian (0: conditional)
    yw: Optional[YuleWalker]     # Yule-Walker solution (stationary start only)
    Gamma_inv: object            # (m, m) inverse start covariance / sigma^2, or None
    u: object                    # (B, m) Gamma^{-1} z_{<m}, or None


def sequence_nll(params, x, start="stationary"):
    """Per-sequence negative log-likelihood and the cache for :func:`backward`.

        -log p(x) = n (log sqrt(2 pi) + log sigma) + sum_{t>=p} e_t^2 / (2 sigma^2)       n = T - p
                    + m (log sqrt(2 pi) + log sigma) + log det(Gamma) / 2
                    + z_{<m}^T Gamma^{-1} z_{<m} / (2 sigma^2)         stationary only, m = min(p, T)

    Shapes: params {rho (p,), mu (), log_sigma ()}, x (B, T) -> nll (B,), ARCache.

    The trick over the reference: no loop over t.  The innovations of every t come from p
    shifted slices of z (:func:`innovations`, one vector operation per lag instead of one
    Python step per t), their squares are summed in one reduction, and the constants
    n (log sqrt(2 pi) + log sigma) are added once per sequence instead of once per t.
    """
    rho, mu, log_sigma = params["rho"], params["mu"], params["log_sigma"]
    xp = get_xp(x, rho)
    x = _as_data(x, rho, start)
    p, T = rho.shape[0], x.shape[1]
    sigma2 = xp.exp(2.0 * log_sigma)                         # sigma^2
    z = x - mu                                               # z_t = x_t - mu
    e = innovations(rho, z)                                  # (B, n)
    n = e.shape[1]
    nll = n * (_HALF_LOG_2PI + log_sigma) + 0.5 * (e * e).sum(axis=1) / sigma2   # Gaussian innovations
    if start == "conditional":
        return nll, ARCache(rho, z, e, sigma2, 0, None, None, None)
    check_stationary(rho)
    m = min(p, T)
    yw = yule_walker(rho)
    Gamma = yw.g[_lag_index(m, xp)]                          # (m, m) start covariance / sigma^2
    Gamma_inv = xp.linalg.inv(Gamma)
    logdet = xp.linalg.slogdet(Gamma)[1]                     # log det Gamma
    z0 = z[:, :m]
    u = z0 @ Gamma_inv                                       # Gamma^{-1} z_{<m} (Gamma symmetric)
    q = (u * z0).sum(axis=1)                                 # z^T Gamma^{-1} z
    nll = nll + m * (_HALF_LOG_2PI + log_sigma) + 0.5 * logdet + 0.5 * q / sigma2   # stationary start
    return nll, ARCache(rho, z, e, sigma2, m, yw, Gamma_inv, u)


def log_prob(params, x, start="stationary"):
    """Exact log p(x) of each sequence.  Shapes: x (B, T) -> (B,)."""
    return -sequence_nll(params, x, start)[0]


def forward(params, x, start="stationary"):
    """Mean per-sequence NLL, loss = -(1/B) sum_b log p(x_b), and the cache.

    Shapes: params {rho (p,), mu (), log_sigma ()}, x (B, T) -> loss (), ARCache.

    Same loss as :func:`reference_forward`, vectorised over t (see :func:`sequence_nll`).
    """
    nll, cache = sequence_nll(params, x, start)
    return nll.mean(), cache


def backward(dloss, cache):
    """Gradients of every parameter from dloss = dL/dloss (usually 1.0).

    Innovations (w = dloss / B, de_t = w e_t / sigma^2):
        drho_k     = -sum de_t z_{t-k}
        dmu        = -(1 - sum_k rho_k) sum de_t
        dlog_sigma = w B n - sum de_t e_t
    Stationary start (du = w Gamma^{-1} z_{<m} / sigma^2):
        dmu        -= sum du
        dlog_sigma += w B m - sum du z_{<m}
        dGamma      = w B Gamma^{-1} / 2 - du^T u / 2  ->  dg_j = sum_{|i-i'|=j} dGamma_ii'
        drho       += yule_walker_backward(dg)

    Returns {rho (p,), mu (), log_sigma ()}.

    Same gradients as :func:`reference_backward`.  The trick over the reference: every sum
    over t is one reduction over a shifted slice (drho_k one product with z_{t-k} for all t
    at once), and dg collects the Toeplitz entries of dGamma with one bincount over the
    lag matrix |i - i'| instead of a double loop.
    """
    c = cache
    xp = get_xp(c.z)
    dtype = c.z.dtype
    (B, T), p, n = c.z.shape, c.rho.shape[0], c.e.shape[1]
    w = dloss / B                                            # loss is a mean over B
    de = (w / c.sigma2) * c.e                                # dloss/de_t
    if n:
        drho = -xp.stack([(de * c.z[:, p - k:T - k]).sum() for k in range(1, p + 1)])
    else:
        drho = xp.zeros(p, dtype=dtype)
    dmu = -(1.0 - c.rho.sum()) * de.sum()                    # de_t/dmu = -(1 - sum_k rho_k)
    dlog_sigma = w * B * n - (de * c.e).sum()                # d[n log sigma + e^2 / (2 sigma^2)]
    if c.m:
        du = (w / c.sigma2) * c.u                            # dloss/dz_{<m}
        dmu = dmu - du.sum()
        dlog_sigma = dlog_sigma + w * B * c.m - (du * c.z[:, :c.m]).sum()
        dGamma = (0.5 * w * B) * c.Gamma_inv - 0.5 * (du.T @ c.u)   # d[logdet/2 + q/(2 sigma^2)]
        lag = _lag_index(c.m, xp)
        dg = xp.bincount(lag.ravel(), weights=dGamma.ravel(), minlength=p + 1)  # Gamma_ii' = g_|i-i'|
        drho = drho + yule_walker_backward(dg.astype(dtype), c.yw)
    return {"rho": drho.astype(dtype),
            "mu": xp.asarray(dmu, dtype=dtype),
            "log_sigma": xp.asarray(dlog_sigma, dtype=dtype)}


# ----------------------------------------------------------------------------- conditionals, sampling, MLE

def conditional_moments(params, x, start="stationary"):
    """Mean and variance of p(x_t | x_{<t}) at every t.

        t >= p:  mean = mu + sum_k rho_k z_{t-k},                var = sigma^2
        t <  p:  Gaussian conditioning within the stationary start (C = Gamma[:t, :t]):
                 mean = mu + Gamma[t, :t] C^{-1} z_{<t}
                 var  = sigma^2 (g_0 - Gamma[t, :t] C^{-1} Gamma[:t, t])
                 (start="conditional": not modelled, NaN)

    Shapes: x (B, T) -> mean (B, T), var (B, T).
    """
    rho, mu, log_sigma = params["rho"], params["mu"], params["log_sigma"]
    xp = get_xp(x, rho)
    x = _as_data(x, rho, start)
    p, T = rho.shape[0], x.shape[1]
    sigma2 = xp.exp(2.0 * log_sigma)
    z = x - mu
    mean, var = xp.empty_like(z), xp.empty_like(z)
    if T > p:
        mean[:, p:] = mu + predict(rho, z)                   # f(x_{<t})
        var[:, p:] = sigma2
    m = min(p, T)
    if start == "conditional":
        mean[:, :m] = xp.nan
        var[:, :m] = xp.nan
        return mean, var
    check_stationary(rho)
    Gamma = yule_walker(rho).g[_lag_index(m, xp)]
    for t in range(m):
        c = Gamma[:t, t]                                     # Cov(z_{<t}, z_t) / sigma^2
        beta = xp.linalg.solve(Gamma[:t, :t], c) if t else c  # regression of z_t on z_{<t}
        mean[:, t] = mu + z[:, :t] @ beta
        var[:, t] = sigma2 * (Gamma[t, t] - c @ beta)        # Schur complement of C
    return mean, var


def sample(params, n, T, rng=None, temperature=1.0):
    """n ancestral samples of length T, starting from the stationary distribution.

        z_{<m} = sigma sqrt(tau) L eps_{<m}          Gamma = L L^T, m = min(p, T)
        z_t    = sum_k rho_k z_{t-k} + sigma sqrt(tau) eps_t,    x = mu + z

    Temperature tau scales every conditional variance by tau, i.e. samples p(x)^{1/tau}
    (exactly, since p is Gaussian).  eps is drawn on the host from `rng` (a NumPy Generator
    or a seed), so one seed gives the same samples on every device.

    Shapes: params {rho (p,), mu (), log_sigma ()} -> x (n, T) on the parameters' device.
    """
    rho, mu, log_sigma = params["rho"], params["mu"], params["log_sigma"]
    xp = get_xp(rho)
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if n < 1 or T < 1:
        raise ValueError(f"need n >= 1 samples of length T >= 1, got n = {n}, T = {T}")
    check_stationary(rho)
    p, dtype = rho.shape[0], rho.dtype
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eps = to_device(rng.standard_normal((n, T)).astype(dtype), device_of(rho))   # N(0, 1) noise
    s = xp.exp(log_sigma) * math.sqrt(temperature)           # noise scale sigma sqrt(tau)
    m = min(p, T)
    L = xp.linalg.cholesky(yule_walker(rho).g[_lag_index(m, xp)])   # Gamma = L L^T
    z = xp.empty((n, T), dtype=dtype)
    z[:, :m] = s * (eps[:, :m] @ L.T)                        # stationary start
    coef = rho[::-1]                                         # (rho_p..rho_1) meets (z_{t-p}..z_{t-1})
    for t in range(m, T):
        z[:, t] = z[:, t - p:t] @ coef + s * eps[:, t]       # z_t = sum_k rho_k z_{t-k} + noise
    return z + mu


def conditional_mle(x, p=1, dtype=None):
    """Closed-form maximiser of the conditional likelihood (start="conditional").

    Ordinary least squares of x_t on (1, x_{t-1}, ..., x_{t-p}) pooled over every sequence
    and every t >= p, i.e. x_t = c + sum_k rho_k x_{t-k} + e_t, then

        mu = c / (1 - sum_k rho_k),     sigma^2 = mean of e_t^2  (divides by N, the MLE)

    This is the exact maximiser for start="conditional" (gradient descent lands on it).
    The exact stationary-start MLE has no closed form for p >= 1; it differs by O(1/T).
    Solved in float64 (data shifted by their mean for conditioning), returned in `dtype`
    (default: x's float dtype, else float32).

    Shapes: x (B, T) with B (T - p) >= p + 1 -> {rho (p,), mu (), log_sigma ()}.
    """
    xp = get_xp(x)
    if int(p) != p or p < 1:
        raise ValueError(f"p must be a positive integer, got {p!r}")
    is_float = getattr(x, "dtype", None) in (np.float32, np.float64)
    dtype = resolve_dtype(dtype if dtype is not None else (x.dtype if is_float else None))
    _check_x(x, p, "conditional")
    x = x.astype(np.float64)                                 # solve in float64
    B, T = x.shape
    if B * (T - p) < p + 1:
        raise ValueError(f"need at least p + 1 = {p + 1} regression targets, got B (T - p) = {B * (T - p)}")
    x_bar = x.mean()                                         # shift: better-conditioned normal equations
    y = x - x_bar
    Y = y[:, p:].reshape(-1)                                 # targets x_t, t >= p   (N,)
    X = xp.stack([xp.ones_like(Y)] + [y[:, p - k:T - k].reshape(-1) for k in range(1, p + 1)],
                 axis=1)                                     # regressors (1, x_{t-1}..x_{t-p})  (N, p+1)
    beta = xp.linalg.solve(X.T @ X, X.T @ Y)                 # normal equations: (c, rho_1..rho_p)
    e = Y - X @ beta                                         # residuals
    rho = beta[1:]
    one_minus = 1.0 - rho.sum()
    if abs(float(one_minus)) < 1e-12:
        raise ValueError("fitted sum_k rho_k = 1 (unit root): mu = c / (1 - sum_k rho_k) is undefined")
    mu = x_bar + beta[0] / one_minus                         # c = mu (1 - sum_k rho_k)
    log_sigma = 0.5 * xp.log((e * e).mean())                 # sigma^2 = mean squared residual
    return {"rho": rho.astype(dtype),
            "mu": xp.asarray(mu, dtype=dtype),
            "log_sigma": xp.asarray(log_sigma, dtype=dtype)}


# ----------------------------------------------------------------------------- the model

class LinearGaussianAR(Model):
    """Linear Gaussian AR(p) model x_t ~ N(mu + sum_k rho_k (x_{t-k} - mu), sigma^2).

    Parameters: rho (p,), mu (), log_sigma () with sigma = exp(log_sigma).  Defaults: rho = 0
    (stationary, where gradient fitting should start), mu = 0, sigma = 1.  Data are (B, T).

    start: "stationary" (default) models x_1..x_p by the stationary Gaussian and needs a
    stationary rho; "conditional" conditions on them (needs T > p).  The loss is the mean
    per-sequence NLL.  dtype float32 (default) or float64; device as in scratchnade.backend.

    Gradient fitting of the stationary start: a large step (e.g. Adam with lr 0.05 from rho = 0)
    can jump out of the stationary region, and the next loss raises NonStationaryError (which
    ``fit`` and the command line report as divergence); use a small learning rate (~0.01), or
    fit with start="conditional", which accepts any rho.

    Data with NaN or inf (missing values) are refused: ``log_prob``, ``loss_and_grads`` and the
    closed-form fit raise ValueError saying where the first one is.
    """

    def __init__(self, p=1, start="stationary", rho=None, mu=0.0, sigma=1.0, dtype=None, device=None):
        _check_start(start)
        if int(p) != p or p < 1:
            raise ValueError(f"p must be a positive integer, got {p!r}")
        p = int(p)
        dtype = resolve_dtype(dtype)
        rho = np.zeros(p) if rho is None else np.asarray(rho, dtype=np.float64).reshape(-1)
        if rho.shape != (p,):
            raise ValueError(f"rho must have p = {p} entries, got {rho.size}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if start == "stationary":
            check_stationary(rho)
        host = {"rho": rho.astype(dtype),
                "mu": np.asarray(mu, dtype=dtype),
                "log_sigma": np.asarray(math.log(sigma), dtype=dtype)}
        self.params = {k: to_device(v, device) for k, v in host.items()}
        self.p, self.start = p, start
        self.config = {"p": p, "start": start, "dtype": dtype.name}

    @classmethod
    def fit_closed_form(cls, x, p=1, start="stationary", dtype=None):
        """A model holding the conditional MLE of x (:func:`conditional_mle`), on x's device.

        `start` is the likelihood the returned model evaluates: the fit is the exact MLE for
        "conditional" and within O(1/T) of it for "stationary" (which needs the fitted rho
        to be stationary).
        """
        params = conditional_mle(x, p, dtype)
        model = cls(p, start="conditional", dtype=params["rho"].dtype, device=device_of(x))
        model.params, model.start, model.config["start"] = params, start, start
        return model

    def loss_and_grads(self, x):
        """Mean per-sequence NLL of x (B, T) (a float) and {rho, mu, log_sigma} gradients.

        The gradients are new arrays on every call (safe to keep)."""
        loss, cache = forward(self.params, x, self.start)
        return float(loss), backward(1.0, cache)

    def log_prob(self, x):
        """Exact log p(x_b) of each sequence.  Shapes: x (B, T) -> (B,)."""
        return log_prob(self.params, x, self.start)

    def conditional_moments(self, x):
        """Mean and variance of p(x_t | x_{<t}).  Shapes: x (B, T) -> (B, T), (B, T)."""
        return conditional_moments(self.params, x, self.start)

    def autocovariance(self, n_lags):
        """Stationary autocovariances gamma_0..gamma_{n_lags-1}.  Shapes: -> (n_lags,)."""
        return autocovariance(self.params["rho"], self.params["log_sigma"], n_lags)

    def sample(self, n, T, seed=None, temperature=1.0):
        """n ancestral samples of length T from the stationary start; seed: an int or a
        Generator.  Shapes: -> (n, T)."""
        return sample(self.params, n, T, seed, temperature)


# ----------------------------------------------------------------------------- checks

def is_stationary(rho):
    """True when AR coefficients rho (p,) (on any device) define a stationary process.

        stationary  <=>  every eigenvalue of the companion matrix
                         F = [[rho_1 ... rho_p], [1 0 ... 0], ..., [0 ... 1 0]]
                         lies strictly inside the unit circle

    (the roots of 1 - sum_k rho_k z^k lie outside it); for p = 1, |rho| < 1.
    rho has p entries, so this runs on the host.
    """
    r = np.asarray(asnumpy(rho), dtype=np.float64).ravel()
    if not np.all(np.isfinite(r)):
        return False
    F = np.eye(r.size, k=-1)                                 # shift rows of the companion matrix
    F[0] = r                                                 # first row: rho_1..rho_p
    return bool(np.max(np.abs(np.linalg.eigvals(F))) < 1.0)


def check_stationary(rho):
    """Raise NonStationaryError (a ValueError) unless rho is stationary (the stationary start needs it)."""
    if not is_stationary(rho):
        r = np.asarray(asnumpy(rho), dtype=np.float64).ravel()
        raise NonStationaryError(
            f"rho = {r} is not stationary: a root of 1 - sum_k rho_k z^k lies on or inside the "
            "unit circle (for p = 1: |rho| >= 1), so the stationary start x_1..x_p ~ "
            "N(mu, sigma^2 Gamma) does not exist. Use start='conditional', or start gradient "
            "fitting from rho = 0.")


def _check_start(start):
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")


def _check_x(x, p, start):
    """Raise ValueError unless x is a (B, T) array long enough for AR(p) with this start."""
    ndim = getattr(x, "ndim", None)
    if ndim != 2:
        raise ValueError(f"x must be a (B, T) array of B sequences of length T, got shape "
                         f"{getattr(x, 'shape', type(x))}; for one sequence use x[None]")
    B, T = x.shape
    if B < 1 or T < 1:
        raise ValueError(f"x must hold at least one value, got shape {x.shape}")
    if start == "conditional" and T <= p:
        raise ValueError(f"start='conditional' conditions on the first p = {p} values, so it "
                         f"needs T > p, got T = {T}")
    xp = get_xp(x)
    if getattr(x.dtype, "kind", "f") in "fc":
        finite = xp.isfinite(x)
        if not bool(asnumpy(finite.all())):                  # one host sync per call
            bad = asnumpy(~finite)
            b, t = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"x holds {int(bad.sum())} NaN or inf value(s) (the first in sequence {b} "
                             f"at t = {t}): missing values have no likelihood under the AR model; drop "
                             f"or fill them first")


def _as_data(x, rho, start):
    """x checked (shape, length, same device as rho) and cast to rho's dtype."""
    _check_start(start)
    _check_x(x, rho.shape[0], start)
    if device_of(x) != device_of(rho):
        raise ValueError(f"x is on device {device_of(x)!r} but the parameters are on "
                         f"{device_of(rho)!r}: move it with scratchnade.backend.to_device")
    return x.astype(rho.dtype, copy=False)
