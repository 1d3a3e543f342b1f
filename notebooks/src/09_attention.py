# %% [markdown]
# # 9. Attention: another way for the conditionals to share parameters
#
# Every model of the lecture writes $p(\mathbf{x}) = \prod_t p(x_t \mid x_{<t})$ and computes all the conditionals
# with one set of parameters. What differs is **how the conditional at $t$ reads the prefix $x_{<t}$**:
#
# * **order-p NADE** (notebook 6): a window of the last $p$ tokens, with a weight set **per position** $s$ of the
#   window, $f_t = \mathbf{b}_t + \sum_{s \le t} \mathbf{W}_s \mathbf{h}_s$. Every earlier token is visible, but each
#   weight set learns from the tokens at one position only, and the parameter count grows linearly in $p$.
# * **recurrent NADE** (the RNN): one set of weights for every $t$, and the prefix squeezed into a **state**,
#   $\mathbf{h}_t = \text{sigmoid}(\mathbf{c} + \mathbf{W}_h \mathbf{h}_{t-1} + \mathbf{W}_x \mathbf{x}_t)$. No dependence on $p$, but
#   $x_s$ reaches $f_t$ only through $t - s$ steps of the recurrence, computed one after the other.
# * **self-attention** (this notebook): one set of weights for every $t$, like the RNN, and **every earlier position
#   read directly**, like the window, with weights that depend on the **content** of the positions rather than on
#   where they are:
#
# $$\mathbf{q}_t = \mathbf{e}_t \mathbf{W}_q, \quad \mathbf{k}_r = \mathbf{e}_r \mathbf{W}_k, \quad \mathbf{v}_r = \mathbf{e}_r \mathbf{W}_v, \qquad
#   s_{t,r} = \frac{\mathbf{q}_t \cdot \mathbf{k}_r}{\sqrt{d_h}}, \qquad
#   p_{t,r} = \frac{m_{t,r}\, e^{s_{t,r}}}{\sum_{r'} m_{t,r'}\, e^{s_{t,r'}}}, \qquad
#   \mathbf{c}_t = \sum_r p_{t,r} \mathbf{v}_r .$$
#
# Position $t$ asks a question $\mathbf{q}_t$, every visible position $r$ offers a key $\mathbf{k}_r$ and a value
# $\mathbf{v}_r$, and $\mathbf{c}_t$ is the average of the values weighted by how well each key answers. Here $d$ is still the
# lecture's vocabulary size, $\mathbf{e}_t$ the input vector of position $t$ (of width $d_\text{model}$) and $d_h$ the width of
# a head: $\mathbf{W}_q$, $\mathbf{W}_k$, $\mathbf{W}_v$ are $d_\text{model} \times d_h$ whatever the length of the window. Where a
# token is enters only through a position embedding $\mathbf{P}_t$ added to $\mathbf{e}_t$: $d_\text{model}$ numbers per
# position, against the $2kd$ of NADE's $\mathbf{V}_s$ and $\mathbf{W}_s$.
#
# The package's model is `scratchnade.models.transformer.Transformer` (its module docstring has the equations of a
# whole block: layer norm, multi-head attention, an MLP, residual connections), and the attention itself is in
# `scratchnade/models/attention.py`: `reference_attention` is the equations as loops over heads and positions,
# `attention` / `attend` the same numbers with batched matmuls.

# %%
%matplotlib inline
import os
import textwrap
import time
import warnings
from contextlib import contextmanager
from itertools import zip_longest

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade import sampling
from scratchnade.data import MissingDataError, load_shakespeare_char, window_batches
from scratchnade.data.synthetic import markov_source
from scratchnade.evaluate import perplexity
from scratchnade.gradcheck import check_grads
from scratchnade.models import RecurrentNADE, SequenceNADE, Transformer
from scratchnade.models import attention as A
from scratchnade.models.attention import attend, reference_attention, reference_attention_backward
from scratchnade.ngram import NGramModel
from scratchnade.optim import Adam
from scratchnade.plots import position_nll_curves
from scratchnade.train import fit

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")
rng = np.random.default_rng(0)

# %% [markdown]
# Parameters against the window length $p$, for characters ($d = 65$): order-p NADE with $k = 128$, the RNN with
# $k = 128$, and a transformer with $d_\text{model} = 64$, two blocks of four heads. Only the transformer's position
# embeddings ($p \times 64$) grow with $p$.

