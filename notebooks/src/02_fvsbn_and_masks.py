# %% [markdown]
# # 2. Fully-visible sigmoid belief networks and masks
#
# **Binary FVSBN** (lecture, Definition 1). For $\mathbf{x} \in \{0,1\}^D$,
#
# $$x_t \sim \text{Bernoulli}\big(\text{sigmoid}(f_t(x_{<t}))\big), \qquad f_t(x_{<t}) = \langle P_{<t}, x_{<t}\rangle,$$
#
# with $x_1 \sim \text{Bernoulli}(\text{sigmoid}(P_0))$ (the slide's "$P_0$" read as a bias). The package also
# has the general (matrix) form of Frey (1998): a bias $b \in \mathbb{R}^D$ and a strictly lower-triangular
# $W \in \mathbb{R}^{D\times D}$,
#
# $$a_t = b_t + \sum_{s<t} W_{t,s}\, x_s .$$
#
# **Masks.** With $\mathbf{m} \in \{0,1\}^{D\times D}$, $\mathbf{m}_{t,s} = \mathbf{1}_{s<t}$, all $D$ logits are one
# matrix product, $a = b + (W \odot \mathbf{m})\,x$: the loop over $t$ disappears, and the masked entries of $W$
# can never leak the future into the past. `scratchnade/models/fvsbn.py` holds both: `reference_forward` is the loop
# over $t$ (read it first), `forward` the masked product; the tests prove them equal.
#
# The loss is the negative log-likelihood $-\log p(\mathbf{x}) = \sum_t \text{softplus}(a_t) - x_t a_t$,
# averaged over the batch.

# %%
%matplotlib inline
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade.data.synthetic import fvsbn_source
from scratchnade.gradcheck import numerical_grad, rel_error
from scratchnade.models import FVSBN, fvsbn

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# ## The loop and the mask give the same logits
#
# `fvsbn.logits_loop` follows the definition, one $t$ at a time; `fvsbn.logits_masked` is one matmul.

# %%
D = 8
model = FVSBN(D, form="matrix", seed=0, dtype=np.float64, init_scale=1.0)
x = (rng.random((5, D)) < 0.5).astype(np.float64)
a_loop = fvsbn.logits_loop(model.params, x)
a_mask = fvsbn.logits_masked(model.params, x)
print("max |loop - masked| =", np.abs(a_loop - a_mask).max())
print("mask m (D = 4):\n", fvsbn.mask(4, np.float64, np))

# %% [markdown]
# Timing on a larger problem shows why we mask: the loop makes $D$ small matmuls, the mask one big one.

# %%
Dbig = 200 if FAST else 784
big = FVSBN(Dbig, seed=0, dtype=np.float32)
xb = (rng.random((256, Dbig)) < 0.5).astype(np.float32)
for name, f in (("loop", fvsbn.logits_loop), ("masked", fvsbn.logits_masked)):
    t0 = time.perf_counter()
    f(big.params, xb)
    print(f"{name:6s}: {1e3 * (time.perf_counter() - t0):7.2f} ms for B=256, D={Dbig}")

# %% [markdown]
# ## Exercise 1: the masked forward pass
#
# Write `masked_forward(b, W, x)` returning the mean NLL `loss` and the logits `a` (needed by the backward).
# Use the mask (`np.tri(D, D, -1)`), one matmul, and a *stable* softplus: `np.logaddexp(0, a)` computes
# $\log(1 + e^{a})$ without overflow.

# %%
def masked_forward(b, W, x):
    """Mean NLL of a binary FVSBN (matrix form).  b (D,), W (D, D), x (B, D) -> (loss, a (B, D))."""
    B, D = x.shape
    # BEGIN SOLUTION compute a = b + x (W * m)^T and the mean over the batch of sum_t softplus(a_t) - x_t a_t
    m = np.tri(D, D, -1)                                   # m_{t,s} = 1[s < t]
    a = b + x @ (W * m).T                                  # a_t = b_t + sum_{s<t} W_ts x_s
    loss = (np.logaddexp(0.0, a) - x * a).sum() / B        # mean over b of sum_t NLL_t
    # END SOLUTION
    return loss, a


b, W = model.params["b"], model.params["W"]
loss, a = masked_forward(b, W, x)
print("loss", loss)

# %% [markdown]
# **Check** against the package's `fvsbn.forward`.

# %%
ref_loss, cache = fvsbn.forward(model.params, x)
assert np.allclose(a, cache.a, atol=1e-12), "your logits differ from fvsbn.forward's: is the mask strictly lower (s < t)?"
assert abs(loss - float(ref_loss)) < 1e-10, f"loss {loss} vs fvsbn.forward {float(ref_loss)}: mean over the batch?"
print("forward matches fvsbn.forward")

