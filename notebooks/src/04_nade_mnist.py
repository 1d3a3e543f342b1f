# %% [markdown]
# # 4. NADE on binarized MNIST
#
# The FVSBN gives every conditional its own logistic regression: $O(D^2)$ parameters. **NADE** (Larochelle &
# Murray, 2011) puts a hidden layer in between and *shares* the input weights across positions:
#
# $$\mathbf{h}_t = \text{sigmoid}\Big(\mathbf{c} + \sum_{s<t} W_{:,s}\, x_s\Big), \qquad
#   p(x_t = 1 \mid x_{<t}) = \text{sigmoid}\big(b_t + V_t \cdot \mathbf{h}_t\big),$$
#
# with $W \in \mathbb{R}^{H\times D}$, $\mathbf{c} \in \mathbb{R}^H$, $V \in \mathbb{R}^{D\times H}$, $b \in \mathbb{R}^D$
# (the lecture's $k$ is our $H$). Because the pre-activation grows by one column at a time,
#
# $$\mathbf{a}_1 = \mathbf{c}, \qquad \mathbf{a}_{t+1} = \mathbf{a}_t + W_{:,t}\, x_t, \qquad \mathbf{h}_t = \text{sigmoid}(\mathbf{a}_t),$$
#
# all $D$ conditionals cost $O(DH)$, not $O(D^2H)$. This **running sum** is the whole trick, and the backward
# pass runs it in reverse: $\partial L/\partial W_{:,t} = x_t \sum_{t'>t} \partial L/\partial \mathbf{a}_{t'}$.
#
# In the package, `reference_forward` / `reference_backward` in `scratchnade/models/nade.py` are this running sum as a
# loop over $t$, one line per equation: read them first. `forward` / `backward` add one trick, explained in their
# docstrings (binary $x$: $\mathbf{a}_t$ only moves where $x_{t-1} = 1$), and the tests prove the two tiers equal.

# %%
%matplotlib inline
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade.checkpoint import load_checkpoint
from scratchnade.data import MissingDataError, load_binarized_mnist, minibatches, random_fvsbn, sample_dataset
from scratchnade.gradcheck import check_grads, rel_error
from scratchnade.models import NADE, nade
from scratchnade.optim import Adam
from scratchnade.plots import completion_grid, image_grid, learning_curves
from scratchnade.train import fit

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the forward pass with the running sum
#
# Write `nade_forward(params, x)` returning the mean NLL over the batch and a cache `(x, hs, logits)` with
# `hs` of shape `(D, B, H)` (`hs[t]` is $\mathbf{h}_t$) and `logits` of shape `(B, D)`. One loop over $t$,
# no loop over the batch. The NLL of a logit $l$ is $\text{softplus}(l) - x\,l$ (`np.logaddexp(0, l) - x * l`).

# %%
def sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))                  # stable for any u


def nade_forward(params, x):
    """Mean NLL of binary x (B, D).  Returns (loss, (x, hs (D, B, H), logits (B, D)))."""
    W, c, V, b = params["W"], params["c"], params["V"], params["b"]
    B, D = x.shape
    H = c.shape[0]
    hs = np.empty((D, B, H))
    logits = np.empty((B, D))
    # BEGIN SOLUTION loop over t: h_t = sigmoid(a_t), logit b_t + V_t . h_t, then a_{t+1} = a_t + W[:, t] x_t
    a = np.broadcast_to(c, (B, H)).copy()                  # a_1 = c
    for t in range(D):
        hs[t] = sigmoid(a)                                 # h_t
        logits[:, t] = b[t] + hs[t] @ V[t]                 # b_t + V_t . h_t
        a += x[:, t:t + 1] * W[:, t]                       # a_{t+1} = a_t + W_{:,t} x_t
    loss = (np.logaddexp(0.0, logits) - x * logits).sum() / B
    # END SOLUTION
    return loss, (x, hs, logits)


D, H = 10, 6
small = NADE(D, H, seed=0, dtype=np.float64, init_scale=1.0)
x_small = (rng.random((7, D)) < 0.5).astype(np.float64)
loss, cache = nade_forward(small.params, x_small)
print("loss", loss)

# %% [markdown]
# **Check** against `scratchnade.models.nade.forward`.