# %%
count = lambda m: sum(int(a.size) for a in m.params.values())
print(f"{'p':>5} {'order-p NADE':>13} {'RNN':>9} {'transformer':>12}")
for p in (16, 64, 256):
    print(f"{p:>5} {count(SequenceNADE(65, p=p, H=128)):>13,} {count(RecurrentNADE(65, H=128)):>9,} "
          f"{count(Transformer(65, context=p, d_model=64, layers=2, heads=4)):>12,}")

# %% [markdown]
# ## The causal mask: the lecture's $m_{t,s} = \mathbf{1}[s < t]$, in the package's convention
#
# The FVSBN of notebook 2 writes the autoregressive property as a mask on **tokens**: $f_t$ may read $x_s$ only for
# $s < t$. A transformer masks **positions** instead, and which token sits at a position is a convention. In the
# package (read the docstring of `scratchnade/models/transformer.py`) the input of position $t$ is the **previous**
# token,
#
# $$\mathbf{e}_1 = \mathbf{s} + \mathbf{P}_1, \qquad \mathbf{e}_t = \mathbf{E}[x_{t-1}] + \mathbf{P}_t \quad (t \ge 2),$$
#
# with a learned start vector $\mathbf{s}$, and position $t$'s output $f_t$ predicts $x_t$. So position $t$ may attend to
# every position $r \le t$, **itself included**: positions $1..t$ hold $\mathbf{s}, x_1, \dots, x_{t-1}$, exactly
# $x_{<t}$. The mask on positions is $m_{t,r} = \mathbf{1}[r \le t]$, which is the lecture's $\mathbf{1}[s < t]$ on tokens
# with the token index $s = r - 1$. (Many write-ups put $x_t$ itself at position $t$ and let $f_t$ predict $x_{t+1}$; it is the same
# mask, shifted by one in the labels.) In code the mask is added to the scores before the softmax: $0$ where
# $r \le t$, $-\infty$ where $r > t$ (the strict upper triangle), so $e^{-\infty} = 0$ removes the future exactly.

# %%
print("causal_mask(5): row t, column r (0-based arrays: row 0 is position 1)")
print(A.causal_mask(5, np, np.float64))
print("tokens visible to each position, for the window 'hello':")
for t in range(5):
    print(f"  f_{t + 1} (predicts {'hello'[t]!r}) reads", ["<s>"] + list("hello"[:t]))

# %% [markdown]
# ## How the checks call the package
#
# The exercises write **one head** on time-major arrays: `q`, `k`, `v` of shape `(T, B, d_h)` (window $b$, position $t$),
# the probabilities `p` of shape `(B, T, T)` with `p[b, t, r]` $= p_{t,r}$ of window $b$. The package's `attend` takes
# `(N, T, d_h)` arrays with the queries already divided by $\sqrt{d_h}$; `package_attend` below only moves the axes.
#
# For the gradients the checks use `reference_attention_backward`, the package's multi-head backward written as
# loops. Its input is one `x`, projected by $\mathbf{W}_q, \mathbf{W}_k, \mathbf{W}_v$; to hand it *your* `q`, `k`, `v`, the check
# runs three heads on $\mathbf{x} = [\mathbf{q} \mid \mathbf{k} \mid \mathbf{v}]$, with projections that only copy columns: head 1's
# queries are the `q` columns, its keys the `k` columns, its values the `v` columns, and heads 2 and 3 get zeros.
# Head 1 is then exactly the single head of the exercises, and $\partial \mathbf{x} = [\partial\mathbf{q} \mid \partial\mathbf{k} \mid \partial\mathbf{v}]$.

# %%
def package_attend(q, k, v):
    """The package's causal `attend` on time-major arrays: q, k, v (T, B, d_h) -> (c (T, B, d_h), p (B, T, T))."""
    batch_major = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))          # (T, B, d_h) -> (B, T, d_h)
    c, p, _ = attend(batch_major(q) / np.sqrt(q.shape[-1]), batch_major(k), batch_major(v), causal=True)
    return c.transpose(1, 0, 2), p


def package_grads(q, k, v, dc):
    """dq, dk, dv (T, B, d_h) of the loss sum(dc * c) by the package's reference_attention_backward (see above)."""
    T, B, dh = q.shape
    d = 3 * dh
    x = np.concatenate([q, k, v], axis=-1)                                      # (T, B, 3 d_h)
    pick = lambda j: np.eye(d)[:, j * dh:(j + 1) * dh]                          # (d, d_h): columns j of x
    w = {"W_q": np.zeros((d, d)), "W_k": np.zeros((d, d)), "W_v": np.zeros((d, d)), "W_a": np.eye(d),
         "b_q": np.zeros(d), "b_v": np.zeros(d), "b_a": np.zeros(d)}
    for j, name in enumerate(("W_q", "W_k", "W_v")):
        w[name][:, :dh] = pick(j)                                               # head 1 of q, k, v
    y, cache = reference_attention(x, w, heads=3)
    dy = np.zeros_like(y)
    dy[..., :dh] = dc                                                           # only head 1 reaches the loss
    dx, _ = reference_attention_backward(dy, cache)
    return dx[..., :dh], dx[..., dh:2 * dh], dx[..., 2 * dh:]


