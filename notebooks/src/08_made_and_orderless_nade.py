# %% [markdown]
# # 8. MADE, order-agnostic NADE, and honest ensembles
#
# The FVSBN of notebook 2 computes all $D$ logits in one product by masking its weights with
# $\mathbf{m}_{t,s} = \mathbf{1}_{s<t}$: logit $t$ can only read the inputs before it. **MADE** (Germain, Gregor,
# Murray & Larochelle, 2015) puts that idea into an autoencoder with hidden layers. Every unit gets a
# **connectivity number**, and a weight is kept only where the numbers allow it:
#
# - input $d$ gets $m_0(d)$ = its place $1..D$ in the ordering $o$ (with the natural order, $m_0(d) = d$);
# - hidden unit $k$ of layer $l$ gets $m_l(k)$ drawn uniformly in $\{\min_{k'} m_{l-1}(k'), \dots, D-1\}$;
# - hidden masks keep $M_l[k, k'] = \mathbf{1}[m_l(k) \ge m_{l-1}(k')]$: a unit numbered $m$ sees inputs numbered $\le m$;
# - the output mask is **strict**: $M_V[d, k] = \mathbf{1}[m_0(d) > m_L(k)]$: output $d$ sees units numbered $< m_0(d)$.
#
# $$\mathbf{h}_l = \text{relu}\big(\mathbf{c}_l + (W_l \odot M_l)\,\mathbf{h}_{l-1}\big), \quad \mathbf{h}_0 = \mathbf{x}, \qquad
#   p(x_d = 1 \mid x_{o<d}) = \text{sigmoid}\big(b_d + [(V \odot M_V)\,\mathbf{h}_L]_d\big).$$
#
# A path from input $e$ to output $d$ climbs through numbers $m_0(e) \le m_1 \le \dots \le m_L < m_0(d)$, so output
# $d$ depends only on inputs earlier in the ordering: one forward pass gives all $D$ conditionals of an exact
# autoregressive model. With one hidden layer of $H = D - 1$ units numbered $1..D-1$, the product $M_V M_1$ is the
# FVSBN's mask $\mathbf{1}_{s<t}$ (a count of paths instead of a 0/1).
#
# Plan: build the masks (exercise 1), check the autoregressive property by perturbing inputs, train MADE on
# binarized MNIST, mix several orderings into an **ensemble** the honest way (exercises 2 and 3), and fill in
# missing pixels with an **order-agnostic NADE**. The package's code: `scratchnade/models/made.py`,
# `scratchnade/models/orderless_nade.py`, `scratchnade/ensemble.py`.

# %%
%matplotlib inline
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade import ensemble
from scratchnade.checkpoint import load_checkpoint
from scratchnade.data import MissingDataError, load_binarized_mnist, minibatches, random_fvsbn, sample_dataset
from scratchnade.exact import all_binary_vectors
from scratchnade.functional import logsumexp
from scratchnade.models import MADE, OrderlessNADE, made
from scratchnade.optim import Adam
from scratchnade.plots import image_grid, learning_curves, tile_images
from scratchnade.train import fit

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the masks from the connectivity numbers
#
# Write `build_masks(D, H, layers, order, rng)` returning `(masks, m)`: `masks = {"M1": (H, D), "M2".."ML": (H, H),
# "MV": (D, H)}` of 0/1 floats and `m = [m_0 (D,), m_1 (H,), ..., m_L (H,)]` the integer connectivity numbers.
# `order[i]` is the dimension generated at step $i$, so $m_0$ is the inverse of `order`, counted from 1.
# Draw layer $l$ (for $l = 1..L$, in that order, nothing else) with exactly `rng.integers(lo, D, size=H)`, where
# `lo` is the smallest number of layer $l-1$ (capped at $D-1$, which only matters when $D = 1$); then the check
# can compare your draws with the package's.