# %%
# Probes: every parameter drawn at random (no zero bias, no zero c), both binary values at every position, the
# caller's arrays compared before and after; then the cached h_t and logits, not only the loss.
pr = np.random.default_rng(41)
Dc, Hc, Bc = 7, 5, 9
params_c = {"W": pr.normal(size=(Hc, Dc)), "c": pr.normal(size=Hc), "V": pr.normal(size=(Dc, Hc)), "b": pr.normal(size=Dc)}
x_c = (pr.random((Bc, Dc)) < 0.5).astype(np.float64)
x_c[0], x_c[1] = 0.0, 1.0
before = {k: v.copy() for k, v in params_c.items()} | {"x": x_c.copy()}
loss_c, (_, hs_c, logits_c) = nade_forward(params_c, x_c)
for k, old in before.items():
    assert np.array_equal(params_c.get(k, x_c), old), f"nade_forward changed its input {k}: keep the running sum in a new array"
assert np.shape(hs_c) == (Dc, Bc, Hc), f"hs should have shape (D, B, H) = ({Dc}, {Bc}, {Hc}), got {np.shape(hs_c)}"
assert np.shape(logits_c) == (Bc, Dc), f"logits should have shape (B, D) = ({Bc}, {Dc}), got {np.shape(logits_c)}"
ref_loss_c, ref_cache_c = nade.forward(params_c, x_c)
ref_hs = np.asarray(ref_cache_c.hs)                      # (D, B, H)
for t in range(Dc):                                      # the first h_t that differs names the mistake
    if not np.allclose(hs_c[t], ref_hs[t], atol=1e-12):
        if t + 1 < Dc and np.allclose(hs_c[t], ref_hs[t + 1], atol=1e-12):
            hint = "it already contains W[:, t] x_t: compute h_t, then add x_t to the running sum (h_t reads x_<t only)"
        elif t == 0:
            hint = "h_1 = sigmoid(c): start the running sum at a_1 = c"
        else:
            hint = "a_{t+1} = a_t + W[:, t] x_t, one column of W per position"
        raise AssertionError(f"h_{t + 1} (hs[{t}]) differs from nade.forward's: {hint}")
if not np.allclose(logits_c, ref_cache_c.logits.T, atol=1e-12):
    t = int(np.argmax(np.abs(logits_c - ref_cache_c.logits.T).max(axis=0)))
    raise AssertionError(f"the logit of position {t} differs (your h_t are right): logit_t = b_t + V_t . h_t, V[{t}] a row of V")
if not abs(loss_c - float(ref_loss_c)) < 1e-10:
    ratio = loss_c / float(ref_loss_c)
    hint = (f"{ratio:.3g} times too large: the mean over the batch divides by B" if np.isclose(ratio, Bc)
            else "the NLL of a logit l is softplus(l) - x l, summed over t")
    raise AssertionError(f"loss {loss_c:.6g} vs nade.forward {float(ref_loss_c):.6g} (your logits are right): {hint}")
with np.errstate(over="ignore", invalid="ignore"):       # extreme logits: finite, and equal to the package's
    for shift in (1000.0, -1000.0):
        shifted = dict(params_c, b=params_c["b"] + shift)
        big_loss, ref_big = nade_forward(shifted, x_c)[0], float(nade.forward(shifted, x_c)[0])
        assert np.isfinite(big_loss) and abs(big_loss - ref_big) < 1e-8 * abs(ref_big), \
            f"with logits near {shift:+.0f} the loss is {big_loss} (nade.forward: {ref_big:.6g}): " \
            "log(1 + exp(l)) overflows and log(sigmoid) underflows, use np.logaddexp(0, l) - x l"
print("forward matches nade.forward: h_t, logits and loss")

# %% [markdown]
# ## Exercise 2: the backward pass, O(DH)
#
# With $\delta l_t = (\text{sigmoid}(l_t) - x_t)/B$:
#
# $$\partial V_t = \sum_b \delta l_{bt}\, \mathbf{h}_{bt}, \quad \partial b_t = \sum_b \delta l_{bt}, \quad
#   \delta \mathbf{a}_t = \delta l_t\, V_t \odot \mathbf{h}_t(1-\mathbf{h}_t),$$
#
# $$\partial W_{:,t} = \sum_b x_{bt} \sum_{t'>t} \delta\mathbf{a}_{bt'}, \qquad \partial \mathbf{c} = \sum_b\sum_t \delta \mathbf{a}_{bt}.$$
#
# Run $t$ from $D$ down to $1$ and keep $\sum_{t'>t}\delta\mathbf{a}_{t'}$ in one `(B, H)` array.