q, k, v = (rng.normal(size=(4, 2, 3)) for _ in range(3))                        # T = 4, B = 2, d_h = 3
c, p = package_attend(q, k, v)
print("p of window 0 (row t: the weights of position t over r):\n", p[0].round(3))

# %% [markdown]
# ## Exercise 1: single-head causal attention, forward
#
# Write `attention_forward(q, k, v)` for `q`, `k`, `v` of shape `(T, B, d_h)`: the scores
# $s_{t,r} = \mathbf{q}_t \cdot \mathbf{k}_r / \sqrt{d_h}$ of every pair, $-\infty$ where $r > t$, a softmax over $r$ and
# $\mathbf{c}_t = \sum_r p_{t,r} \mathbf{v}_r$. Return `c` of shape `(T, B, d_h)` and the cache `(q, k, v, p)` with `p` of
# shape `(B, T, T)`. `np.einsum` keeps the axes readable: `np.einsum("tbi,rbi->btr", q, k)` is $\mathbf{q}_t \cdot \mathbf{k}_r$
# for every window. The softmax must survive large scores: subtract each row's maximum before `exp`.

# %%
def attention_forward(q, k, v):
    """Causal single-head attention.  q, k, v (T, B, d_h) -> (c (T, B, d_h), cache (q, k, v, p (B, T, T)))."""
    T, B, dh = q.shape
    # BEGIN SOLUTION the scores (B, T, T), -inf above the diagonal, a stable softmax over r, then c_t = sum_r p_{t,r} v_r
    s = np.einsum("tbi,rbi->btr", q, k) / np.sqrt(dh)          # s_{t,r} = q_t . k_r / sqrt(d_h)
    s = s + np.triu(np.full((T, T), -np.inf), k=1)              # causal mask: -inf where r > t
    s = s - s.max(axis=-1, keepdims=True)                       # stable softmax: each row's max is 0
    p = np.exp(s)
    p = p / p.sum(axis=-1, keepdims=True)                       # p_{t,r}: each row sums to 1
    c = np.einsum("btr,rbi->tbi", p, v)                         # c_t = sum_r p_{t,r} v_r
    # END SOLUTION
    return c, (q, k, v, p)


c, cache = attention_forward(q, k, v)
print("c", c.shape, "\np of window 0:\n", cache[3][0].round(3))

# %% [markdown]
# **Check** against the package's `attend`.

# %%
# Probes: q, k, v drawn at random (T = 5, B = 3, d_h = 4, so sqrt(d_h) = 2 differs from d_h and from 1); the last key
# feature is 1 at every r, so adding a to q's last feature adds a / sqrt(d_h) to a whole row of scores. Your inputs
# compared before and after, a second call, then the present (r = t), the future (r > t: c_t must not move when
# position r changes), the rows of p, the scale, the values, and every score shifted by +-1000.
pr = np.random.default_rng(91)
Tc, Bc, dhc = 5, 3, 4
q_c, k_c, v_c = (pr.normal(size=(Tc, Bc, dhc)) for _ in range(3))
k_c[..., -1] = 1.0
before = [a.copy() for a in (q_c, k_c, v_c)]
with np.errstate(all="ignore"):
    c1, cache1 = attention_forward(q_c, k_c, v_c)
    c2, cache2 = attention_forward(q_c, k_c, v_c)
for name, a, old in zip("qkv", (q_c, k_c, v_c), before):
    assert np.array_equal(a, old), f"attention_forward changed its input {name}: compute into new arrays (not q /= ...)"
assert np.shape(c1) == (Tc, Bc, dhc), f"c should have shape (T, B, d_h) = {(Tc, Bc, dhc)}, got {np.shape(c1)}"
assert len(cache1) == 4, f"the cache should be (q, k, v, p), got {len(cache1)} items"
p1 = cache1[3]
assert np.shape(p1) == (Bc, Tc, Tc), f"p (cache[3]) should have shape (B, T, T) = {(Bc, Tc, Tc)}, p[b, t, r] = p_(t,r), got {np.shape(p1)}"
assert np.array_equal(c1, c2, equal_nan=True) and np.array_equal(p1, cache2[3], equal_nan=True), "a second call gives other values"
ref_c, ref_p = package_attend(q_c, k_c, v_c)
present = np.diagonal(p1, axis1=1, axis2=2)                     # (B, T) p_(t,t)
if not np.all(present > 0):
    t = int(np.flatnonzero(~(present > 0).all(axis=0))[0])
    raise AssertionError(f"p_(t,t) is {present[0, t]} at t = {t}: position t must attend to itself (r = t is the "
                         "present, not the future; with the diagonal masked too, row 0 has nothing left and is nan): "
                         "mask only r > t, np.triu(..., k=1)")