# %%
def build_masks(D, H, layers, order, rng):
    """MADE's masks.  order (D,) a permutation of 0..D-1; rng a NumPy Generator.

    Returns (masks {"M1" (H, D), "M2".."ML" (H, H), "MV" (D, H)}, m [m_0 (D,), m_1 (H,), ..., m_L (H,)]).
    """
    # BEGIN SOLUTION m_0 from the ordering, then m_1..m_L drawn in turn, then M_l (>=) and the strict M_V (>)
    m0 = np.empty(D, dtype=np.int64)
    m0[order] = np.arange(1, D + 1)                                  # m_0(d) = place of d in the ordering
    m = [m0]
    for _ in range(layers):
        lo = min(int(m[-1].min()), D - 1)
        m.append(rng.integers(lo, D, size=H))                        # m_l(k) in {lo, ..., D-1}
    masks = {f"M{l}": (m[l][:, None] >= m[l - 1][None, :]).astype(np.float64)   # M_l[k, k'] = 1[m_l(k) >= m_l-1(k')]
             for l in range(1, layers + 1)}
    masks["MV"] = (m0[:, None] > m[layers][None, :]).astype(np.float64)          # M_V[d, k] = 1[m_0(d) > m_L(k)]
    # END SOLUTION
    return masks, m


masks, m = build_masks(5, 4, 1, np.array([2, 0, 4, 1, 3]), np.random.default_rng(0))
print("m_0 =", m[0], " m_1 =", m[1])
print("M_V M_1, paths from input e (column) to output d (row):\n", (masks["MV"] @ masks["M1"]).astype(int))

# %% [markdown]
# **Check** against the package's `made.made_masks`, on random orderings with one to three hidden layers.

# %%
# Probes: random orderings (never the natural one) and sizes, 1-3 layers, small H so the lower ends of the draws
# move; the caller's order compared before and after. Order of the checks: shapes, m_0, the draws, the
# autoregressive property (paths input -> output in the ordering), then each mask against the package's.
pr = np.random.default_rng(81)
for D_c, H_c, L_c in ((8, 5, 1), (9, 3, 2), (7, 4, 3), (10, 6, 2)):
    order_c = pr.permutation(D_c)
    while np.array_equal(order_c, np.arange(D_c)) or np.array_equal(order_c[order_c], np.arange(D_c)):
        order_c = pr.permutation(D_c)                             # neither natural nor its own inverse
    seed_c = int(pr.integers(10_000))
    where = f"(D={D_c}, H={H_c}, L={L_c}, order={order_c.tolist()})"
    before = order_c.copy()
    masks_c, m_c = build_masks(D_c, H_c, L_c, order_c, np.random.default_rng(seed_c))
    ref_masks, ref_m = made.made_masks(D_c, H_c, L_c, order_c, np.random.default_rng(seed_c))
    assert np.array_equal(order_c, before), "build_masks changed its input order: read it, never sort it in place"
    assert len(m_c) == L_c + 1, f"m should hold L + 1 = {L_c + 1} vectors [m_0, m_1, ..., m_L] {where}, got {len(m_c)}"
    keys = [f"M{l}" for l in range(1, L_c + 1)] + ["MV"]
    assert sorted(masks_c) == sorted(keys), f"masks should have the keys {keys} {where}, got {sorted(masks_c)}"
    for key in keys:
        want = (D_c, H_c) if key == "MV" else (H_c, D_c) if key == "M1" else (H_c, H_c)
        names = "(D, H)" if key == "MV" else "(H, D)" if key == "M1" else "(H, H)"
        assert np.shape(masks_c[key]) == want, \
            f"{key} should have shape {names} = {want} {where}, got {np.shape(masks_c[key])}: row = the unit it feeds"
    if not np.array_equal(m_c[0], ref_m[0]):
        if np.array_equal(m_c[0], np.arange(1, D_c + 1)):
            hint = "you forgot the ordering: inputs numbered 1..D in their natural order"
        elif np.array_equal(m_c[0], order_c + 1):
            hint = ("m_0 = order + 1 is the inverse permutation; order[i] is the dimension at place i, "
                    "so m_0[order[i]] = i + 1")
        else:
            hint = "m_0(d) is the place (1..D) of dimension d in the ordering"
        raise AssertionError(f"m_0 = {np.asarray(m_c[0]).tolist()} differs from the package's {ref_m[0].tolist()} "
                             f"{where}: {hint}")
    for l in range(1, L_c + 1):
        if not np.array_equal(m_c[l], ref_m[l]):
            raise AssertionError(
                f"m_{l} = {np.asarray(m_c[l]).tolist()} differs from the package's draw {ref_m[l].tolist()} {where}: draw "
                f"m_{l} = rng.integers(lo, D, size=H) with lo = min of m_{l - 1} = {ref_m[l - 1].min()} (values lo..D-1), "
                f"layers in order, nothing else drawn")
    paths = np.asarray(masks_c["MV"], dtype=np.float64)
    for l in range(L_c, 0, -1):
        paths = paths @ np.asarray(masks_c[f"M{l}"], dtype=np.float64)   # paths[d, e]: input e -> output d
    in_order = paths[np.ix_(order_c, order_c)]                    # rows, columns: places in the ordering
    if np.any(np.diag(in_order)):
        i = int(np.flatnonzero(np.diag(in_order))[0])
        raise AssertionError(f"output {order_c[i]} (place {i + 1}) reads its own input x_{order_c[i]} through "
                             f"{int(in_order[i, i])} path(s) {where}: MV must be strict, 1[m_0(d) > m_L(k)]")
    if np.any(np.triu(in_order, 1)):
        i, j = map(int, np.argwhere(np.triu(in_order, 1))[0])
        raise AssertionError(f"the output at place {i + 1} reads the input at the later place {j + 1} {where}: "
                             "the future leaks")
    for key in keys:
        if not np.array_equal(masks_c[key], ref_masks[key]):
            if key == "MV":
                hint = "M_V[d, k] = 1[m_0(d) > m_L(k)]"
            else:
                l = int(key[1:])
                strict = (ref_m[l][:, None] > ref_m[l - 1][None, :])
                below = "the inputs" if l == 1 else f"the units of layer {l - 1}"
                hint = (f"a unit numbered m also sees {below} numbered exactly m: use >=, not >"
                        if np.array_equal(masks_c[key], strict)
                        else f"M_{l}[k, k'] = 1[m_{l}(k) >= m_{l - 1}(k')]")
            raise AssertionError(f"{key} differs from the package's {where}: {hint}")
