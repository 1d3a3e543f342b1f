# %% [markdown]
# # 5. Optimizers: SGD, Nesterov momentum, Adam
#
# Training maximises the likelihood, i.e. minimises the cross-entropy $\frac1n\sum_i -\log p_\theta(\mathbf{x}^i)$.
# The lecture's SGD step on one random example $j$ (and position $t$) is
#
# $$\theta^{(i)} = \theta^{(i-1)} + \eta\, \nabla_\theta \log p_\theta(w^j_t \mid w^j_{<t}),$$
#
# and it suggests adding **momentum** (Nesterov's accelerated gradient, NAG) and **adaptivity** (Adam).
# With $g = \nabla_\theta L$ (the loss is the *negative* log-likelihood, so we step against $g$):
#
# | rule | state | update |
# |---|---|---|
# | SGD | — | $w \leftarrow w - \eta g$ |
# | Nesterov (PyTorch form) | $v$ | $v \leftarrow \mu v + g$, $\;w \leftarrow w - \eta (g + \mu v)$ |
# | Adam | $m, v$, step $t$ | $m \leftarrow \beta_1 m + (1-\beta_1) g$, $v \leftarrow \beta_2 v + (1-\beta_2) g^2$, $w \leftarrow w - \eta \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}$ |
#
# All three are pure, in-place, per-array rules in `scratchnade.optim`; the `SGD`, `Nesterov` and `Adam`
# classes only hold the state and loop over the parameter dict.

# %%
%matplotlib inline
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade import optim
from scratchnade.data import fvsbn_source, minibatches
from scratchnade.models import NADE
from scratchnade.train import fit

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the Nesterov update
#
# Write `my_nesterov_update(w, dw, v, lr, momentum)`: update the velocity `v` and the weights `w` **in place**
# (the optimizer keeps references to these arrays; `v = ...` would only rebind a local name). Return `w`.

# %%
def my_nesterov_update(w, dw, v, lr, momentum):
    """NAG in place: v <- mu v + dw; w <- w - lr (dw + mu v)."""
    # BEGIN SOLUTION update v, then w, both in place (use *=, +=, -=)
    v *= momentum
    v += dw                                                # v = mu v + g
    w -= lr * (dw + momentum * v)                          # look-ahead step
    # END SOLUTION
    return w


w, v = rng.normal(size=5), np.zeros(5)
for step in range(3):
    my_nesterov_update(w, rng.normal(size=5), v, lr=0.1, momentum=0.9)
print("w after 3 steps:", w)

# %% [markdown]
# **Check** against `scratchnade.optim.nesterov_update` over a few steps with the same gradients.

# %%
# Probes: a velocity that does not start at zero, the gradient compared before and after (it is the caller's), then
# one step term by term (v, then w), then a few steps.
pr = np.random.default_rng(51)
w0, v0, g = pr.normal(size=(4, 3)), pr.normal(size=(4, 3)), pr.normal(size=(4, 3))
w1, v1, g_before = w0.copy(), v0.copy(), g.copy()
w2, v2 = w0.copy(), v0.copy()
out = my_nesterov_update(w1, g, v1, 0.05, 0.9)
optim.nesterov_update(w2, g, v2, 0.05, 0.9)
assert np.array_equal(g, g_before), "my_nesterov_update changed the gradient dw: it is the caller's, compute into v and w"
if not np.allclose(v1, v2, atol=1e-12):
    hint = ("v did not change: `v = ...` only rebinds a local name; update it in place (v *= momentum; v += dw)"
            if np.array_equal(v1, v0) else "v <- momentum * v + dw")
    raise AssertionError(f"the velocity differs from optim.nesterov_update: {hint}")
if not np.allclose(w1, w2, atol=1e-12):
    if np.array_equal(w1, w0):
        hint = "w did not change: `w = w - ...` only rebinds a local name; use w -= ..."
    elif np.allclose(w1, w0 - 0.05 * v2):
        hint = "that is classical momentum (w -= lr v); Nesterov's look-ahead steps by lr (dw + momentum v), v the new one"
    else:
        hint = "w <- w - lr (dw + momentum v)"
    raise AssertionError(f"the weights differ from optim.nesterov_update after one step: {hint}")