leaks = []                                                      # (t, r): c_t moved when position r > t changed
with np.errstate(all="ignore"):
    for r in range(1, Tc):
        moved = [a.copy() for a in (q_c, k_c, v_c)]
        for a in moved:
            a[r, :, :-1] += 1.0 + pr.normal(size=(Bc, dhc - 1))  # position r only (k's last feature stays 1)
        c_moved = attention_forward(*moved)[0]
        leaks += [(t, r) for t in range(r) if not np.allclose(c_moved[t], c1[t], atol=1e-12)]
if leaks:
    t, r = leaks[0]
    if all(r == t + 1 for t, r in leaks):
        raise AssertionError(f"c_{t} moved when position {r} = t + 1 changed: the mask is off by one, it hides r > t + 1; "
                             "hide r > t, np.triu(..., k=1)")
    raise AssertionError(f"c_{t} moved when q, k, v changed at position {r} > t: position t attends to the future; add "
                         "-inf to the scores where r > t before the softmax")
assert np.allclose(p1.sum(axis=-1), 1.0), "each row p_(t, .) must sum to 1: the softmax runs over r, the last axis"
if not np.allclose(p1, ref_p, atol=1e-12):
    raw = np.einsum("tbi,rbi->btr", q_c, k_c) + np.triu(np.full((Tc, Tc), -np.inf), k=1)
    softmax = lambda s: np.exp(s - s.max(axis=-1, keepdims=True)) / np.exp(s - s.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True)
    for scale, hint in ((1 / dhc, f"the scores are divided by d_h = {dhc}; divide by sqrt(d_h) = {np.sqrt(dhc):g}"),
                        (1.0, f"the scores are not scaled; divide q_t . k_r by sqrt(d_h) = {np.sqrt(dhc):g}")):
        if np.allclose(p1, softmax(raw * scale), atol=1e-12):
            raise AssertionError(f"p differs from the package's attend: {hint}")
    raise AssertionError("p differs from the package's attend: p_(t,r) = softmax over r <= t of q_t . k_r / sqrt(d_h)")
assert np.allclose(c1, ref_c, atol=1e-12), "c differs from the package's attend (your p is right): c_t = sum_r p_(t,r) v_r"
with np.errstate(all="ignore"):
    for shift in (1000.0, -1000.0):
        shifted = q_c.copy()
        shifted[..., -1] += shift * np.sqrt(dhc)                # every score moves by `shift`: p must not change
        c_big, cache_big = attention_forward(shifted, k_c, v_c)
        ok = np.all(np.isfinite(c_big)) and np.allclose(cache_big[3], ref_p, atol=1e-9) and np.allclose(c_big, ref_c, atol=1e-9)
        assert ok, (f"with every score near {shift:+.0f}, p is not finite or changed: exp overflows (or underflows to 0/0); "
                    "subtract the row max of the scores before exp (the softmax is unchanged by a shift)")
print("attention_forward matches the package's attend: the mask, the scale, p and c, and scores shifted by +-1000")

# %% [markdown]
# ## Exercise 2: its backward
#
# For a loss $L$ with $\partial\mathbf{c}_t$ given (`dc`, shape `(T, B, d_h)`), the chain rule back through the forward's
# lines, with $\partial p_{t,r} = \partial\mathbf{c}_t \cdot \mathbf{v}_r$:
#
# $$\partial\mathbf{v}_r = \sum_t p_{t,r}\, \partial\mathbf{c}_t, \qquad
#   \partial s_{t,r} = p_{t,r}\Big(\partial p_{t,r} - \sum_{r'} p_{t,r'}\, \partial p_{t,r'}\Big), \qquad
#   \partial\mathbf{q}_t = \sum_r \frac{\partial s_{t,r}}{\sqrt{d_h}} \mathbf{k}_r, \qquad
#   \partial\mathbf{k}_r = \sum_t \frac{\partial s_{t,r}}{\sqrt{d_h}} \mathbf{q}_t .$$
#
# The middle one is the softmax's Jacobian $\partial p_{t,r} / \partial s_{t,r'} = p_{t,r}(\delta_{r r'} - p_{t,r'})$ applied to a
# row; the masked entries have $p_{t,r} = 0$ and pass no gradient, so no mask is needed here. Write
# `attention_backward(dc, cache)` returning `(dq, dk, dv)`, each of shape `(T, B, d_h)`, without changing the cache.

