# %% [markdown]
# # 1. Autoregressive modelling with a linear Gaussian model
#
# Any joint distribution factors into conditionals by the chain rule:
#
# $$p(\mathbf{x}) = \prod_{t=1}^{T} p(x_t \mid x_{<t}).$$
#
# An autoregressive model learns each conditional $\hat p(x_t \mid x_{<t})$. The lecture's first example is
# the linear Gaussian AR(1) model
#
# $$x_t \sim \mathcal{N}\big(f(x_{<t}), \sigma^2\big), \qquad f(x_{<t}) = \rho\,(x_{t-1} - \mu) + \mu,$$
#
# started from its stationary distribution $x_1 \sim \mathcal{N}\big(\mu, \sigma^2 / (1-\rho^2)\big)$ (which
# exists for $|\rho| < 1$). Because every factor is a Gaussian density, the likelihood is **exact**:
#
# $$\log p(\mathbf{x}) = \log \mathcal{N}\!\Big(x_1;\, \mu, \tfrac{\sigma^2}{1-\rho^2}\Big)
#   + \sum_{t=2}^{T} \log \mathcal{N}\big(x_t;\, \mu + \rho(x_{t-1}-\mu), \sigma^2\big).$$
#
# In this notebook you write that log-likelihood and the closed-form maximum-likelihood fit, and check
# both against `scratchnade.models.LinearGaussianAR`. Its file, `scratchnade/models/gaussian_ar.py`, opens with
# `reference_forward` / `reference_backward`: this log-likelihood as a loop over $t$, one line per equation, and its
# gradient as a reverse loop; `forward` / `backward` below them are the vectorised versions, tested equal.
#
# Data in code are batch-major `(B, T)`: `B` independent sequences of length `T`.

# %%
%matplotlib inline
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade.models import LinearGaussianAR

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")   # CI: smaller data
rng = np.random.default_rng(0)

# %% [markdown]
# ## Sampling: ancestral sampling is the chain rule run forwards
#
# Draw $x_1$ from the stationary start, then $x_t$ given $x_{t-1}$, and so on. `LinearGaussianAR.sample`
# does exactly that. We take a "true" model and draw a data set from it.

# %%
rho_true, mu_true, sigma_true = 0.8, 2.0, 0.5
truth = LinearGaussianAR(p=1, rho=[rho_true], mu=mu_true, sigma=sigma_true, dtype=np.float64)
B, T = (20, 100) if FAST else (200, 200)
x = truth.sample(B, T, seed=1)                              # (B, T)
print("data", x.shape, "mean", x.mean().round(3), "var", x.var().round(3),
      "stationary var", round(sigma_true**2 / (1 - rho_true**2), 3))

fig, ax = plt.subplots(figsize=(8, 2.5))
ax.plot(x[:3].T)
ax.axhline(mu_true, color="k", lw=0.5)
ax.set(xlabel="t", ylabel="$x_t$", title=r"three AR(1) samples, $\rho=0.8$, $\mu=2$, $\sigma=0.5$")
plt.show()

# %% [markdown]
# ## Exercise 1: the exact log-likelihood
#
# Write `ar1_log_prob(x, rho, mu, sigma)` returning $\log p(\mathbf{x}_b)$ for each row of `x`, shape `(B,)`,
# with the stationary start. Use $\log \mathcal{N}(y; m, s^2) = -\tfrac12 \log(2\pi s^2) - \tfrac{(y-m)^2}{2 s^2}$.
# No loop over $t$ is needed: the conditional means of $x_2..x_T$ are one vector expression.

# %%
def gauss_logpdf(y, m, var):
    """log N(y; m, var), elementwise."""
    return -0.5 * np.log(2 * np.pi * var) - 0.5 * (y - m) ** 2 / var


def ar1_log_prob(x, rho, mu, sigma):
    """Exact log p(x_b) of each sequence under the stationary AR(1).  x (B, T) -> (B,)."""
    # BEGIN SOLUTION write the stationary start term plus the sum of the conditional terms
    start = gauss_logpdf(x[:, 0], mu, sigma**2 / (1 - rho**2))          # x_1 ~ N(mu, sigma^2/(1-rho^2))
    mean = mu + rho * (x[:, :-1] - mu)                                   # f(x_<t), t = 2..T
    rest = gauss_logpdf(x[:, 1:], mean, sigma**2).sum(axis=1)            # sum_t log N(x_t; f, sigma^2)
    return start + rest
    # END SOLUTION


mine = ar1_log_prob(x, rho_true, mu_true, sigma_true)
print("log p of the first three sequences:", mine[:3])

# %% [markdown]
# **Check.** The package's `log_prob` computes the same quantity for AR(p); for $p = 1$ they must agree to
# round-off.