# %%
def nade_backward(params, cache):
    """Gradients {W, c, V, b} of nade_forward's loss."""
    x, hs, logits = cache
    V = params["V"]
    B, D = x.shape
    dW, dV = np.zeros_like(params["W"]), np.zeros_like(V)
    # BEGIN SOLUTION the reverse running sum: dV_t, then dW[:, t] from the sum of later da's, then add da_t
    dl = (sigmoid(logits) - x) / B                         # dL/dl_t       (B, D)
    da_later = np.zeros_like(hs[0])                        # sum_{t'>t} da_t'   (B, H)
    for t in range(D - 1, -1, -1):
        dV[t] = dl[:, t] @ hs[t]                           # dV_t
        dW[:, t] = x[:, t] @ da_later                      # x_t feeds every a_t', t' > t
        da_later += dl[:, t:t + 1] * V[t] * hs[t] * (1 - hs[t])   # da_t
    db, dc = dl.sum(axis=0), da_later.sum(axis=0)
    # END SOLUTION
    return {"W": dW, "c": dc, "V": dV, "b": db}


grads = nade_backward(small.params, cache)
print({k: float(np.linalg.norm(g)) for k, g in grads.items()})

# %% [markdown]
# **Check** against `nade.backward` and finite differences.

# %%
# Probes: random parameters, both binary values at every position, the package's cache in your format; the cache and
# the parameters compared before and after, a second call compared with the first, then one gradient at a time.
pr = np.random.default_rng(42)
Dc, Hc, Bc = 7, 5, 9
params_c = {"W": pr.normal(size=(Hc, Dc)), "c": pr.normal(size=Hc), "V": pr.normal(size=(Dc, Hc)), "b": pr.normal(size=Dc)}
x_c = (pr.random((Bc, Dc)) < 0.5).astype(np.float64)
x_c[0], x_c[1] = 0.0, 1.0
_, ref_cache_c = nade.forward(params_c, x_c)
cache_c = (x_c, np.array(ref_cache_c.hs), np.array(ref_cache_c.logits).T.copy())
before = [a.copy() for a in cache_c] + [v.copy() for v in params_c.values()]
g1 = nade_backward(params_c, cache_c)
g2 = nade_backward(params_c, cache_c)
for name, arr, old in zip(("x", "hs", "logits", *params_c), (*cache_c, *params_c.values()), before):
    assert np.array_equal(arr, old), f"nade_backward changed {name}: compute every gradient into new arrays"
ref_c = nade.backward(1.0, ref_cache_c)
for k in ("b", "V", "c", "W"):
    assert np.shape(g1[k]) == np.shape(params_c[k]), f"d{k} should have the shape of {k}, {np.shape(params_c[k])}, got {np.shape(g1[k])}"
    assert np.array_equal(g1[k], g2[k]), f"a second call gives another d{k}"
hs_c = cache_c[1]
dl_c = (sigmoid(cache_c[2]) - x_c) / Bc
da_c = np.einsum("bt,th,tbh->tbh", dl_c, params_c["V"], hs_c * (1 - hs_c))     # da_t for every t   (D, B, H)
if all(np.allclose(g1[k], Bc * ref_c[k]) for k in ref_c):
    raise AssertionError(f"every gradient is B = {Bc} times too large: dl = (sigmoid(l) - x) / B")
assert rel_error(g1["b"], ref_c["b"]) < 1e-9, "db differs from nade.backward: db_t = sum_b dl_bt"
assert rel_error(g1["V"], ref_c["V"]) < 1e-9, "dV differs from nade.backward: dV_t = sum_b dl_bt h_bt"
if np.allclose(g1["c"], np.einsum("bt,th,tbh->h", dl_c, params_c["V"], np.ones_like(hs_c))):
    raise AssertionError("dc misses the sigmoid's derivative: da_t = dl_t V_t * h_t (1 - h_t)")
assert rel_error(g1["c"], ref_c["c"]) < 1e-9, "dc differs from nade.backward: dc = sum over b and t of da_t"
if np.allclose(g1["W"] - ref_c["W"], np.einsum("tbh,bt->ht", da_c, x_c)):
    raise AssertionError("dW[:, t] also collects da_t: x_t only feeds a_t' for t' > t, so add da_t to the sum AFTER using it")
assert rel_error(g1["W"], ref_c["W"]) < 1e-9, "dW differs from nade.backward: dW[:, t] = sum_b x_bt sum_{t'>t} da_bt'"
p = {k: v.copy() for k, v in small.params.items()}
for k, err in check_grads(lambda: nade_forward(p, x_small)[0], p, nade_backward(p, nade_forward(p, x_small)[1])).items():
    assert err < 1e-7, f"d{k} disagrees with finite differences (relative error {err:.1e})"