# %%
def attention_backward(dc, cache):
    """Gradients (dq, dk, dv), each (T, B, d_h), of attention_forward given dc = dL/dc (T, B, d_h)."""
    q, k, v, p = cache
    dh = q.shape[-1]
    # BEGIN SOLUTION dv, then dp and the softmax backward into ds, then dq and dk (both divided by sqrt(d_h))
    dv = np.einsum("btr,tbi->rbi", p, dc)                       # dv_r = sum_t p_{t,r} dc_t
    dp = np.einsum("tbi,rbi->btr", dc, v)                       # dp_{t,r} = dc_t . v_r
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))        # the softmax's Jacobian, row by row
    ds = ds / np.sqrt(dh)                                       # s = q . k / sqrt(d_h)
    dq = np.einsum("btr,rbi->tbi", ds, k)                       # dq_t = sum_r ds_{t,r} k_r
    dk = np.einsum("btr,tbi->rbi", ds, q)                       # dk_r = sum_t ds_{t,r} q_t
    # END SOLUTION
    return dq, dk, dv


dq, dk, dv = attention_backward(rng.normal(size=c.shape), cache)
print([a.shape for a in (dq, dk, dv)])

# %% [markdown]
# **Check** against the package's `reference_attention_backward` (through `package_grads`) and finite differences.

# %%
# Probes: random q, k, v, dc (T = 5, B = 3, d_h = 4) and the package's p, in your cache format; the cache and dc
# compared before and after, a second call, then dv, dq and dk one at a time, and centred differences of the package's
# forward. One property helps: adding the same vector to every key adds q_t . u to a whole row of scores, which the
# softmax ignores, so the keys' gradients of each window sum to 0 over r.
pr = np.random.default_rng(92)
Tc, Bc, dhc = 5, 3, 4
q_c, k_c, v_c, dc_c = (pr.normal(size=(Tc, Bc, dhc)) for _ in range(4))
_, p_c = package_attend(q_c, k_c, v_c)
cache_c = (q_c, k_c, v_c, p_c)
before = [a.copy() for a in cache_c + (dc_c,)]
g1 = attention_backward(dc_c, cache_c)
for name, a, old in zip(("q", "k", "v", "p", "dc"), cache_c + (dc_c,), before):
    assert np.array_equal(a, old), f"attention_backward changed the cached {name}: compute into new arrays"
g2 = attention_backward(dc_c, cache_c)
assert len(g1) == 3, f"return (dq, dk, dv), got {len(g1)} items"
for name, g in zip(("dq", "dk", "dv"), g1):
    assert np.shape(g) == (Tc, Bc, dhc), f"{name} should have the shape of {name[1]}, (T, B, d_h) = {(Tc, Bc, dhc)}, got {np.shape(g)}"
assert all(np.array_equal(a, b) for a, b in zip(g1, g2)), "a second call gives other gradients"
dq_c, dk_c, dv_c = g1
ref_dq, ref_dk, ref_dv = package_grads(q_c, k_c, v_c, dc_c)
if not np.allclose(dv_c, ref_dv, atol=1e-12):
    hint = ("you summed p over the keys r (p transposed); the sum runs over the queries t that read v_r"
            if np.allclose(dv_c, np.einsum("brt,tbi->rbi", p_c, dc_c), atol=1e-12) else "dv_r = sum_t p_(t,r) dc_t")
    raise AssertionError(f"dv differs from the package's: {hint}")
if np.allclose(dq_c, ref_dk, atol=1e-12) and np.allclose(dk_c, ref_dq, atol=1e-12):
    raise AssertionError("dq and dk are swapped: a query meets the keys, dq_t = sum_r ds_(t,r) k_r / sqrt(d_h); "
                         "a key meets the queries, dk_r = sum_t ds_(t,r) q_t / sqrt(d_h)")
if np.allclose(dq_c, np.sqrt(dhc) * ref_dq, atol=1e-12) and np.allclose(dk_c, np.sqrt(dhc) * ref_dk, atol=1e-12):
    raise AssertionError(f"dq and dk are sqrt(d_h) = {np.sqrt(dhc):g} times too large: s = q . k / sqrt(d_h), so ds carries 1 / sqrt(d_h)")
