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
# Probes: b and W drawn fully at random (the diagonal and the upper triangle too: a mask bug must show), both binary
# values at every position, the caller's arrays compared before and after.
pr = np.random.default_rng(21)
Dc, Bc = 5, 12
b_c, W_c = pr.normal(size=Dc), pr.normal(size=(Dc, Dc))
x_c = (pr.random((Bc, Dc)) < 0.5).astype(np.float64)
x_c[0], x_c[1] = 0.0, 1.0
before = [b_c.copy(), W_c.copy(), x_c.copy()]
loss_c, a_c = masked_forward(b_c, W_c, x_c)
for name, arr, old in zip(("b", "W", "x"), (b_c, W_c, x_c), before):
    assert np.array_equal(arr, old), f"masked_forward changed its input {name}: mask a copy (W * m), never W in place"
assert np.shape(a_c) == (Bc, Dc), f"the logits a should have shape (B, D) = ({Bc}, {Dc}), got {np.shape(a_c)}"
assert np.ndim(loss_c) == 0, f"the loss should be one number, got shape {np.shape(loss_c)}"
for t, s in np.ndindex(Dc, Dc):                           # one entry of W at a time: which logit does it reach?
    E = np.zeros((Dc, Dc))
    E[t, s] = 1.0
    reach = masked_forward(np.zeros(Dc), E, np.ones((1, Dc)))[1][0]
    want = np.eye(Dc)[t] * (s < t)
    if not np.allclose(reach, want):
        if s == t:
            msg = f"a_{t} reads x_{t} through W[{t}, {t}]: the mask must be strictly lower, m = np.tri(D, D, -1)"
        elif s > t:
            msg = f"the future leaks: W[{t}, {s}] (s > t) reaches the logits; keep only s < t"
        else:
            msg = f"W[{t}, {s}] should act on a_{t} (row t of W, times x_s), it reached a_{list(np.flatnonzero(reach))}: a = b + x (W * m)^T"
        raise AssertionError(msg)
ref_loss_c, ref_cache_c = fvsbn.forward({"b": b_c, "W": W_c}, x_c)
assert np.allclose(masked_forward(b_c, np.zeros((Dc, Dc)), x_c)[1], b_c), "with W = 0 the logits must be the bias b"
assert np.allclose(a_c, ref_cache_c.a, atol=1e-12), "your logits differ from fvsbn.forward's"
if not abs(loss_c - float(ref_loss_c)) < 1e-10:
    ratio = loss_c / float(ref_loss_c)
    hint = (f"{ratio:.3g} times too large: the mean over the batch divides the sum by B" if np.isclose(ratio, Bc)
            else f"{ratio:.3g} times too small: sum over t, divide by B only" if np.isclose(ratio, 1 / Dc)
            else "the NLL of each logit is softplus(a) - x a")
    raise AssertionError(f"loss {loss_c:.6g} vs fvsbn.forward {float(ref_loss_c):.6g}: {hint}")
with np.errstate(over="ignore", invalid="ignore"):          # extreme logits: finite, and equal to the package's
    for shift in (1000.0, -1000.0):
        big_loss = masked_forward(b_c + shift, W_c, x_c)[0]
        ref_big = float(fvsbn.forward({"b": b_c + shift, "W": W_c}, x_c)[0])
        assert np.isfinite(big_loss) and abs(big_loss - ref_big) < 1e-8 * abs(ref_big), \
            f"with logits near {shift:+.0f} the loss is {big_loss} (fvsbn.forward: {ref_big:.6g}): " \
            "log(1 + exp(a)) overflows and log(sigmoid) underflows, use the stable softplus np.logaddexp(0, a) - x a"
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
# Probes: the logits of fully random b, W; both binary values at every position; the inputs compared before and after
# and a second call compared with the first.
pr = np.random.default_rng(22)
Dc, Bc = 5, 12
b_c, W_c = pr.normal(size=Dc), pr.normal(size=(Dc, Dc))
x_c = (pr.random((Bc, Dc)) < 0.5).astype(np.float64)
x_c[0], x_c[1] = 0.0, 1.0
ref_loss_c, cache_c = fvsbn.forward({"b": b_c, "W": W_c}, x_c)
ref_c = fvsbn.backward(1.0, cache_c)
a_c = np.array(cache_c.a)
before = [a_c.copy(), x_c.copy()]
db_c, dW_c = masked_backward(a_c, x_c)
for name, arr, old in zip(("a", "x"), (a_c, x_c), before):
    assert np.array_equal(arr, old), f"masked_backward changed its input {name}: compute da in a new array"
assert np.shape(db_c) == (Dc,), f"db should have shape (D,) = ({Dc},), got {np.shape(db_c)}: sum da over the batch"
assert np.shape(dW_c) == (Dc, Dc), f"dW should have shape (D, D) = ({Dc}, {Dc}), got {np.shape(dW_c)}"
again = masked_backward(a_c, x_c)
assert np.array_equal(again[0], db_c) and np.array_equal(again[1], dW_c), "a second call gives other gradients"


def scale_hint(mine, theirs, name):
    """What a gradient that differs from the package's looks like: a sign, a factor B, or just different."""
    r = float(np.sum(mine * theirs) / np.sum(theirs * theirs))
    if np.allclose(mine, -theirs):
        return f"{name} has the wrong sign: dL/da = sigmoid(a) - x"
    if np.isclose(r, Bc) and np.allclose(mine, r * theirs):
        return f"{name} is B = {Bc} times too large: da = (sigmoid(a) - x) / B for the mean over the batch"
    return f"{name}: relative error {rel_error(mine, theirs):.2e} vs fvsbn.backward"


assert rel_error(db_c, ref_c["b"]) < 1e-10, scale_hint(db_c, ref_c["b"], "db")
m_c = np.tri(Dc, Dc, -1)
if not np.all(dW_c[m_c == 0] == 0):
    where = "on the diagonal (the mask must be strictly lower: np.tri(D, D, -1))" if np.any(np.diag(dW_c)) \
        else "above the diagonal (multiply by the mask m)"
    raise AssertionError(f"dW must be exactly zero on and above the diagonal; yours is not zero {where}")
da_c = (sigmoid(a_c) - x_c) / Bc
if np.allclose(dW_c, (x_c.T @ da_c) * m_c) and not np.allclose(dW_c, ref_c["W"]):
    raise AssertionError("dW is transposed: dW[t, s] = sum_b da[b, t] x[b, s], i.e. da.T @ x, then the mask")
assert rel_error(dW_c, ref_c["W"]) < 1e-10, scale_hint(dW_c, ref_c["W"], "dW")
Wc, bc = W_c.copy(), b_c.copy()
num_W = numerical_grad(lambda: masked_forward(bc, Wc, x_c)[0], Wc)
num_b = numerical_grad(lambda: masked_forward(bc, Wc, x_c)[0], bc)
print(f"finite differences: rel error dW {rel_error(dW_c, num_W):.1e}, db {rel_error(db_c, num_b):.1e}")
assert rel_error(dW_c, num_W) < 1e-7 and rel_error(db_c, num_b) < 1e-7, "backward disagrees with finite differences"
print("backward matches fvsbn.backward and finite differences")

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
