"""Tests of the linear Gaussian AR(p) model against references written independently here.

References: the stationary covariance comes from the companion-form Lyapunov equation
(not from the model's Yule-Walker solve) and log-densities from numpy.linalg on the full
T x T covariance; AR(1) also uses the lecture's closed form sigma^2 rho^|i-j| / (1 - rho^2).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.gradcheck import assert_grads_close, check_grads, numerical_grad
from scratchnade.models import gaussian_ar
from scratchnade.models.gaussian_ar import (
    LinearGaussianAR, autocovariance, backward, conditional_mle, forward, is_stationary,
    log_prob, reference_backward, reference_forward, yule_walker)
from scratchnade.optim import Adam
from tiers import assert_tiers_agree

F64 = np.float64
EPS = np.finfo(F64).eps
H = 1e-5                                                   # finite-difference step


# ----------------------------------------------------------------------------- references

def rho_from_pacf(pacf):
    """AR coefficients with partial autocorrelations `pacf` (each in (-1, 1): stationary).

    Durbin-Levinson: phi_{k,j} = phi_{k-1,j} - a_k phi_{k-1,k-j},  phi_{k,k} = a_k.
    """
    phi = np.zeros(0)
    for a in pacf:
        phi = np.concatenate([phi - a * phi[::-1], [a]])
    return phi


def reference_acov(rho, sigma, n):
    """gamma_0..gamma_{n-1} from the Lyapunov equation P = F P F^T + Q of the companion form."""
    p = len(rho)
    F = np.eye(p, k=-1)
    F[0] = rho
    Q = np.zeros((p, p))
    Q[0, 0] = sigma ** 2
    P = np.linalg.solve(np.eye(p * p) - np.kron(F, F), Q.ravel()).reshape(p, p)
    gam = list(P[0])                                       # Cov(z_t, z_{t-j}), j < p
    for j in range(p, n):
        gam.append(sum(rho[k] * gam[j - 1 - k] for k in range(p)))
    return np.array(gam[:n])


def toeplitz(gam, T):
    i = np.arange(T)
    return gam[np.abs(i[:, None] - i[None, :])]


def mvn_logpdf(x, mean, cov):
    """log N(x_b; mean, cov) for every row of x (B, T)."""
    r = x - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("bi,bi->b", r, np.linalg.solve(cov, r.T).T)
    return -0.5 * (x.shape[1] * np.log(2 * np.pi) + logdet + maha)


def make_params(rho, mu, log_sigma, dtype=F64):
    return {"rho": np.asarray(rho, dtype=dtype), "mu": np.asarray(mu, dtype=dtype),
            "log_sigma": np.asarray(log_sigma, dtype=dtype)}


@st.composite
def ar_problems(draw, start=None, min_T=1, max_T=12):
    """A stationary AR(p) parameter set, a start and a data batch x (B, T)."""
    p = draw(st.integers(1, 3), label="p")
    start = start or draw(st.sampled_from(["stationary", "conditional"]), label="start")
    lo = max(min_T, p + 1 if start == "conditional" else 1)
    T = draw(st.integers(lo, max(lo, max_T)), label="T")
    B = draw(st.integers(1, 3), label="B")
    mag = st.floats(0.1, 0.7)      # away from 0 (AR test) and 1 (curvature spoils differences)
    pacf = [draw(mag, label="|pacf|") * draw(st.sampled_from([-1, 1])) for _ in range(p)]
    mu = draw(st.floats(-2, 2), label="mu")
    log_sigma = draw(st.floats(-1, 1), label="log_sigma")
    seed = draw(st.integers(0, 2 ** 16), label="seed")
    x = mu + 2 * np.exp(log_sigma) * np.random.default_rng(seed).standard_normal((B, T))
    return make_params(rho_from_pacf(pacf), mu, log_sigma), start, x


def simulate(rho, mu, sigma, T, seed):
    """One AR(p) sequence (1, T), written out in plain NumPy with the exact stationary start."""
    rng = np.random.default_rng(seed)
    p = len(rho)
    z = np.empty(T)
    z[:p] = rng.multivariate_normal(np.zeros(p), toeplitz(reference_acov(rho, sigma, p), p))
    eps = sigma * rng.standard_normal(T)
    for t in range(p, T):
        z[t] = rho @ z[t - p:t][::-1] + eps[t]
    return (mu + z)[None]


# ----------------------------------------------------------------------------- exact densities

@settings(max_examples=30, deadline=None)
@given(rho=st.floats(-0.95, 0.95), mu=st.floats(-3, 3), log_sigma=st.floats(-1.5, 1.5),
       T=st.integers(1, 30), B=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_ar1_log_prob_is_the_lecture_gaussian(rho, mu, log_sigma, T, B, seed):
    sigma = np.exp(log_sigma)
    i = np.arange(T)
    cov = sigma ** 2 * rho ** np.abs(i[:, None] - i[None, :]) / (1 - rho ** 2)  # Sigma_ij
    x = mu + sigma * np.random.default_rng(seed).standard_normal((B, T))
    lp = log_prob(make_params([rho], mu, log_sigma), x)
    np.testing.assert_allclose(lp, mvn_logpdf(x, mu, cov), rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(ar_problems(max_T=20))
def test_arp_log_prob_is_the_full_gaussian(problem):
    params, start, x = problem
    rho, mu, sigma = params["rho"], float(params["mu"]), float(np.exp(params["log_sigma"]))
    B, T = x.shape
    p = len(rho)
    cov = toeplitz(reference_acov(rho, sigma, T), T)
    want = mvn_logpdf(x, mu, cov)                                    # log p(x_1..x_T)
    if start == "conditional":                                        # minus log p(x_1..x_p)
        want = want - mvn_logpdf(x[:, :p], mu, cov[:p, :p])
    np.testing.assert_allclose(log_prob(params, x, start), want, rtol=0, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(ar_problems())
def test_log_prob_is_the_chain_of_conditionals(problem):
    params, start, x = problem
    p = len(params["rho"])
    model = LinearGaussianAR(p, start=start, dtype=F64)
    model.params = params
    mean, var = model.conditional_moments(x)
    terms = -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)  # log N(x_t; mean_t, var_t)
    if start == "conditional":
        assert np.isnan(mean[:, :p]).all() and np.isnan(var[:, :p]).all()
        terms = terms[:, p:]
    np.testing.assert_allclose(model.log_prob(x), terms.sum(axis=1), rtol=0, atol=1e-9)


def test_yule_walker_and_autocovariance():
    g = asnumpy(yule_walker(np.array([0.6])).g)
    np.testing.assert_allclose(g, [1 / (1 - 0.36), 0.6 / (1 - 0.36)], rtol=1e-14)
    for pacf in ([0.5, -0.4], [-0.7, 0.3, 0.6]):
        rho = rho_from_pacf(pacf)
        acov = autocovariance(rho, np.array(np.log(1.3)), 9)
        np.testing.assert_allclose(acov, reference_acov(rho, 1.3, 9), rtol=1e-12)


def test_is_stationary():
    for rho in ([0.99], [-0.99], [0.5, 0.3], rho_from_pacf([0.9, -0.9, 0.9])):
        assert is_stationary(rho)
    for rho in ([1.0], [-1.0], [1.2], [0.5, 0.6], [0.0, 1.0], [np.nan]):
        assert not is_stationary(rho)


# ----------------------------------------------------------------------------- gradients

@settings(max_examples=40, deadline=None)
@given(ar_problems())
def test_gradients_match_finite_differences(problem):
    params, start, x = problem
    loss, cache = forward(params, x, start)
    grads = backward(1.0, cache)

    def loss_fn():
        return forward(params, x, start)[0]

    errors = check_grads(loss_fn, params, grads, h=H)
    for k, err in errors.items():
        if err >= 1e-6:   # a gradient near 0: only the centred difference's round-off is allowed
            diff = np.abs(numerical_grad(loss_fn, params[k], h=H) - grads[k]).max()
            assert diff < 10 * EPS * abs(float(loss)) / H, (k, err, diff, grads[k])
    scaled = backward(2.5, cache)                                     # linear in dloss
    for k in grads:
        np.testing.assert_allclose(scaled[k], 2.5 * grads[k], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- reference == fast

@settings(max_examples=25, deadline=None)
@given(ar_problems(max_T=14))
def test_reference_and_fast_agree(problem):
    params, start, x = problem
    assert_tiers_agree(gaussian_ar, params, x, start)


@pytest.mark.parametrize("p, T, start", [(1, 1, "stationary"), (1, 6, "stationary"), (3, 2, "stationary"),
                                         (3, 9, "stationary"), (1, 5, "conditional"), (2, 8, "conditional")])
def test_reference_and_fast_agree_on_the_fake_device(fake_device, p, T, start):
    params = make_params(rho_from_pacf([0.5, -0.3, 0.4][:p]), 0.3, -0.2)
    x = np.random.default_rng(p + T).standard_normal((3, T))
    dev = {k: to_device(v, fake_device) for k, v in params.items()}
    xd = to_device(x, fake_device)
    assert_tiers_agree(gaussian_ar, dev, xd, start)
    ref_loss, ref_cache = reference_forward(dev, xd, start)
    ref_grads = reference_backward(1.0, ref_cache)
    for k, v in params.items():
        assert device_of(ref_grads[k]) == fake_device and ref_grads[k].shape == v.shape
    host_loss, host_cache = reference_forward(params, x, start)               # and the host agrees
    assert_grads_close(ref_loss, host_loss, rtol=1e-12, what="loss")
    assert_grads_close(ref_grads, reference_backward(1.0, host_cache), rtol=1e-12)


@pytest.mark.parametrize("p, start", [(1, "stationary"), (3, "stationary"), (2, "conditional")])
def test_reference_matches_finite_differences(p, start):
    params = make_params(rho_from_pacf([0.6, -0.4, 0.3][:p]), -0.7, 0.3)
    x = np.random.default_rng(p).standard_normal((2, 7))
    grads = reference_backward(1.0, reference_forward(params, x, start)[1])
    errors = check_grads(lambda: reference_forward(params, x, start)[0], params, grads, h=H)
    assert max(errors.values()) < 1e-7, errors


def test_reference_ar1_is_the_lecture_gaussian():
    """AR(1): the reference loss is the lecture's
    -mean_b [log N(x_1; mu, sigma^2 / (1 - rho^2)) + sum_t log N(x_t; f_t, sigma^2)]."""
    rho, mu, sigma = 0.7, 0.4, 1.3
    x = np.random.default_rng(3).standard_normal((2, 6))

    def log_normal(v, mean, var):
        return -0.5 * np.log(2 * np.pi * var) - (v - mean) ** 2 / (2 * var)
    logp = log_normal(x[:, 0], mu, sigma ** 2 / (1 - rho ** 2))
    logp = logp + log_normal(x[:, 1:], mu + rho * (x[:, :-1] - mu), sigma ** 2).sum(axis=1)
    loss, _ = reference_forward(make_params([rho], mu, np.log(sigma)), x)
    assert float(loss) == pytest.approx(-logp.mean(), rel=1e-12)


# ----------------------------------------------------------------------------- autoregressive property

@settings(max_examples=30, deadline=None)
@given(ar_problems(min_T=2), st.data())
def test_autoregressive_property(problem, data):
    params, start, x = problem
    rho = params["rho"]
    p, T = len(rho), x.shape[1]
    model = LinearGaussianAR(p, start=start, dtype=F64)
    model.params = params
    t = data.draw(st.integers(1 if start == "stationary" else p, T - 1), label="t")
    mean, var = model.conditional_moments(x)

    future = x.copy()
    future[:, t:] += 1.0 + np.arange(T - t)                            # change x_{>=t}
    mean_f, var_f = model.conditional_moments(future)
    np.testing.assert_array_equal(mean_f[:, :t + 1], mean[:, :t + 1])
    np.testing.assert_array_equal(var_f[:, :t + 1], var[:, :t + 1])

    past = x.copy()
    past[:, t - 1] += 0.5                                               # change x_{t-1}
    diff = model.conditional_moments(past)[0][:, t] - mean[:, t]
    if t >= p:
        np.testing.assert_allclose(diff, 0.5 * rho[0], rtol=1e-9, atol=1e-12)   # slope rho_1
    else:
        assert np.all(np.abs(diff) > 1e-6)                              # slope phi_{t,1} != 0


# ----------------------------------------------------------------------------- fitting

@pytest.mark.parametrize("rho, mu, sigma", [([0.6], -1.5, 0.7), ([0.5, -0.3], 2.0, 1.3)])
def test_closed_form_fit_recovers_parameters(rho, mu, sigma):
    T = 20000
    rho = np.array(rho)
    x = simulate(rho, mu, sigma, T, seed=1)
    model = LinearGaussianAR.fit_closed_form(x, p=len(rho))
    assert model.dtype == F64 and model.start == "stationary"
    fit = model.params
    g = reference_acov(rho, 1.0, len(rho))                            # autocovariances / sigma^2
    se_rho = np.sqrt(np.diag(np.linalg.inv(toeplitz(g, len(rho)))) / T)   # sqrt(diag(Gamma^-1) / T)
    se_mu = sigma / (1 - rho.sum()) / np.sqrt(T)                      # long-run sd of the mean
    se_sigma = sigma / np.sqrt(2 * T)
    assert np.all(np.abs(fit["rho"] - rho) < 4 * se_rho), (fit["rho"], rho, se_rho)
    assert abs(fit["mu"] - mu) < 4 * se_mu, (fit["mu"], mu, se_mu)
    assert abs(np.exp(fit["log_sigma"]) - sigma) < 4 * se_sigma
    if len(rho) == 1:
        np.testing.assert_allclose(se_rho, np.sqrt((1 - rho ** 2) / T))   # the AR(1) formula


def test_closed_form_is_ols_and_maximises_conditional_likelihood():
    x = simulate(np.array([0.7]), 0.5, 1.0, 400, seed=3)
    fit = conditional_mle(x, 1)
    slope, intercept = np.polyfit(x[0, :-1], x[0, 1:], 1)             # OLS of x_t on x_{t-1}
    np.testing.assert_allclose(fit["rho"], [slope], rtol=1e-10)
    np.testing.assert_allclose(fit["mu"], intercept / (1 - slope), rtol=1e-10)
    loss, cache = forward(fit, x, "conditional")
    grads = backward(1.0, cache)
    assert all(np.abs(g).max() < 1e-8 for g in grads.values())       # a stationary point


def _adam_fit(model, x, steps=3000, lr=0.01):
    opt = Adam(lr)
    for i in range(steps):
        if i in (steps // 2, 5 * steps // 6):
            opt.lr /= 10                                              # simple step schedule
        _, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)
    return model.loss_and_grads(x)[1]


def test_adam_lands_on_the_closed_form_mle():
    x = LinearGaussianAR(2, rho=[0.5, 0.2], mu=1.5, sigma=0.8, dtype=F64).sample(4, 300, seed=1)
    best = conditional_mle(x, 2)
    model = LinearGaussianAR(2, start="conditional", dtype=F64)       # rho = 0, mu = 0, sigma = 1
    _adam_fit(model, x)
    for k in best:
        np.testing.assert_allclose(model.params[k], best[k], rtol=1e-4)

    stationary = LinearGaussianAR(2, start="stationary", dtype=F64)  # exact likelihood
    grads = _adam_fit(stationary, x)
    assert all(np.abs(g).max() < 1e-6 for g in grads.values())       # converged
    T = x.shape[1]
    for k in best:                                                    # O(1/T) from the conditional MLE
        assert np.all(np.abs(stationary.params[k] - best[k]) < 5.0 / T), k


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("pacf", [[0.7], [-0.6, 0.5]])
def test_samples_have_the_stationary_moments(pacf):
    n, T, mu, sigma = 20000, 6, 0.8, 1.4
    rho = rho_from_pacf(pacf)
    model = LinearGaussianAR(len(rho), rho=rho, mu=mu, sigma=sigma, dtype=F64)
    x = model.sample(n, T, seed=0)
    assert x.shape == (n, T)
    gam = reference_acov(rho, sigma, 2)
    r = gam[1] / gam[0]                                               # lag-1 autocorrelation
    for t in (1, T - 1):                                              # first values and later ones
        assert abs(x[:, t].mean() - mu) < 5 * np.sqrt(gam[0] / n)
        assert abs(x[:, t].var() - gam[0]) < 5 * gam[0] * np.sqrt(2 / n)
        corr = np.corrcoef(x[:, t - 1], x[:, t])[0, 1]
        assert abs(corr - r) < 5 * (1 - r ** 2) / np.sqrt(n)
    cold = model.sample(n, T, seed=0, temperature=0.25)               # variances scale by tau
    assert abs(cold[:, -1].var() - 0.25 * gam[0]) < 5 * 0.25 * gam[0] * np.sqrt(2 / n)
    np.testing.assert_array_equal(model.sample(3, T, seed=5), model.sample(3, T, seed=5))


# ----------------------------------------------------------------------------- bad input

def test_non_stationary_rho_raises_with_stationary_start():
    with pytest.raises(ValueError, match="not stationary"):
        LinearGaussianAR(1, rho=[1.0])
    model = LinearGaussianAR(2, start="conditional", rho=[0.5, 0.6], dtype=F64)
    x = np.random.default_rng(0).standard_normal((2, 5))
    assert np.isfinite(model.log_prob(x)).all()                       # conditional: fine
    with pytest.raises(ValueError, match="not stationary"):
        log_prob(model.params, x, "stationary")
    with pytest.raises(ValueError, match="not stationary"):
        forward(model.params, x, "stationary")
    with pytest.raises(ValueError, match="not stationary"):
        model.sample(2, 5)
    model.start = "stationary"
    with pytest.raises(ValueError, match="not stationary"):
        model.loss_and_grads(x)


def test_bad_input_raises():
    model = LinearGaussianAR(2, dtype=F64)
    for bad in (np.zeros(5), np.zeros((2, 3, 4)), 3.0):
        with pytest.raises(ValueError, match=r"\(B, T\)"):
            model.log_prob(bad)
        with pytest.raises(ValueError, match=r"\(B, T\)"):
            model.loss_and_grads(bad)
    with pytest.raises(ValueError, match="T > p"):
        log_prob(model.params, np.zeros((1, 2)), "conditional")
    with pytest.raises(ValueError, match="start"):
        LinearGaussianAR(1, start="exact")
    with pytest.raises(ValueError, match="p = 2 entries"):
        LinearGaussianAR(2, rho=[0.1])
    with pytest.raises(ValueError, match="sigma"):
        LinearGaussianAR(1, sigma=0.0)


# ----------------------------------------------------------------------------- dtype and devices

def test_float32_matches_float64():
    x64 = np.random.default_rng(0).standard_normal((3, 10))
    m64 = LinearGaussianAR(2, rho=[0.4, 0.2], mu=0.1, sigma=0.9, dtype=F64)
    m32 = LinearGaussianAR(2, rho=[0.4, 0.2], mu=0.1, sigma=0.9, dtype=np.float32)
    lp = m32.log_prob(x64)
    assert lp.dtype == np.float32
    np.testing.assert_allclose(lp, m64.log_prob(x64), rtol=1e-5)
    _, g32 = m32.loss_and_grads(x64.astype(np.float32))
    _, g64 = m64.loss_and_grads(x64)
    for k in g64:
        assert g32[k].dtype == np.float32 and g32[k].shape == g64[k].shape
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-5)
    assert m32.sample(2, 4, seed=0).dtype == np.float32


@pytest.mark.parametrize("p, start", [(1, "stationary"), (3, "stationary"), (2, "conditional")])
def test_fake_device_matches_cpu(fake_device, p, start):
    x = np.random.default_rng(1).standard_normal((3, 8))
    cpu = LinearGaussianAR(p, start=start, rho=rho_from_pacf([0.5, -0.3, 0.4][:p]), mu=0.2,
                           sigma=1.1, dtype=F64)
    dev = LinearGaussianAR(p, start=start, rho=rho_from_pacf([0.5, -0.3, 0.4][:p]), mu=0.2,
                           sigma=1.1, dtype=F64).to(fake_device)
    x_dev = to_device(x, fake_device)
    lp = dev.log_prob(x_dev)
    assert device_of(lp) == fake_device
    np.testing.assert_allclose(asnumpy(lp), cpu.log_prob(x), rtol=1e-12)
    loss, grads = dev.loss_and_grads(x_dev)
    loss_cpu, grads_cpu = cpu.loss_and_grads(x)
    assert loss == pytest.approx(loss_cpu, rel=1e-12)
    for k in grads_cpu:
        assert device_of(grads[k]) == fake_device
        np.testing.assert_allclose(asnumpy(grads[k]), grads_cpu[k], rtol=1e-10, atol=1e-14)
    for a, b in zip(dev.conditional_moments(x_dev), cpu.conditional_moments(x)):
        np.testing.assert_allclose(asnumpy(a), b, rtol=1e-12)
    if start == "stationary":                                         # same seed, same samples
        np.testing.assert_allclose(asnumpy(dev.sample(4, 7, seed=3)), cpu.sample(4, 7, seed=3), rtol=1e-12)
        np.testing.assert_allclose(asnumpy(dev.autocovariance(5)), cpu.autocovariance(5), rtol=1e-12)
    fit = LinearGaussianAR.fit_closed_form(x_dev, p=p)
    assert fit.device == fake_device
    for k, v in conditional_mle(x, p).items():
        np.testing.assert_allclose(asnumpy(fit.params[k]), v, rtol=1e-10)
    with pytest.raises(ValueError, match="device"):
        dev.log_prob(x)                                               # host data, device params