if not np.allclose(dk_c.sum(axis=0), 0.0, atol=1e-10):
    raise AssertionError("the keys' gradients do not sum to 0 over r (they must: a shift of every key moves a whole row "
                         "of scores, which the softmax ignores): the softmax backward is missing the - sum_r' p_(t,r') "
                         "dp_(t,r') term, ds = p (dp - sum_r' p dp)")
assert np.allclose(dq_c, ref_dq, atol=1e-12), "dq differs from the package's (dv is right): dq_t = sum_r ds_(t,r) k_r / sqrt(d_h)"
assert np.allclose(dk_c, ref_dk, atol=1e-12), "dk differs from the package's (dv, dq are right): dk_r = sum_t ds_(t,r) q_t / sqrt(d_h)"
arrays = {"q": q_c.copy(), "k": k_c.copy(), "v": v_c.copy()}
loss = lambda: float((package_attend(arrays["q"], arrays["k"], arrays["v"])[0] * dc_c).sum())   # L = sum dc * c
for name, err in check_grads(loss, arrays, {"q": dq_c, "k": dk_c, "v": dv_c}).items():     # centred differences
    assert err < 1e-7, f"d{name} disagrees with finite differences (relative error {err:.1e})"
print("attention_backward matches reference_attention_backward and finite differences")

# %% [markdown]
# ## The mask bug, planted in the model and caught
#
# The autoregressive property says $f_t$ depends on $x_{<t}$ and on nothing else. Test it on the model itself, not on
# its mask: change one token $x_t$ in a batch of windows and record which logits move. With 0-based arrays, `x[t]` is
# predicted by `f[t]`, so the matrix "`f[u]` moved when `x[t]` changed" must be **strictly upper triangular** in
# $(t, u)$: nothing on or below the diagonal (a logit that sees the token it predicts, or a later one), and the
# first superdiagonal full ($f_{t+1}$ must read $x_t$).
#
# We plant two bugs in the fast path that training uses, by swapping the package's `causal_mask` for a wrong one
# inside a `with` block (the package's files are not edited, and the real mask is put back on the way out): the
# mask removed, and the mask shifted by one so that position $t$ also sees position $t + 1$. The model has every
# parameter drawn at random, so that no dependence is hidden by a weight that happens to be 0.

# %%
def dependence(model, x):
    """D (T, T) bool: D[t, u] = the logits f[u] moved when the token x[t] changed, in some window of x (T, B)."""
    f = np.asarray(model.logits(x))
    T = x.shape[0]
    D = np.zeros((T, T), dtype=bool)
    for t in range(T):
        y = x.copy()
        y[t] = (y[t] + 1) % model.vocab_size                              # change x[t] in every window
        D[t] = ~np.isclose(np.asarray(model.logits(y)), f, rtol=0, atol=1e-12).all(axis=(1, 2))
    return D


def assert_autoregressive(model, x):
    """AssertionError unless f[u] depends on x[t] for t < u only, and f[t + 1] reads x[t]."""
    D = dependence(model, x)
    leaks = np.argwhere(np.tril(D))                                         # u <= t
    if len(leaks):
        t, u = leaks[0]
        raise AssertionError(f"f[{u}] moved when x[{t}] changed ({len(leaks)} such pairs): the logits of x[{u}] see "
                             f"{'the token they predict' if t == u else 'a later token'}")
    blind = [t for t in range(len(D) - 1) if not D[t, t + 1]]
    assert not blind, f"f[{blind[0] + 1}] ignores x[{blind[0]}], the token just before the one it predicts"


@contextmanager
def planted_mask(mask):
    """Inside the block the package's attention uses `mask(T, xp, dtype)` instead of causal_mask."""
    real = A.causal_mask
    A.causal_mask = mask
    try:
        yield
    finally:
        A.causal_mask = real


real_mask = A.causal_mask
bugs = {"mask removed": lambda T, xp, dtype: xp.zeros((T, T), dtype=dtype),
        "mask shifted by one (r <= t + 1)": lambda T, xp, dtype: xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=2)}
toy = Transformer(6, context=6, d_model=8, layers=2, heads=2, seed=0, dtype=np.float64)
toy.load_state_dict({k: rng.normal(0.0, 0.5, a.shape) + (k[0] == "g") for k, a in toy.params.items()})   # gains near 1
x_toy = rng.integers(0, 6, size=(6, 8))

assert_autoregressive(toy, x_toy)
print("the real model: passes")
matrices = {"the package's mask": dependence(toy, x_toy)}
for name, mask in bugs.items():
    with planted_mask(mask):
        matrices[name] = dependence(toy, x_toy)
        try:
            assert_autoregressive(toy, x_toy)
        except AssertionError as e:
            print(f"{name}: caught: {e}")
        else:
            raise RuntimeError(f"{name}: the autoregressive check let it through")