# %%
ref = truth.log_prob(x)
assert np.shape(mine) == (B,), f"ar1_log_prob should return one number per sequence, shape ({B},), got {np.shape(mine)}"

# Probes: fresh data and parameters (none 0 or 1), the caller's x compared before and after, then every term on its own.
probe = np.random.default_rng(11).normal(1.0, 1.5, size=(4, 6))
rho_c, mu_c, sigma_c = 0.6, 1.5, 0.7
model_c = LinearGaussianAR(p=1, rho=[rho_c], mu=mu_c, sigma=sigma_c, dtype=np.float64)
before = probe.copy()
got = ar1_log_prob(probe, rho_c, mu_c, sigma_c)
assert np.array_equal(probe, before), "ar1_log_prob changed its input x: compute with new arrays, never assign into x"
assert np.shape(got) == (4,), f"ar1_log_prob should return shape (B,) = (4,), got {np.shape(got)}"
start = ar1_log_prob(probe[:, :1], rho_c, mu_c, sigma_c)             # T = 1: the start term alone
start_ref = model_c.log_prob(probe[:, :1])
if not np.allclose(start, start_ref, atol=1e-10):
    if np.allclose(start, 0):
        hint = "it is missing: add log N(x_1; mu, sigma^2/(1-rho^2))"
    elif np.allclose(start, gauss_logpdf(probe[:, 0], mu_c, sigma_c**2)):
        hint = "it uses the conditional variance sigma^2; the stationary start has variance sigma^2/(1-rho^2)"
    else:
        hint = "it should be log N(x_1; mu, sigma^2/(1-rho^2))"
    raise AssertionError(f"the start term (a sequence of length T = 1) differs from LinearGaussianAR.log_prob: {hint}")
for t in range(1, probe.shape[1]):                                   # the term of x_{t+1}, one at a time
    term = ar1_log_prob(probe[:, :t + 1], rho_c, mu_c, sigma_c) - ar1_log_prob(probe[:, :t], rho_c, mu_c, sigma_c)
    term_ref = model_c.log_prob(probe[:, :t + 1]) - model_c.log_prob(probe[:, :t])
    if not np.allclose(term, term_ref, atol=1e-10):
        prev = probe[:, t - 1]
        if np.allclose(term, gauss_logpdf(probe[:, t], rho_c * prev, sigma_c**2)):
            hint = "the conditional mean is mu + rho (x_{t-1} - mu), not rho x_{t-1}"
        elif np.allclose(term, gauss_logpdf(probe[:, t], mu_c + rho_c * (prev - mu_c), sigma_c**2 / (1 - rho_c**2))):
            hint = "the conditional variance is sigma^2 (the stationary one is only for x_1)"
        else:
            hint = "each row is its own sequence: sum log N(x_t; mu + rho (x_{t-1} - mu), sigma^2) over t within the row"
        raise AssertionError(f"the term log p(x_{t + 1} | x_{t}) differs from LinearGaussianAR.log_prob: {hint}")
err = np.max(np.abs(mine - ref))
assert err < 1e-8, f"ar1_log_prob differs from LinearGaussianAR.log_prob by {err:.3g} on the data"
print(f"max |difference| = {err:.2e}  -- correct")

# %% [markdown]
# ## Exercise 2: maximum likelihood in closed form
#
# If we condition on $x_1$ (drop the start term), maximising the likelihood in $(\rho, \mu, \sigma)$ is
# ordinary least squares: regress $x_t$ on $(1, x_{t-1})$ over every sequence and every $t \ge 2$,
#
# $$x_t = c + \rho\, x_{t-1} + e_t, \qquad \mu = \frac{c}{1-\rho}, \qquad \hat\sigma^2 = \frac1N \sum e_t^2.$$
#
# (With the stationary start the MLE has no closed form, but it differs by $O(1/T)$.) Write `ols_fit(x)`
# returning `(rho, mu, sigma)` as floats. `np.linalg.lstsq` or the normal equations both work.

# %%
def ols_fit(x):
    """Conditional MLE of an AR(1) by least squares.  x (B, T) -> (rho, mu, sigma) floats."""
    # BEGIN SOLUTION regress x_t on (1, x_{t-1}) and convert (c, rho) to (rho, mu, sigma)
    y = x[:, 1:].reshape(-1)                                             # targets x_t      (N,)
    X = np.stack([np.ones_like(y), x[:, :-1].reshape(-1)], axis=1)       # regressors (1, x_{t-1})
    (c, rho), *_ = np.linalg.lstsq(X, y, rcond=None)
    e = y - X @ np.array([c, rho])                                       # residuals
    return float(rho), float(c / (1 - rho)), float(np.sqrt(np.mean(e**2)))
    # END SOLUTION