# %% [markdown]
# ## Exercise 2: the backward pass
#
# With $\partial\,\text{NLL}/\partial a_t = \text{sigmoid}(a_t) - x_t$ (divided by $B$ for the mean),
#
# $$\frac{\partial L}{\partial b} = \sum_b \delta a_b, \qquad \frac{\partial L}{\partial W} = (\delta a^\top x) \odot \mathbf{m}.$$
#
# Write `masked_backward(a, x)` returning `(db, dW)`. Entries above the diagonal must get exactly zero gradient.

# %%
def sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))                  # stable for any u


def masked_backward(a, x):
    """Gradients of masked_forward's loss.  a, x (B, D) -> db (D,), dW (D, D)."""
    B, D = x.shape
    # BEGIN SOLUTION da = (sigmoid(a) - x) / B, then db and the masked dW
    da = (sigmoid(a) - x) / B                              # dL/da
    db = da.sum(axis=0)                                    # dL/db
    dW = (da.T @ x) * np.tri(D, D, -1)                     # dL/dW, zero where masked
    # END SOLUTION
    return db, dW


db, dW = masked_backward(a, x)
print("|db| =", np.linalg.norm(db), " |dW| =", np.linalg.norm(dW))

# %% [markdown]
# **Check** against the package's `fvsbn.backward` and against centred finite differences.

# %%
ref = fvsbn.backward(1.0, cache)
assert rel_error(db, ref["b"]) < 1e-10, f"db: relative error {rel_error(db, ref['b']):.2e} vs fvsbn.backward"
assert rel_error(dW, ref["W"]) < 1e-10, f"dW: relative error {rel_error(dW, ref['W']):.2e} vs fvsbn.backward"
assert np.all(np.triu(dW) == 0), "dW must be exactly zero on and above the diagonal"
Wc, bc = W.copy(), b.copy()
num_W = numerical_grad(lambda: masked_forward(bc, Wc, x)[0], Wc)
num_b = numerical_grad(lambda: masked_forward(bc, Wc, x)[0], bc)
print(f"finite differences: rel error dW {rel_error(dW, num_W):.1e}, db {rel_error(db, num_b):.1e}")
assert rel_error(dW, num_W) < 1e-7 and rel_error(db, num_b) < 1e-7, "backward disagrees with finite differences"

# %% [markdown]
# ## Training a FVSBN on samples of a known FVSBN
#
# `fvsbn_source` samples a random "true" FVSBN whose entropy is computed exactly (by summing over all
# $2^D$ vectors), so we know the best achievable test NLL.

# %%
from scratchnade.data import minibatches
from scratchnade.optim import Adam
from scratchnade.train import fit

src = fvsbn_source(D=10, n_train=2000 if FAST else 20000, seed=0, scale=1.5)
learner = FVSBN(10, seed=1)
hist = fit(learner, lambda e: minibatches(src.train, 100, rng=e), list(minibatches(src.valid, 500, shuffle=False)),
           Adam(lr=0.02), epochs=5 if FAST else 30, progress=False)
test_nll = -float(learner.log_prob(src.test.astype(np.float32)).mean())
truth_nll = -float(src.model.log_prob(src.test.astype(np.float64)).mean())   # the floor on this finite test set
print(f"test NLL {test_nll:.3f} nats; the true model on the same test set {truth_nll:.3f} "
      f"(gap {test_nll - truth_nll:+.3f}); true entropy {src.entropy:.3f}")

# %% [markdown]
# ## The softmax FVSBN
#
# For tokens $w_t$ from a vocabulary of size $d$ (Definition 2):
# $f_t = b_t + \sum_{s<t} P_s \mathbf{x}_s$ and $w_t \sim \text{Categorical}(\text{softmax}(f_t))$. With one-hot
# $\mathbf{x}_s$, $P_s \mathbf{x}_s$ is just the column $P_s[:, w_s]$: a gather, never a one-hot vector.
# Normalisation is easy to verify: for $V = 3$, $p = 3$ the $27$ probabilities sum to one.

# %%
import itertools

from scratchnade.models import SoftmaxFVSBN, softmax_fvsbn

V, p = 3, 3
sm = SoftmaxFVSBN(V, p=p, seed=0, dtype=np.float64)
for k in ("b", "P"):
    sm.params[k] = np.random.default_rng(1).normal(0.0, 1.0, sm.params[k].shape)
w_all = np.array(list(itertools.product(range(V), repeat=p))).T      # (p, V^p) time-major
f = softmax_fvsbn.logits(sm.params, w_all)                           # (p, V^p, V)
logq = f - np.log(np.exp(f).sum(axis=-1, keepdims=True))
total = np.exp(np.take_along_axis(logq, w_all[..., None], -1)[..., 0].sum(axis=0)).sum()
print(f"sum over all {V**p} sequences of p(w) = {total:.12f}")
assert abs(total - 1) < 1e-10