assert A.causal_mask is real_mask
assert_autoregressive(toy, x_toy)                                           # the real mask is back

fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, (name, D) in zip(axes, matrices.items()):
    ax.imshow(D, cmap="Greys", vmin=0, vmax=1)
    ax.plot([-0.5, 5.5], [-0.5, 5.5], color="tab:red", lw=1)              # on or below: a leak
    ax.set(title=name, xlabel="logits f[u] moved", ylabel="token x[t] changed")
fig.suptitle("black: f[u] depends on x[t]; it must stay strictly above the red diagonal", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What a leaky model learns
#
# The leak is not a small error. With the mask shifted by one, $f_t$ reads position $t+1$, whose input is $x_t$:
# the very token it must predict. Training finds that shortcut at once, and the loss falls far below anything an
# honest model of the text can reach. At sampling time the shortcut is gone (the key/value cache of `Transformer.sample`
# holds only the positions already drawn, so no mask is involved), and the samples show what the model really
# learned. Two small transformers, the same seed and the same batches; the validation NLL of the leaky one is
# computed with its leak in place, the way its training loss was.
#
# The data for the rest of the notebook: tiny-shakespeare characters when `SCRATCHNADE_DATA` has them, else a random
# Markov chain whose entropy rate is known.

# %%
try:
    corpus = load_shakespeare_char()
    train_ids, valid_ids, V, vocab = corpus.train, corpus.valid, corpus.vocab_size, corpus.vocab
    decode = lambda ids: vocab.decode(ids, sep="")
    source = "tiny-shakespeare (characters)"
except MissingDataError:
    chain = markov_source(V=16, n_tokens=120_000, seed=0)
    train_ids, valid_ids, V, vocab = chain.ids[:100_000], chain.ids[100_000:], 16, None
    decode = lambda ids: "".join(chr(ord("a") + int(i)) for i in ids)
    source = f"Markov chain, entropy rate {chain.entropy:.3f} nats per token"
print(f"{source}: V = {V}, {train_ids.size:,} training and {valid_ids.size:,} validation tokens")

leak_steps = 50 if FAST else 100
leak_ids = train_ids[:leak_steps * 32 * 32]                                 # leak_steps batches of 32 windows of 32
small = {}
for name, mask in (("honest", real_mask), ("leaky", bugs["mask shifted by one (r <= t + 1)"])):
    model = Transformer(V, context=32, d_model=32, layers=1, heads=2, seed=0)
    with planted_mask(mask):
        fit(model, lambda e: window_batches(leak_ids, 32, 32, rng=e), None, Adam(lr=3e-3), epochs=1, progress=False)
        nll = perplexity(model, valid_ids[:8192], p=32, mode="chunked")["nll"]
    small[name] = model
    text = decode(sampling.sample(model, 1, 80, seed=0)[:, 0])
    print(f"{name:7s} validation NLL {nll:.3f} nats/char; a sample: {text!r}")

# %% [markdown]
# ## RNN against transformer, on the same characters
#
# A recurrent NADE and a transformer with about the same number of parameters (the RNN with $k = 256$, the transformer
# with $d_\text{model} = 64$, two blocks of four heads, context 64), trained on the same windows of 64 characters,
# one pass over the same training text, each with Adam at a learning rate that suits it (in trial runs of this size
# with $3\cdot 10^{-3}$ and $10^{-2}$, the RNN did better with the larger, the transformer with the smaller). Fast mode (CI)
# trains tiny models for seconds: its numbers only show that everything runs. The full mode trains on 300k characters,
# a few minutes on a laptop CPU; the numbers printed are this notebook's own run, nothing is copied in.
#
# The validation NLL is chunked: windows of 64 characters, each scored from its own start, as trained.

# %%
p = 32 if FAST else 64
n_train, H_rnn, d_model, layers = (40_000, 64, 32, 1) if FAST else (300_000, 256, 64, 2)
models = {"RNN": RecurrentNADE(V, H=H_rnn, seed=0),
          "transformer": Transformer(V, context=p, d_model=d_model, layers=layers, heads=4, seed=0)}
rates = {"RNN": 1e-2, "transformer": 3e-3}
rows = []
for name, model in models.items():
    t0 = time.time()
    fit(model, lambda e: window_batches(train_ids[:n_train], p, 32, rng=e), None, Adam(lr=rates[name], clip=1.0),
        epochs=1, progress=False)
    seconds = time.time() - t0
    nll = perplexity(model, valid_ids[:20_000], p=p, mode="chunked", batch_size=256)["nll"]
    rows.append((name, count(model), seconds, nll))
print(f"{'model':12s} {'params':>9s} {'train s':>8s} {'valid NLL':>10s} {'ppl':>7s}")
for name, n, s, nll in rows:
    print(f"{name:12s} {n:>9,} {s:>8.1f} {nll:>10.3f} {np.exp(nll):>7.2f}")

# %% [markdown]
# Samples, side by side: the same prompt, the same seed, temperature 0.8.

# %%
prompt = "ROMEO:\n" if vocab is not None else None
width = 38
columns = []
for name, model in models.items():
    if vocab is not None:
        texts = sampling.sample_text(model, vocab, 2, 200 if not FAST else 80, prompt_text=prompt, seed=0, temperature=0.8)
    else:
        texts = [decode(col) for col in sampling.sample(model, 2, 120, seed=0, temperature=0.8).T]
    lines = [f"--- {name} ---"]
    for text in texts:
        lines += [piece for line in text.split("\n") for piece in (textwrap.wrap(line, width) or [""])] + [""]
    columns.append(lines)
for left, right in zip_longest(*columns, fillvalue=""):
    print(f"{left:<{width}}  |  {right}")

# %% [markdown]
# ## NLL by position, and exposure bias
#
# The tools of notebook 7: `sampling.position_nll` draws real windows of 64 characters and as many samples of each
# model, and scores every position $t$ with the model itself and with a fixed **reference**, a trigram model fitted on
# the training text (it does not share either network's mistakes). Two questions:
#
# * **Teacher forced**, on real text: how does the NLL fall as the prefix grows? Both models read the whole prefix
#   of the window; the RNN through its state, the transformer directly.
# * **Free running**, on the models' own samples: does the reference find the samples worse than real text, and
#   does the gap grow with $t$ (exposure bias: each model conditions on its own draws, which training never showed it)?

# %%
reference = NGramModel(order=3).fit(train_ids[:n_train], V, valid=valid_ids)
n_windows = 32 if FAST else 256
results = {name: sampling.position_nll(model, reference, valid_ids, p, n=n_windows, seed=0) for name, model in models.items()}
fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
for ax, (name, r) in zip(axes, results.items()):
    position_nll_curves(r, smooth=4, reference="trigram", title=name, ax=ax)
fig.tight_layout()
plt.show()

# %%
smooth = lambda y: np.convolve(y, np.ones(4) / 4, mode="valid")              # moving average of 4 positions
fig, ax = plt.subplots(figsize=(6.0, 3.8))
for (name, r), color in zip(results.items(), ("tab:blue", "tab:orange")):
    ax.plot(smooth(r.t), smooth(r.model_data), color=color, label=f"{name}, teacher forced on real text")
    ax.plot(smooth(r.t), smooth(r.reference_samples), "--", color=color, label=f"trigram on the {name}'s samples")
ax.plot(smooth(r.t), smooth(r.reference_data), ":", color="k", label="trigram on real text")
ax.set(xlabel="position t in the window (moving average of 4)", ylabel="NLL (nats per character)",
       title="per-position NLL, both models")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))        # beside the axes: no curve hidden