print("backward matches nade.backward and finite differences")

# %% [markdown]
# ## Training on binarized MNIST
#
# Binarized MNIST (Larochelle & Murray's split: 50,000 / 10,000 / 10,000 images of $28 \times 28 = 784$ pixels).
# Set `SCRATCHNADE_DATA` to the data folder, or call `load_binarized_mnist(download=True)` once. In fast mode
# (CI) we train a small NADE (H = 100) on 5,000 images for two epochs; without the data, fast mode falls back to samples of
# a random FVSBN so the notebook still runs (its pictures are then noise, not digits).
#
# The full run (`SCRATCHNADE_FAST` unset): $H = 500$, Adam, early stopping on the validation NLL. The reference
# result of Larochelle & Murray (2011) is about **88.9 nats** on the test set for $H = 500$. Training it takes about
# an hour on a laptop CPU, so the full mode first looks for the checkpoint that the benchmark writes
# (`python benchmarks/binarized_mnist.py --model nade --hidden 500`, then resumed with `--epoch-decay 0.9`; see
# benchmarks/README.md) at `SCRATCHNADE_NADE_CHECKPOINT` or `../runs/mnist-nade/best.npz`, and loads it with its
# training log; without one it trains here. Either way the test NLL below is computed in this notebook.

# %%
try:
    mnist = load_binarized_mnist()
    source = "binarized MNIST"
except MissingDataError:
    if not FAST:
        raise
    fake = sample_dataset(random_fvsbn(784, seed=0, scale=0.3), 1200, seed=0)
    mnist = {"train": fake[:1000], "valid": fake[1000:1100], "test": fake[1100:]}
    source = "FVSBN samples (no MNIST found)"
n_train, H, epochs = (5000, 100, 2) if FAST else (50000, 500, 50)
train, valid, test = mnist["train"][:n_train], mnist["valid"][:500 if FAST else None], mnist["test"]
print(f"{source}: train {train.shape}, valid {valid.shape}, test {test.shape}")

checkpoint = os.environ.get("SCRATCHNADE_NADE_CHECKPOINT", os.path.join("..", "runs", "mnist-nade", "best.npz"))
t0 = time.time()
if not FAST and os.path.exists(checkpoint):
    meta, params, _ = load_checkpoint(checkpoint)
    H = meta["config"]["H"]
    model = NADE(D=784, H=H)
    model.load_state_dict(params)
    history = {"epoch": [r["epoch"] for r in meta["log"]], "train_loss": [r["train_nll"] for r in meta["log"]],
               "valid_loss": [r["valid_nll"] for r in meta["log"]]}
    print(f"loaded {checkpoint}: H={H}, trained {meta['epoch']} epochs in {meta['seconds'] / 60:.0f} min")
else:
    model = NADE(D=784, H=H, seed=0).init_bias(train)
    history = fit(model, lambda epoch: minibatches(train, 100, rng=epoch),
                  list(minibatches(valid, 500, shuffle=False)), Adam(lr=1e-3 if not FAST else 3e-3),
                  epochs=epochs, patience=5, progress=False)
    print(f"trained H={H} for {len(history.epoch)} epoch(s) in {time.time() - t0:.0f} s")
n_eval = 1000 if FAST else len(test)
test_nll = -float(np.mean(model.log_prob(test[:n_eval])))
print(f"test NLL {test_nll:.2f} nats on {n_eval} test images")
learning_curves(history, title=f"NADE H={H} on {source}")   # a Figure shows itself as the cell's value

# %% [markdown]
# ## Samples and half-image completions
#
# Ancestral sampling runs the running sum forwards, drawing $x_t \sim \text{Bernoulli}(p(x_t=1\mid x_{<t}))$ as
# it goes. A completion keeps the top 14 rows of a test digit and samples the rest.

# %%
samples = model.sample(50, seed=0)
display(image_grid(samples, ncols=10, title="NADE samples"))
probs = model.conditionals(test[:10])                      # p(x_t = 1 | x_<t): the mean picture of each pixel
display(image_grid(probs, ncols=10, title="p(x_t = 1 | x_<t) on test digits"))
picks = test[::1000][:10]                                  # ten test digits, spread over the set
completions = np.stack([model.complete(picks, n_given=14 * 28, seed=s) for s in range(3)], axis=1)
completion_grid(picks, completions, title="top half given, bottom half sampled")