print("masks and connectivity numbers match made.made_masks")

# %% [markdown]
# ## The autoregressive property, seen by perturbing inputs
#
# The masks promise that output $d$ depends only on earlier inputs. We test the promise on the network itself, not on
# the masks: flip input $e$ in a batch of random $\mathbf{x}$ and record which logits move. Sorted by place in the
# ordering, the matrix "output $i$ moved when input $j$ flipped" must be **strictly lower triangular**: that is the
# FVSBN's $\mathbf{m}_{t,s} = \mathbf{1}_{s<t}$ again, now measured. We test the package's MADE (two hidden layers,
# a shuffled ordering), the same network with your masks, and, to see that the test can fail, the package's masks
# with `>=` at the output.

# %%
def dependence(logits_fn, D, n=64, seed=0):
    """J (D, D) bool: J[d, e] = logit d moved when input e was flipped, for some of n random binary x."""
    x = (np.random.default_rng(seed).random((n, D)) < 0.5).astype(np.float64)
    base = logits_fn(x)
    J = np.zeros((D, D), dtype=bool)
    for e in range(D):
        flipped = x.copy()
        flipped[:, e] = 1.0 - flipped[:, e]                      # perturb input e only
        J[:, e] = (np.abs(logits_fn(flipped) - base) > 1e-12).any(axis=0)
    return J