assert out is w1, "return w, the array you updated in place"
for step in range(5):
    g = pr.normal(size=w1.shape)
    my_nesterov_update(w1, g, v1, 0.05, 0.9)
    optim.nesterov_update(w2, g, v2, 0.05, 0.9)
assert np.allclose(v1, v2, atol=1e-12) and np.allclose(w1, w2, atol=1e-12), "after 6 steps v or w differ"
print("my_nesterov_update matches optim.nesterov_update")

# %% [markdown]
# ## Exercise 2: the Adam update
#
# Write `my_adam_update(w, dw, m, v, t, lr, beta1, beta2, eps)` at step `t = 1, 2, ...`, in place.
# Without the bias corrections $1/(1-\beta^t)$ the first steps would be far too small, since $m$ and $v$ start at 0.

# %%
def my_adam_update(w, dw, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam in place at step t (1-based).  Returns w."""
    # BEGIN SOLUTION the two moment updates in place, the bias corrections, then the step on w
    m *= beta1
    m += (1 - beta1) * dw                                  # first moment
    v *= beta2
    v += (1 - beta2) * dw * dw                             # second moment
    m_hat = m / (1 - beta1**t)                             # bias corrections
    v_hat = v / (1 - beta2**t)
    w -= lr * m_hat / (np.sqrt(v_hat) + eps)
    # END SOLUTION
    return w


w = rng.normal(size=5)
w0, m, v = w.copy(), np.zeros(5), np.zeros(5)
my_adam_update(w, rng.normal(size=5), m, v, t=1, lr=0.1)
print("the first step moves every weight by about lr = 0.1:", w - w0)

# %% [markdown]
# **Check** against `scratchnade.optim.adam_update`.

# %%
# Probes: one step term by term (m, v, then w), the gradient compared before and after; gradients of 1e-9 (where eps
# matters) and of 1e3; then several steps, where a bias correction applied to m or v in place would compound.
pr = np.random.default_rng(52)
lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
for scale in (1.0, 1e-9, 1e3):
    w0, m0, v0 = pr.normal(size=(4, 3)), 0.1 * pr.normal(size=(4, 3)), pr.random((4, 3))
    g = pr.normal(size=(4, 3)) * scale
    v0 = v0 * scale**2
    s1, s2, g_before = [w0.copy(), m0.copy(), v0.copy()], [w0.copy(), m0.copy(), v0.copy()], g.copy()
    out = my_adam_update(s1[0], g, s1[1], s1[2], 3, lr, b1, b2, eps)
    optim.adam_update(s2[0], g, s2[1], s2[2], 3, lr, b1, b2, eps)
    assert np.array_equal(g, g_before), "my_adam_update changed the gradient dw: it is the caller's"
    for name, mine, ref, old, rule in (("m", s1[1], s2[1], m0, "m <- beta1 m + (1 - beta1) dw"),
                                       ("v", s1[2], s2[2], v0, "v <- beta2 v + (1 - beta2) dw^2")):
        if not np.allclose(mine, ref, rtol=1e-10, atol=0):
            if np.array_equal(mine, old):
                hint = f"{name} did not change: `{name} = ...` only rebinds a local name; update it in place"
            elif np.allclose(mine * (1 - (b1 if name == "m" else b2) ** 3), ref, rtol=1e-10, atol=0):
                hint = f"{name} was bias-corrected in place: keep the corrected {name}_hat in a new array"
            else:
                hint = rule
            raise AssertionError(f"{name} differs from optim.adam_update after one step: {hint}")
    if not np.allclose(s1[0], s2[0], rtol=1e-10, atol=1e-12):
        m_hat, v_hat = s2[1] / (1 - b1**3), s2[2] / (1 - b2**3)
        if np.allclose(s1[0], w0 - lr * s2[1] / (np.sqrt(s2[2]) + eps), rtol=1e-10, atol=1e-12):
            hint = "no bias correction: m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)"
        elif np.allclose(s1[0], w0 - lr * m_hat / np.sqrt(v_hat + eps), rtol=1e-10, atol=1e-12):
            hint = f"eps is inside the square root (visible at gradients of {scale:g}): sqrt(v_hat) + eps"
        elif np.allclose(s1[0], w0 - lr * (s2[1] / (1 - b1**2)) / (np.sqrt(s2[2] / (1 - b2**2)) + eps), rtol=1e-10, atol=1e-12):
            hint = "the bias correction uses t - 1: at step t it is 1 - beta^t, t = 1, 2, ..."
        else:
            hint = "w <- w - lr m_hat / (sqrt(v_hat) + eps)"
        raise AssertionError(f"w differs from optim.adam_update after one step with gradients of {scale:g}: {hint}")
    assert out is s1[0], "return w, the array you updated in place"
w1 = pr.normal(size=(4, 3))
s1 = [w1, np.zeros_like(w1), np.zeros_like(w1)]
s2 = [w1.copy(), np.zeros_like(w1), np.zeros_like(w1)]
for t in range(1, 8):
    g = pr.normal(size=w1.shape) * 10.0 ** pr.integers(-3, 3)
    my_adam_update(*s1[:1], g, *s1[1:], t, lr, b1, b2, eps)
    optim.adam_update(*s2[:1], g, *s2[1:], t, lr, b1, b2, eps)
assert all(np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(s1, s2)), "after 7 steps from m = v = 0, w, m or v differ"
print("my_adam_update matches optim.adam_update")

# %% [markdown]
# ## The three on the same model
#
# A NADE with $D = 16$ on samples of a random FVSBN whose entropy is known exactly, so the curves have a floor.
# The same initialisation, the same mini-batches, a learning rate picked per method.

# %%
src = fvsbn_source(D=16, n_train=1000 if FAST else 10000, n_valid=1000, n_test=2000, seed=0, scale=1.5)
valid = list(minibatches(src.valid, 500, shuffle=False))
epochs = 5 if FAST else 40
runs = {"SGD": optim.SGD(lr=0.3), "Nesterov": optim.Nesterov(lr=0.05, momentum=0.9), "Adam": optim.Adam(lr=0.01)}
histories = {}
floor = -float(src.model.log_prob(src.valid.astype(np.float64)).mean())   # the true model on this validation set
for name, opt in runs.items():
    model = NADE(16, H=32, seed=0)
    histories[name] = fit(model, lambda e: minibatches(src.train, 50, rng=e), valid, opt, epochs=epochs, progress=False)
    print(f"{name:9s} best valid NLL {histories[name].best_valid:.3f} nats (true model {floor:.3f}, entropy {src.entropy:.3f})")

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, h in histories.items():
    ax.plot(h.epoch, h.valid_loss, marker=".", label=name)
ax.axhline(floor, color="k", ls="--", lw=1, label="true model on the same data")
ax.set(xlabel="epoch", ylabel="validation NLL (nats)", title="same NADE, three optimizers")
ax.legend()
plt.show()

# %% [markdown]
# ## Validation and early stopping
#
# With little data and a big model, the training loss keeps falling while the validation loss turns up.
# `fit(..., patience=k)` stops after `k` evaluations without a new best validation loss and restores the best
# parameters, the lecture's cheapest regulariser after "more data".

# %%
small_train = src.train[:200]
big = NADE(16, H=512, seed=0)
h = fit(big, lambda e: minibatches(small_train, 10, rng=e), valid, optim.Adam(lr=0.05),
        epochs=30, patience=3, progress=False)
print(f"stopped early: {h.stopped_early} after {len(h.epoch)} epochs; best epoch {h.best_epoch}, "
      f"best valid {h.best_valid:.3f}; last train {h.train_loss[-1]:.3f}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(h.epoch, h.train_loss, label="train")
ax.plot(h.epoch, h.valid_loss, label="valid")
ax.plot([h.best_epoch], [h.best_valid], "ko", mfc="none", label="restored")
ax.set(xlabel="epoch", ylabel="NLL (nats)", title="200 training examples, H = 512: early stopping")
ax.legend()
plt.show()