rho_hat, mu_hat, sigma_hat = ols_fit(x)
print(f"rho {rho_hat:.4f} (true {rho_true}), mu {mu_hat:.4f} (true {mu_true}), sigma {sigma_hat:.4f} (true {sigma_true})")

# %% [markdown]
# **Check** against the package's closed-form fit, `LinearGaussianAR.fit_closed_form`.

# %%
fit = LinearGaussianAR.fit_closed_form(x, p=1, dtype=np.float64)
ref = (float(fit.params["rho"][0]), float(fit.params["mu"]), float(np.exp(fit.params["log_sigma"])))
assert all(isinstance(v, float) for v in (rho_hat, mu_hat, sigma_hat)), "ols_fit should return three floats (rho, mu, sigma)"

# Probes: data of another AR(1) (mu far from 0, so c and mu differ), the caller's x compared before and after.
probe = LinearGaussianAR(p=1, rho=[-0.5], mu=3.0, sigma=2.0, dtype=np.float64).sample(6, 40, seed=12)
before = probe.copy()
got = ols_fit(probe)
assert np.array_equal(probe, before), "ols_fit changed its input x: build new arrays for y and X"
fit_c = LinearGaussianAR.fit_closed_form(probe, p=1, dtype=np.float64)
rho_r, mu_r, sigma_r = float(fit_c.params["rho"][0]), float(fit_c.params["mu"]), float(np.exp(fit_c.params["log_sigma"]))
y, xp = probe[:, 1:].ravel(), probe[:, :-1].ravel()
N = y.size
close = lambda a, b: abs(a - b) < 1e-8 * max(1.0, abs(b))
if not close(got[0], rho_r):
    hint = ("that is the slope without an intercept: regress on (1, x_{t-1})" if close(got[0], float(xp @ y / (xp @ xp)))
            else "pair each x_t with its own x_{t-1}, within a row")
    raise AssertionError(f"rho: yours {got[0]:.6g} vs fit_closed_form {rho_r:.6g}: {hint}")
if not close(got[1], mu_r):
    hint = "that is the intercept c; mu = c / (1 - rho)" if close(got[1], mu_r * (1 - rho_r)) else "mu = c / (1 - rho)"
    raise AssertionError(f"mu: yours {got[1]:.6g} vs fit_closed_form {mu_r:.6g}: {hint}")
if not close(got[2], sigma_r):
    if close(got[2], sigma_r**2):
        hint = "that is the variance; sigma is its square root"
    elif close(got[2], sigma_r * np.sqrt(N / (N - 2))) or close(got[2], sigma_r * np.sqrt(N / (N - 1))):
        hint = "the MLE divides the sum of squared residuals by N, not N - 1 or N - 2"
    else:
        hint = "sigma = sqrt(mean of the squared residuals e_t = x_t - c - rho x_{t-1})"
    raise AssertionError(f"sigma: yours {got[2]:.6g} vs fit_closed_form {sigma_r:.6g}: {hint}")
for name, a, b in zip(("rho", "mu", "sigma"), (rho_hat, mu_hat, sigma_hat), ref):
    assert abs(a - b) < 1e-8 * max(1.0, abs(b)), f"{name}: yours {a:.6g} vs fit_closed_form {b:.6g}"
print("ols_fit matches fit_closed_form:", np.round(ref, 4))

# %% [markdown]
# ## The MLE by gradient descent lands on the same point
#
# `loss_and_grads` returns the mean NLL and its hand-written gradient. With the *conditional* likelihood,
# Adam from $\rho = 0$ walks to the least-squares answer.

# %%
from scratchnade.optim import Adam

model = LinearGaussianAR(p=1, start="conditional", dtype=np.float64)
opt = Adam(lr=0.05)
losses = []
for step in range(300 if FAST else 1500):
    loss, grads = model.loss_and_grads(x)
    opt.step(model.params, grads)
    losses.append(loss)
gd = (float(model.params["rho"][0]), float(model.params["mu"]), float(np.exp(model.params["log_sigma"])))
print("gradient descent:", np.round(gd, 4), " closed form:", np.round(ref, 4))
assert abs(gd[0] - ref[0]) < 0.05, "gradient descent should approach the closed-form rho"

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(losses)
ax.set(xlabel="Adam step", ylabel="mean NLL per sequence", yscale="symlog", title="fitting AR(1) by gradient")
plt.show()

# %% [markdown]
# ## Exact likelihood = a sanity check for free
#
# The average NLL per step of the data under the true model is close to the entropy rate of the
# process, $\tfrac12\log(2\pi e \sigma^2)$ nats per step (the start term is one step out of $T$).

# %%
nll_per_step = -truth.log_prob(x).mean() / T
entropy_rate = 0.5 * np.log(2 * np.pi * np.e * sigma_true**2)
print(f"NLL under the true model {nll_per_step:.4f} nats/step, entropy rate {entropy_rate:.4f}")