Dj, Hj, Lj = 12, 40, 2
net = MADE(Dj, Hj, layers=Lj, activation="sigmoid", shuffle_order=True, seed=3, dtype=np.float64, init_scale=1.0)
order_j = net.ordering(0)
ref_set = net.mask_set(0)
yours, _ = build_masks(Dj, Hj, Lj, order_j, np.random.default_rng(7))
leaky = dict(ref_set.masks, MV=(ref_set.m[0][:, None] >= ref_set.m[-1][None, :]).astype(np.float64))
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
panels = (("package's MADE", ref_set.masks), ("your masks", yours), ("M_V with >= (a bug)", leaky))
for ax, (name, masks_j) in zip(axes, panels):
    J = dependence(lambda x: made.logits_and_states(net.params, x, masks_j, "sigmoid")[3], Dj)
    J_o = J[np.ix_(order_j, order_j)]                             # rows: outputs, columns: inputs, by place
    ax.imshow(J_o, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{int(np.tril(J_o, -1).sum())} of {Dj * (Dj - 1) // 2} earlier inputs reached, "
                 f"{int(np.triu(J_o).sum())} own or later", fontsize=9)
    ax.set_xlabel("input flipped (place in the ordering)")
    ax.set_ylabel("output that moved (place)")
    if name == "M_V with >= (a bug)":
        assert np.triu(J_o).any(), "the planted bug should show on or above the diagonal"
    else:
        assert not np.triu(J_o).any(), f"{name}: an output moved when an input at its own or a later place flipped"
        assert J_o.sum() > 0, f"{name}: no output depends on any input"
fig.tight_layout()

# %% [markdown]
# Black squares below the diagonal only: every conditional reads only the past. A masked network need not reach every
# earlier input (some lower squares may stay white); the bug's diagonal means $p(x_d = 1 \mid \cdot)$ reads $x_d$
# itself, so training would "predict" each pixel by copying it and the NLL would collapse toward zero.
#
# ## Training MADE on binarized MNIST
#
# One hidden layer of $H = 500$ ReLU units, the natural (raster) ordering, Adam. Fast mode (CI) trains a small one on
# a few hundred images, and without the data falls back to samples of a random FVSBN (the pictures are then noise).
# The full run trains ten epochs on all 50,000 images (the benchmark logs about 4 s an epoch on an idle 2-core CPU);
# the paper's one-mask MADE reaches about 88.4 nats after much longer training.

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
n_train, H, epochs = (500, 100, 2) if FAST else (50000, 500, 10)
train, valid, test = mnist["train"][:n_train], mnist["valid"][:200 if FAST else None], mnist["test"][:500 if FAST else None]
print(f"{source}: train {train.shape}, valid {valid.shape}, test {test.shape}")
valid_batches = list(minibatches(valid, 500, shuffle=False))

t0 = time.time()
mnist_made = MADE(784, H, seed=0).init_bias(train)
history = fit(mnist_made, lambda epoch: minibatches(train, 100, rng=epoch), valid_batches,
              Adam(lr=1e-3 if not FAST else 3e-3), epochs=epochs, progress=False)
made_nll = -float(np.mean(mnist_made.log_prob(test)))
print(f"MADE H={H}: trained {len(history.epoch)} epoch(s) in {time.time() - t0:.0f} s; "
      f"test NLL {made_nll:.2f} nats on {len(test)} test images")
learning_curves(history, title=f"MADE H={H} on {source}")

# %%
image_grid(mnist_made.sample(30, seed=0), ncols=10, title="MADE samples (raster order, one pass per pixel)")

# %% [markdown]
# ## Ensembles are mixtures
#
# One network can hold many orderings: a pool of $K$ mask sets, each with its own ordering, one drawn per training
# step (`MADE(..., masks=K, shuffle_order=True)`). Member $k$ is an exact model $p_k(\mathbf{x})$ (`log_prob(x,
# member=k)`). The honest ensemble is their equal-weight **mixture**,
#
# $$p_{\text{ens}}(\mathbf{x}) = \frac1K \sum_{k} p_k(\mathbf{x}), \qquad
#   \log p_{\text{ens}}(\mathbf{x}) = \operatorname{logsumexp}_k \log p_k(\mathbf{x}) - \log K,$$
#
# which sums to one over $\mathbf{x}$ because each $p_k$ does, and by Jensen's inequality is never below the members'
# mean: $\log p_{\text{ens}}(\mathbf{x}) \ge \frac1K\sum_k \log p_k(\mathbf{x})$.
#
# On MNIST $\log p_k(\mathbf{x}) \approx -90$, and $e^{-1000}$ is $0$ in float64: compute the log-mean-exp by
# shifting each example by its largest member, $\log \frac1K \sum_k e^{\ell_k} = \ell^* + \log \frac1K\sum_k
# e^{\ell_k - \ell^*}$ with $\ell^* = \max_k \ell_k$.
#
# ## Exercise 2: the mixture from the members' log-likelihoods
#
# Write `mixture_log_prob(log_probs)`: from a `(K, N)` array of $\log p_k(\mathbf{x}_n)$, return the `(N,)` array of
# $\log p_{\text{ens}}(\mathbf{x}_n)$, stable for any values.

# %%
def mixture_log_prob(log_probs):
    """log (1/K) sum_k exp(log_probs[k]): (K, N) -> (N,), stable."""
    K = log_probs.shape[0]
    # BEGIN SOLUTION shift each example (column) by its max over the members, log-mean-exp, shift back
    top = log_probs.max(axis=0)                                      # (N,) l* = max_k l_k
    logp = top + np.log(np.exp(log_probs - top).sum(axis=0)) - np.log(K)   # l* + log sum_k e^(l_k - l*) - log K
    # END SOLUTION
    return logp


print(mixture_log_prob(np.array([[-90.0, -1000.0], [-92.0, -1003.0]])))

# %% [markdown]
# **Check** against `scratchnade.ensemble.mixture_log_prob`.

# %%
# Probes: log-probabilities drawn at random (one example where all members agree), the same near -1000, then
# examples far apart from each other (-3 and -1500); the caller's array compared before and after, a second call.
pr = np.random.default_rng(84)
Kc, Nc = 5, 7
lp_c = pr.normal(-60.0, 25.0, size=(Kc, Nc))
lp_c[:, 0] = -3.0                                                # members that agree: the mixture is -3
before = lp_c.copy()
mine = mixture_log_prob(lp_c)
assert np.array_equal(lp_c, before), "mixture_log_prob changed its input: subtract the max into a new array"
assert np.shape(mine) == (Nc,), \
    f"the result should have shape (N,) = ({Nc},), one per example, got {np.shape(mine)}: reduce over axis 0, the members"
assert np.array_equal(mixture_log_prob(lp_c), mine), "a second call gives another result"
ref = ensemble.mixture_log_prob(lp_c)
if not np.allclose(mine, ref, rtol=0, atol=1e-9):
    i = int(np.argmax(np.abs(mine - ref)))
    if np.allclose(mine, lp_c.mean(axis=0)):
        hint = ("you averaged the log-probabilities: that is the log of the geometric mean of the p_k, not the mixture "
                "(it sums to less than 1, and by Jensen lies below it); average the probabilities, in log space")
    elif np.allclose(mine, ref + np.log(Kc)):
        hint = f"log K = {np.log(Kc):.4f} too large: without - log K the members' probabilities are summed, not averaged"
    elif np.allclose(mine, lp_c.max(axis=0)):
        hint = "that is the best member alone; the max is only the shift, add log (1/K) sum_k e^(l_k - l*) to it"
    else:
        hint = "log p_ens = l* + log sum_k e^(l_k - l*) - log K with l* = max over the members (axis 0)"
    raise AssertionError(f"example {i}: {mine[i]:.6g} vs ensemble.mixture_log_prob's {ref[i]:.6g}: {hint}")
with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    far = mixture_log_prob(lp_c - 1000.0)
    assert np.all(np.isfinite(far)) and np.allclose(far, ref - 1000.0, rtol=0, atol=1e-8), \
        f"with log-probabilities near -1000 yours are {far[:3]}...: exp(-1000) underflows to 0 in float64 (log 0 = " \
        "-inf); subtract each example's max before exp"
    apart = np.stack([np.full(Kc, -3.0), np.linspace(-1500.0, -1450.0, Kc)], axis=1)   # (K, 2): two examples
    got = mixture_log_prob(apart)
    assert np.all(np.isfinite(got)) and np.allclose(got, ensemble.mixture_log_prob(apart), rtol=0, atol=1e-8), \
        f"for two examples at -3 and -1500 yours are {got}: shift each example by its own max (over axis 0, " \
        "the members), not by one max of the whole array"
print("mixture_log_prob matches ensemble.mixture_log_prob, near -1000 too")

# %% [markdown]
# ## Exercise 3: an ensemble of a model's members
#
# Now write `ensemble_log_prob(model, x, K)`: the `(B,)` log-likelihoods of a batch `x` under the mixture of members
# $0..K-1$ of `model`. The model offers `model.log_prob(x, member=k)` ($\log p_k(\mathbf{x})$, shape `(B,)`) and
# `model.conditionals(x, member=k)` ($p_k(x_d = 1 \mid$ the pixels before $d$ in member $k$'s ordering$)$, shape
# `(B, D)`). Only one of the two is the right tool.
#
# A tempting shortcut averages the members' conditionals pixel by pixel and multiplies the averages (pytorch-made did
# this and reported 79.3 nats on binarized MNIST). Member $k$ conditions pixel $d$ on other pixels than member $j$
# does, so that product is not the chain rule of any distribution: it need not sum to one over $\mathbf{x}$. The check
# enumerates all $2^6$ vectors of a small model to see the difference.

# %%
def ensemble_log_prob(model, x, K):
    """log p_ens(x) under the mixture of members 0..K-1 of `model`: x (B, D) -> (B,)."""
    # BEGIN SOLUTION stack the members' log p_k(x) into (K, B), then mix them with mixture_log_prob
    log_probs = np.stack([model.log_prob(x, member=k) for k in range(K)])   # (K, B) log p_k(x)
    logp = mixture_log_prob(log_probs)                                       # log (1/K) sum_k p_k(x)
    # END SOLUTION
    return logp


small = MADE(6, 12, masks=4, shuffle_order=True, seed=2, dtype=np.float64, init_scale=1.0)
x_all = all_binary_vectors(6).astype(np.float64)                 # every x in {0, 1}^6: (64, 6)
print("sum over x of p_ens(x), K = 4:", np.exp(ensemble_log_prob(small, x_all, 4)).sum())

# %% [markdown]
# **Check** against `scratchnade.ensemble.ensemble_log_prob`, by enumeration: normalisation, Jensen, values.

# %%
# Probes: a MADE with a pool of 4 shuffled mask sets and an order-agnostic NADE, every parameter drawn at random;
# x = all 64 vectors of {0, 1}^6; K = 1 (one member: nothing to mix) then K = 3; then logits shifted by +-1000.
# The caller's x compared before and after, a second call compared with the first.
X_c = all_binary_vectors(6).astype(np.float64)
probes = (MADE(6, 12, masks=4, shuffle_order=True, seed=2, dtype=np.float64, init_scale=1.0),
          OrderlessNADE(6, 12, seed=1, dtype=np.float64, init_scale=1.0))
for model_c in probes:
    name = type(model_c).__name__
    for K_c in (1, 3):
        before = X_c.copy()
        mine = ensemble_log_prob(model_c, X_c, K_c)
        assert np.array_equal(X_c, before), "ensemble_log_prob changed its input x"
        assert np.shape(mine) == (len(X_c),), f"the result should have shape (B,) = ({len(X_c)},), got {np.shape(mine)}"
        assert np.array_equal(ensemble_log_prob(model_c, X_c, K_c), mine), "a second call gives another result"
        members = ensemble.member_log_probs(model_c, X_c, K_c)   # (K, 64) log p_k(x)
        ref = ensemble.ensemble_log_prob(model_c, X_c, K_c)
        total = float(np.exp(mine).sum())
        if not abs(total - 1.0) < 1e-9:
            if np.allclose(mine, ensemble.per_pixel_average_log_prob(model_c, X_c, K_c)):
                hint = ("that is the per-pixel average of the members' conditionals: its product is not a likelihood, "
                        "members condition each pixel on different pixels; mix the joint probabilities p_k(x) instead")
            elif np.allclose(mine, members.mean(axis=0)):
                hint = "that is the mean of the members' log p_k(x): a geometric mean, not normalised; average p_k(x)"
            elif np.allclose(mine, ref + np.log(K_c)):
                hint = f"it sums to K = {K_c}: divide the sum of the p_k(x) by K (subtract log K)"
            else:
                hint = "the mixture (1/K) sum_k p_k(x) of normalised members sums to 1"
            raise AssertionError(f"{name}, K = {K_c}: your ensemble's probabilities sum to {total:.6f} over all 64 "
                                 f"x in {{0, 1}}^6, not 1: {hint}")
        low = mine < members.mean(axis=0) - 1e-9
        if low.any():
            raise AssertionError(f"{name}, K = {K_c}: log p_ens(x) is below the members' mean log p_k(x) for "
                                 f"{int(low.sum())} of 64 x; a mixture of all K members never is (Jensen)")
        if not np.allclose(mine, ref, rtol=0, atol=1e-9):
            hint = (f"you used only member 0; mix members 0..{K_c - 1}" if np.allclose(mine, members[0])
                    else f"mix members 0..{K_c - 1} of the model with equal weights 1/K")
            raise AssertionError(f"{name}, K = {K_c}: your log p_ens differs from ensemble.ensemble_log_prob "
                                 f"(largest gap {np.abs(mine - ref).max():.3g}): {hint}")
for model_c in probes:                                           # logits near +-1000: log p_k(x) near -1000
    name = type(model_c).__name__
    b_c = model_c.params["b"].copy()
    for shift in (1000.0, -1000.0):
        model_c.params["b"][...] = b_c + shift
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            got, ref = ensemble_log_prob(model_c, X_c, 3), ensemble.ensemble_log_prob(model_c, X_c, 3)
        model_c.params["b"][...] = b_c
        assert np.all(np.isfinite(got)) and np.allclose(got, ref, rtol=1e-12, atol=1e-8), \
            f"{name} with logits shifted by {shift:+.0f} (log p_k(x) down to {ref.min():.0f}): yours give " \
            f"{got[np.argmin(ref)]} there; exp(-1000) underflows to 0 in float64, use a stable log-mean-exp"
print("ensemble_log_prob sums to 1 over {0, 1}^6, obeys Jensen, and matches ensemble.ensemble_log_prob")

# %% [markdown]
# ## More members, on MNIST
#
# A MADE trained with a pool of 8 mask sets, each with its own ordering (a fresh set every step). We score the test set
# with the mixture of the first $K$ members, with the members' mean log-likelihood, and with the per-pixel average
# (printed only to show how far off it is).

# %%
K_pool = 4 if FAST else 8
t0 = time.time()
pool = MADE(784, H, masks=K_pool, shuffle_order=True, seed=0).init_bias(train)
fit(pool, lambda epoch: minibatches(train, 100, rng=epoch), valid_batches, Adam(lr=1e-3 if not FAST else 3e-3),
    epochs=epochs, progress=False)
print(f"MADE H={H} with {K_pool} orderings: trained in {time.time() - t0:.0f} s")
member_lp = ensemble.member_log_probs(pool, test, K_pool)        # (K, N) log p_k(x)
print(f"{'K':>3} {'mixture NLL':>12} {'members mean':>13} {'per-pixel average (not a likelihood)':>37}")
for K in sorted({1, 2, K_pool // 2, K_pool}):
    mix = -float(np.mean(ensemble_log_prob(pool, test, K)))
    mean = -float(np.mean(member_lp[:K]))
    pixel = -float(np.mean(ensemble.per_pixel_average_log_prob(pool, test, K)))
    print(f"{K:>3} {mix:12.2f} {mean:13.2f} {pixel:37.2f}")

# %% [markdown]
# ## Inpainting with an order-agnostic NADE
#
# MADE fixes its orderings when it draws its masks; `complete` can only keep pixels that come first in one of them.
# The **order-agnostic NADE** (Uria, Murray & Larochelle, 2014) is trained on random orderings and random splits, and
# its input is the observed pixels together with the mask $\mathbf{g}$ of which are observed:
#
# $$\mathbf{h} = \text{relu}\big(\mathbf{c} + W(\mathbf{x}\odot\mathbf{g}) + U\mathbf{g}\big), \qquad
#   p(x_j = 1 \mid \mathbf{x}_{\mathbf{g}}) = \text{sigmoid}(b_j + V_j\cdot\mathbf{h}) \quad \text{for every } j
#   \text{ with } g_j = 0.$$
#
# So it has a conditional for **any** subset of given pixels. `inpaint(x, given)` uses the ordering that puts the
# given pixels first and the missing ones after them, and draws the missing pixels one at a time, each conditioned on
# the given ones and the ones already drawn: an exact sample of $p(\mathbf{x}_{\text{missing}} \mid
# \mathbf{x}_{\text{given}})$ in that ordering. Below: the top half given, the left half given, and a random 70% of
# the pixels given (grey = missing).
#
# The full run loads `../runs/bench/oa1/best.npz` (the benchmark's `--model orderless-nade` run) when it exists, and
# otherwise trains $H = 500$ units for six epochs here: enough for digit-like completions, though far from the
# paper's likelihoods.

# %%
checkpoint = os.environ.get("SCRATCHNADE_OA_CHECKPOINT", os.path.join("..", "runs", "bench", "oa1", "best.npz"))
t0 = time.time()
if not FAST and os.path.exists(checkpoint):
    meta, params, _ = load_checkpoint(checkpoint)
    cfg = meta["config"]
    oa = OrderlessNADE(784, cfg["H"], layers=cfg["layers"], activation=cfg["activation"])
    oa.load_state_dict(params)
    print(f"loaded {checkpoint}: H={cfg['H']}, {cfg['layers']} layer(s), trained {meta['epoch']} epochs")
else:
    oa = OrderlessNADE(784, 50 if FAST else 500, seed=0).init_bias(train)
    oa_history = fit(oa, lambda epoch: minibatches(train, 100, rng=epoch), valid_batches,
                     Adam(lr=1e-3 if not FAST else 3e-3), epochs=1 if FAST else 6, progress=False)
    print(f"trained an order-agnostic NADE H={oa.config['H']} for {len(oa_history.epoch)} epoch(s) "
          f"in {time.time() - t0:.0f} s")
n_oa = 100 if FAST else 500
print(f"test NLL in ordering 0: {-float(np.mean(oa.log_prob(test[:n_oa]))):.2f} nats on {n_oa} test images")

# %%
picks = mnist["test"][np.linspace(0, len(mnist["test"]) - 1, 4).astype(int)]   # four test digits (sorted by label)
rows, cols = np.divmod(np.arange(784), 28)
patterns = {"top half given": rows < 14, "left half given": cols < 14,
            "a random 70% given": np.random.default_rng(1).random((len(picks), 784)) < 0.7}
n_comp = 4
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
for ax, (title, g) in zip(axes, patterns.items()):
    given = np.broadcast_to(g, picks.shape).astype(np.float32)   # (B, 784), 1 = given
    shown = np.where(given > 0, picks, 0.5)                      # grey where missing
    comps = [oa.inpaint(picks, given, seed=s) for s in range(n_comp)]
    tiles = np.stack([picks, shown, *comps], axis=1).reshape(-1, 784)   # per digit: original, given, completions
    ax.imshow(tile_images(tiles, ncols=2 + n_comp, pad_value=1.0), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{title}\noriginal | given | {n_comp} completions", fontsize=9)
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# ## What the numbers mean
#
# - An ensemble of orderings is a **mixture**: $\log p_{\text{ens}} = \operatorname{logsumexp}_k \log p_k - \log K$.
#   It is a normalised distribution, so its test NLL is a real likelihood, and by Jensen it is never worse than the
#   members' mean: the table's mixture column sits below the members' mean, and falls as $K$ grows. Training on many
#   orderings costs each member a few nats against the one-mask MADE; the mixture wins them back (the MADE paper's
#   trade-off).
# - The mean of the members' log-probabilities is a geometric mean: it is what each member scores on average, not the
#   score of any distribution.
# - The per-pixel average looks several nats better still, and is not a likelihood at all: its product of averaged
#   conditionals need not sum to one (the check above measured it on $\{0,1\}^6$). Numbers computed that way, such as
#   79.3 nats, cannot be compared with the NLLs of normalised models.