plt.show()
head, tail = slice(0, 4), slice(p // 2, p)
print(f"{'':12s} {'model, t <= 4':>14s} {f'model, t > {p // 2}':>15s} {'ref on samples':>15s} {'ref on real':>12s}")
for name, r in results.items():
    print(f"{name:12s} {r.model_data[head].mean():>14.3f} {r.model_data[tail].mean():>15.3f} "
          f"{r.reference_samples.mean():>15.3f} {r.reference_data.mean():>12.3f}")

# %% [markdown]
# Reading the numbers (this run's, printed above; one pass over 300k characters leaves both models far from converged):
#
# * The first positions of a window cost both models about the same: there is little prefix to read.
# * Which model is ahead at the later positions is this run's result, not a law. The RNN's recurrence favours the
#   recent past from its first training step; the transformer must first learn, through the position embeddings
#   $\mathbf{P}_t$, where the previous characters are before it can use them, and on a small budget that can leave it
#   behind an RNN of the same size. Its advantages (every earlier position one step away, all positions computed at
#   once in training) show with more data, more training and longer contexts.
# * On the samples, the trigram's NLL above its NLL of real text is the exposure-bias gap of notebook 7, now for both
#   kinds of conditionals. Attention changes how the prefix is read, not how the model is trained: the transformer is
#   trained with teacher forcing too, and nothing protects it from conditioning on its own mistakes when it samples.
