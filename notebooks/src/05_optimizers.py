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
w1, w2 = rng.normal(size=(4, 3)), None
w2 = w1.copy()
v1, v2 = np.zeros_like(w1), np.zeros_like(w1)
for step in range(5):
    g = rng.normal(size=w1.shape)
    my_nesterov_update(w1, g, v1, 0.05, 0.9)
    optim.nesterov_update(w2, g, v2, 0.05, 0.9)
assert np.allclose(v1, v2, atol=1e-12), "the velocity differs: v <- momentum * v + dw, in place"
assert np.allclose(w1, w2, atol=1e-12), "the weights differ: w <- w - lr * (dw + momentum * v), in place"
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
w1 = rng.normal(size=(4, 3))
w2 = w1.copy()
s1 = [np.zeros_like(w1), np.zeros_like(w1)]
s2 = [np.zeros_like(w1), np.zeros_like(w1)]
for t in range(1, 8):
    g = rng.normal(size=w1.shape) * 10.0 ** rng.integers(-3, 3)
    my_adam_update(w1, g, *s1, t, 0.01, 0.9, 0.999, 1e-8)
    optim.adam_update(w2, g, *s2, t, 0.01, 0.9, 0.999, 1e-8)
assert np.allclose(s1[0], s2[0], atol=1e-12) and np.allclose(s1[1], s2[1], atol=1e-12), "m or v differs"
assert np.allclose(w1, w2, atol=1e-10), "w differs: bias-correct m and v with 1 - beta^t, eps after the sqrt"
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
