# %% [markdown]
# # 3. Gradient checking
#
# Every model in `scratchnade` has a hand-written backward pass. A backward pass is only trusted after it
# agrees with the **centred finite difference**
#
# $$\frac{\partial f}{\partial \theta_i} \approx \frac{f(\theta + h e_i) - f(\theta - h e_i)}{2h},$$
#
# whose error is $O(h^2)$ (the one-sided difference is only $O(h)$). We compare with the relative error
#
# $$\text{rel}(a, b) = \frac{\max_i |a_i - b_i|}{\max_i (|a_i| + |b_i|)},$$
#
# which in float64 is $\lesssim 10^{-7}$ for a correct gradient and $\gtrsim 10^{-2}$ for a wrong one.

# %%
%matplotlib inline
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade.gradcheck import check_directional, check_model, format_table, numerical_grad, rel_error
from scratchnade.models import NADE

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: `numerical_grad`
#
# Write `my_numerical_grad(f, x, h)`: `f` takes no argument and reads the array `x` (e.g. through a
# parameter dict), so perturb `x` **in place**, one entry at a time, and put each entry back exactly.
# `np.ndindex(*x.shape)` walks every index.

# %%
def my_numerical_grad(f, x, h=1e-5):
    """Centred differences of scalar f() w.r.t. every entry of x (modified in place, restored)."""
    grad = np.zeros_like(x)
    # BEGIN SOLUTION loop over every index i: evaluate f at x_i + h and x_i - h, restore x_i
    for i in np.ndindex(*x.shape):
        old = x[i]
        x[i] = old + h
        f_plus = f()                                       # f(x + h e_i)
        x[i] = old - h
        f_minus = f()                                      # f(x - h e_i)
        x[i] = old                                         # restore
        grad[i] = (f_plus - f_minus) / (2 * h)
    # END SOLUTION
    return grad


A = rng.normal(size=(3, 4))
theta = rng.normal(size=(4,))
f = lambda: np.sum(np.tanh(A @ theta) ** 2)                # a small nonlinear f(theta)
g_num = my_numerical_grad(f, theta)
print("numerical gradient:", g_num)

# %% [markdown]
# **Check** against the analytic gradient $\nabla_\theta \sum_j \tanh(A\theta)_j^2 = A^\top\big(2\tanh(A\theta)(1-\tanh^2(A\theta))\big)$
# and against the package's `numerical_grad`, on a fresh 2-D `theta2` whose copy is taken *before* the call: it must come
# back exactly unchanged.

# %%
# Probes: a 2-D x (every index, not only rows), its copy taken BEFORE the call, so "restored" is a real comparison.
pr = np.random.default_rng(31)
A2 = pr.normal(size=(3, 6))
theta2 = pr.normal(size=(2, 3))
f2 = lambda: np.sum(np.tanh(A2 @ theta2.ravel()) ** 2)
theta2_before = theta2.copy()
g2 = my_numerical_grad(f2, theta2)
if not np.array_equal(theta2, theta2_before):
    off = np.max(np.abs(theta2 - theta2_before))
    raise AssertionError(
        f"my_numerical_grad did not restore x exactly (off by up to {off:.1e}): " + (
            "(x + h) - 2h + h is not x in floating point; save the old value and assign it back" if off < 1e-8
            else "put every x_i back to its old value after the two evaluations"))
assert np.shape(g2) == theta2.shape, f"the gradient should have the shape of x, {theta2.shape}, got {np.shape(g2)}"
u2 = np.tanh(A2 @ theta2.ravel())
g2_true = (A2.T @ (2 * u2 * (1 - u2**2))).reshape(theta2.shape)
err2 = rel_error(g2, g2_true)
if not err2 < 1e-8:
    if not np.any(g2):
        hint = "f never changed: perturb the entries of x itself, in place, not a copy of x"
    elif np.allclose(g2, 2 * g2_true, rtol=1e-6):
        hint = "twice the gradient: the centred difference divides by 2h"
    elif err2 < 1e-3:
        hint = "an O(h) error: the one-sided (f(x+h) - f(x)) / h; use the centred (f(x+h) - f(x-h)) / 2h"
    else:
        hint = "each entry i: (f(x + h e_i) - f(x - h e_i)) / 2h, for every index of a 2-D x (np.ndindex)"
    raise AssertionError(f"relative error {err2:.2e} to the analytic gradient: {hint}")
