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
# and against the package's `numerical_grad`; `theta` must come back unchanged.

# %%
theta_before = theta.copy()
u = np.tanh(A @ theta)
g_true = A.T @ (2 * u * (1 - u**2))
err = rel_error(g_num, g_true)
assert np.array_equal(theta, theta_before), "my_numerical_grad must restore x exactly"
assert err < 1e-8, f"relative error {err:.2e} to the analytic gradient: centred (f+ - f-) / 2h ?"
assert rel_error(g_num, numerical_grad(f, theta)) < 1e-9, "differs from scratchnade.gradcheck.numerical_grad"
print(f"relative error to the analytic gradient: {err:.1e}")

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
errors = {k: rel_error(numerical_grad(lambda: tiny_nade_forward(tiny, x)[0], tiny[k]), fixed[k]) for k in tiny}
print(format_table(errors))
assert max(errors.values()) < 1e-7, "some gradient still disagrees with finite differences (see the table)"
ref = nade.backward(1.0, nade.forward(tiny, x)[1])
assert all(rel_error(fixed[k], ref[k]) < 1e-9 for k in ref), "differs from scratchnade.models.nade.backward"
print("fixed: every gradient passes")
