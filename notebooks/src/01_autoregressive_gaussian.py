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
err = np.max(np.abs(mine - ref))
assert mine.shape == (B,), f"ar1_log_prob should return one number per sequence, shape ({B},), got {mine.shape}"
assert err < 1e-8, f"ar1_log_prob differs from LinearGaussianAR.log_prob by {err:.3g}: check the start term"
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