assert rel_error(g2, numerical_grad(f2, theta2)) < 1e-9, "differs from scratchnade.gradcheck.numerical_grad"
print(f"relative error to the analytic gradient: {err2:.1e}; x restored exactly")

# %% [markdown]
# ## Why float64: the same check in float32 fails
#
# In float32 the loss is only known to ~$10^{-7}$ relative, so $f(\theta+h) - f(\theta-h)$ with $h = 10^{-5}$
# loses most of its digits: round-off $/\,2h$ swamps the $O(h^2)$ truncation error. Below, the *same*
# correct NADE gradient checked in float32 and in float64.

# %%
from scratchnade.models import nade

D, H = 12, 6
x = (rng.random((8, D)) < 0.5).astype(np.float64)
for dtype in (np.float32, np.float64):
    m = NADE(D, H, seed=0, dtype=dtype, init_scale=1.0)
    _, grads = m.loss_and_grads(x)
    Wp = m.params["W"]
    loss_fn = lambda: float(nade.forward(m.params, x.astype(dtype))[0])
    num = my_numerical_grad(loss_fn, Wp)
    print(f"{np.dtype(dtype).name}: rel error of dW = {rel_error(num, grads['W']):.1e}")

# %% [markdown]
# ## Every parameter of a model, and the directional check
#
# `check_model` checks every entry of every parameter (2 loss calls per entry). For big models, Chainer's
# **directional check** compares $\big(f(\theta + h u) - f(\theta - hu)\big)/2h$ with $\langle \nabla f, u\rangle$
# for a few random unit directions $u$: 2 loss calls per direction, whatever the size.

# %%
small = NADE(D, H, seed=0, dtype=np.float64, init_scale=1.0)
print(format_table(check_model(small, x)))
big = NADE(784, 50 if FAST else 500, seed=0, dtype=np.float64, init_scale=0.1)
xb = (rng.random((4, 784)) < 0.3).astype(np.float64)
print(format_table(check_model(big, xb, n_directions=3)))

# %% [markdown]
# ## Exercise 2: find the bug
#
# Below is a compact (not fast: $O(D^2H)$) NADE,
#
# $$\mathbf{h}_t = \text{sigmoid}\Big(\mathbf{c} + \sum_{s<t} W_{:,s}\, x_s\Big), \qquad
#   p(x_t = 1 \mid x_{<t}) = \text{sigmoid}(b_t + V_t \cdot \mathbf{h}_t),$$
#
# and a backward pass with **one planted mistake**. First run the check cell: it tells you which parameter is
# wrong. Then write a corrected `tiny_nade_backward_fixed`.

# %%
def tiny_nade_forward(params, x):
    """Mean NLL.  x (B, D) -> (loss, cache).  Masks instead of the running sum."""
    W, c, V, b = params["W"], params["c"], params["V"], params["b"]
    B, D = x.shape
    m = np.tri(D, D, -1)                                   # m_ts = 1[s < t]
    A = c + np.einsum("bs,ts,hs->bth", x, m, W)            # pre-activations a_t  (B, D, H)
    h = 1 / (1 + np.exp(-A))                               # h_t
    l = b + np.einsum("bth,th->bt", h, V)                  # logits l_t          (B, D)
    loss = (np.logaddexp(0, l) - x * l).sum() / B
    return loss, (x, m, h, l, params)


def tiny_nade_backward_buggy(cache):
    x, m, h, l, params = cache
    B = x.shape[0]
    dl = (1 / (1 + np.exp(-l)) - x) / B                    # dL/dl_t
    dh = dl[:, :, None] * params["V"]                      # dL/dh_t
    dA = dh * h * (1 - h)                                  # through the sigmoid
    dW = np.einsum("bth,ts,bs->hs", dA, np.tri(*m.shape), x)
    return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}


tiny = {k: v.copy() for k, v in small.params.items()}
buggy = tiny_nade_backward_buggy(tiny_nade_forward(tiny, x)[1])
errors = {k: rel_error(my_numerical_grad(lambda: tiny_nade_forward(tiny, x)[0], tiny[k]), buggy[k]) for k in tiny}
print(format_table(errors))

# %%
def tiny_nade_backward_fixed(cache):
    """The corrected backward pass of tiny_nade_forward: {W, c, V, b}."""
    x, m, h, l, params = cache
    # BEGIN SOLUTION copy the buggy version and fix the one wrong line (the table says which gradient)
    B = x.shape[0]
    dl = (1 / (1 + np.exp(-l)) - x) / B                    # dL/dl_t
    dh = dl[:, :, None] * params["V"]                      # dL/dh_t
    dA = dh * h * (1 - h)                                  # through the sigmoid
    dW = np.einsum("bth,ts,bs->hs", dA, m, x)              # the bug: np.tri(D, D) let x_t reach h_t
    return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
    # END SOLUTION


fixed = tiny_nade_backward_fixed(tiny_nade_forward(tiny, x)[1])
print(sorted(fixed))

# %% [markdown]
# **Check**: every gradient of the fixed version against finite differences, and against the package's
# O(DH) NADE on the same parameters.

# %%
# Probes: every parameter drawn at random, both binary values at every position, the cache compared before and
# after, a second call compared with the first, then each gradient against the package's NADE.
pr = np.random.default_rng(32)
Dc, Hc, Bc = 6, 4, 10
tiny_c = {"W": pr.normal(size=(Hc, Dc)), "c": pr.normal(size=Hc), "V": pr.normal(size=(Dc, Hc)), "b": pr.normal(size=Dc)}
x_c = (pr.random((Bc, Dc)) < 0.5).astype(np.float64)
x_c[0], x_c[1] = 0.0, 1.0
cache_c = tiny_nade_forward(tiny_c, x_c)[1]
before = [np.copy(v) for v in cache_c[:4]]
g1 = tiny_nade_backward_fixed(cache_c)
g2 = tiny_nade_backward_fixed(cache_c)
for name, arr, old in zip(("x", "m", "h", "l"), cache_c[:4], before):
    assert np.array_equal(arr, old), f"tiny_nade_backward_fixed changed its cache ({name}): compute into new arrays"
assert sorted(g1) == ["V", "W", "b", "c"], f"return the gradients of W, c, V, b, got keys {sorted(g1)}"
ref_c = nade.backward(1.0, nade.forward(tiny_c, x_c)[1])
for k in ref_c:
    assert np.shape(g1[k]) == np.shape(tiny_c[k]), f"d{k} should have the shape of {k}, {np.shape(tiny_c[k])}, got {np.shape(g1[k])}"
    assert np.array_equal(g1[k], g2[k]), f"a second call gives another d{k}"
_, _, h_c, l_c = cache_c[:4]
dA_c = ((1 / (1 + np.exp(-l_c)) - x_c) / Bc)[:, :, None] * tiny_c["V"] * h_c * (1 - h_c)
if all(np.allclose(g1[k], Bc * ref_c[k]) for k in ref_c):
    raise AssertionError(f"every gradient is B = {Bc} times too large: dl = (sigmoid(l) - x) / B")
if np.allclose(g1["W"] - ref_c["W"], np.einsum("bth,bt->ht", dA_c, x_c)):
    raise AssertionError("dW still collects dA_t x_t (s = t): x_t must only reach h_t' for t' > t, use the strict mask m")
for k in ("b", "V", "c", "W"):
    assert rel_error(g1[k], ref_c[k]) < 1e-9, f"d{k} differs from scratchnade.models.nade.backward (relative error {rel_error(g1[k], ref_c[k]):.1e})"
errors = {k: rel_error(numerical_grad(lambda: tiny_nade_forward(tiny, x)[0], tiny[k]), fixed[k]) for k in tiny}
print(format_table(errors))
assert max(errors.values()) < 1e-7, "some gradient still disagrees with finite differences (see the table)"
print("fixed: every gradient passes")
