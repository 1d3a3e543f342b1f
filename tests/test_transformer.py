"""Transformer: the ops (layer norm, GELU, causal attention, MLP) and the model -- both tiers agree,
finite differences, the autoregressive property, normalisation, key/value-cache decoding, errors."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy, to_device
from scratchnade.gradcheck import assert_grads_close, numerical_partials
from scratchnade.models import attention as A
from scratchnade.models import transformer as M
from scratchnade.models.sequence import SequenceModel, draw_tokens
from scratchnade.models.transformer import Transformer
from tiers import assert_tiers_agree, on

F64 = np.float64


def make(V=5, context=4, d=4, layers=1, heads=2, tied=False, seed=0, scale=0.5, **kw):
    """A float64 model with every parameter random (biases and gains too), so no gradient is trivially 0."""
    m = Transformer(V, context=context, d_model=d, layers=layers, heads=heads, tied=tied, seed=seed,
                    dtype=F64, **kw)
    rng = np.random.default_rng(seed + 100)
    m.load_state_dict({k: rng.normal(0.0, scale, v.shape) + (1.0 if k[0] == "g" else 0.0)
                       for k, v in m.params.items()})
    return m


def random_masks(rng, params, heads, T, B, names=M.MASK_KEYS, q=0.3):
    """Fixed inverted-dropout masks (keep probability 1 - q) for the names given."""
    shapes = M._mask_shapes(params, heads, T, B)
    return {k: (rng.random(shapes[k]) >= q) / (1.0 - q) for k in names}


def host(a):
    return {k: np.array(asnumpy(v)) for k, v in a.items()} if isinstance(a, dict) else np.array(asnumpy(a))


def assert_matches_finite_differences(loss_fn, arrays, grads, max_elements=None, seed=0, rtol=1e-6, atol=1e-9):
    """Centred differences of loss_fn() against `grads`, entry by entry (or `max_elements` random
    entries per array).  An array passes at relative error rtol, or where every entry agrees to
    atol: a gradient that is 0 in exact arithmetic (W_q of a window of one position, whose
    softmax has one entry) has finite differences of pure round-off, which no relative error
    can judge.  The differences are Richardson-extrapolated, (4 D(h/2) - D(h)) / 3, which cancels
    their h^2 error: a layer norm over d = 3 features can curve so sharply that plain centred
    differences at h = 1e-5 are off by 5e-6 relative (a hypothesis-found W_2 entry whose centred
    differences converge to the analytic value as h^2: 8e-3, 8e-5, 8e-7, 8e-9 at h = 1e-3..1e-6)."""
    rng = np.random.default_rng(seed)
    grads = host(grads)
    for name, a in arrays.items():
        idx = list(np.ndindex(*a.shape))
        if max_elements is not None and len(idx) > max_elements:
            idx = [idx[i] for i in rng.choice(len(idx), max_elements, replace=False)]
        num = (4 * numerical_partials(loss_fn, a, idx, h=0.5e-5) - numerical_partials(loss_fn, a, idx, h=1e-5)) / 3
        ana = np.array([grads[name][i] for i in idx])
        assert_grads_close(ana, num, rtol=rtol, atol=atol, what=f"gradient {name!r}")


def all_sequences(V, T):
    """Every sequence of T ids in [0, V), as columns: (T, V^T)."""
    return np.array(list(itertools.product(range(V), repeat=T)), dtype=np.int64).T


# ============================================================================= the ops

@st.composite
def attention_cases(draw):
    """(x, w, heads, drop) with float64 entries, drawn sizes, with or without a dropout mask."""
    T, B = draw(st.integers(1, 5), label="T"), draw(st.integers(1, 3), label="B")
    heads, dh = draw(st.integers(1, 3), label="heads"), draw(st.integers(1, 3), label="d_head")
    d = heads * dh
    rng = np.random.default_rng(draw(st.integers(0, 10_000), label="seed"))
    x = rng.normal(size=(T, B, d))
    w = {k: rng.normal(0.0, 0.7, (d, d) if k[0] == "W" else d) for k in A.ATTENTION_KEYS}
    drop = (rng.random((B, heads, T, T)) >= 0.3) / 0.7 if draw(st.booleans(), label="dropout") else None
    return x, w, heads, drop


@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=15, deadline=None)
@given(case=attention_cases())
def test_attention_fast_equals_reference(device, case):
    x, w, heads, drop = on(device, *case)
    heads = case[2]
    y_ref, c_ref = A.reference_attention(x, w, heads, drop)
    y, c = A.attention(x, w, heads, drop)
    assert_grads_close(y, y_ref, rtol=1e-12, what="attention output")
    dy = to_device(np.random.default_rng(1).normal(size=x.shape), device)
    dx_ref, g_ref = A.reference_attention_backward(dy, c_ref)
    dx, g = A.attention_backward(dy, c)
    assert set(g) == set(g_ref) == set(A.ATTENTION_KEYS)
    assert_grads_close(dx, dx_ref, rtol=1e-10, atol=1e-14, what="dx")
    assert_grads_close(g, g_ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("form", ["reference", "fast"])
@settings(max_examples=10, deadline=None)
@given(case=attention_cases())
def test_attention_matches_finite_differences(form, case):
    """Drawn T, B, heads, head size, with or without a dropout mask; the loops of the reference
    form are slow, so it is checked on 8 random entries per array, the fast form on all."""
    x, w, heads, drop = case
    op, op_backward = ((A.reference_attention, A.reference_attention_backward) if form == "reference"
                       else (A.attention, A.attention_backward))
    R = np.random.default_rng(3).normal(size=x.shape)               # loss = sum(R * y)
    dx, grads = op_backward(R, op(x, w, heads, drop)[1])
    assert set(grads) == set(A.ATTENTION_KEYS)
    assert_matches_finite_differences(lambda: float((op(x, w, heads, drop)[0] * R).sum()),
                                      {"x": x, **w}, {"x": dx, **grads},
                                      max_elements=8 if form == "reference" else None)


def test_a_key_bias_would_change_nothing():
    """Why the keys have no bias: k_r + b_k adds q_t . b_k to the whole row t of scores, and the
    softmax of a row is unchanged by a shift."""
    rng = np.random.default_rng(11)
    q, k, v = rng.normal(size=(3, 4, 5, 2))                          # (N = 4, T = 5, d_h = 2) each
    c, p, _ = A.attend(q, k, v)
    b_k = rng.normal(size=(4, 1, 2))                                 # one key bias per (window, head)
    c2, p2, _ = A.attend(q, k + b_k, v)
    np.testing.assert_allclose(p2, p, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c2, c, rtol=1e-12)
    assert "b_k" not in A.ATTENTION_KEYS and "W_k" in A.ATTENTION_KEYS


def test_attention_is_causal_and_its_rows_are_distributions():
    rng = np.random.default_rng(4)
    T, B, heads, d = 5, 2, 2, 6
    x = rng.normal(size=(T, B, d))
    w = {k: rng.normal(0.0, 0.7, (d, d) if k[0] == "W" else d) for k in A.ATTENTION_KEYS}
    y, cache = A.attention(x, w, heads)
    p = cache.p.reshape(B, heads, T, T)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-13)
    assert not p[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]].any()   # no weight on r > t
    np.testing.assert_allclose(p, A.reference_attention(x, w, heads)[1].p, rtol=1e-12)
    for t in range(T):
        z = x.copy()
        z[t:] = rng.normal(size=z[t:].shape)                          # change every position >= t
        y2 = A.attention(z, w, heads)[0]
        np.testing.assert_allclose(y2[:t], y[:t], rtol=1e-13)         # y_<t unchanged
        assert np.abs(y2[t] - y[t]).min() > 0                         # y_t sees x_t


def test_causal_mask_is_minus_infinity_strictly_above_the_diagonal():
    m = A.causal_mask(4, np, F64)
    assert m.shape == (4, 4) and m.dtype == F64
    np.testing.assert_array_equal(np.isneginf(m), np.triu(np.ones((4, 4), bool), k=1))
    assert not m[np.tril_indices(4)].any()


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(3,), (2, 5), (3, 2, 4), (1, 1, 1)]), seed=st.integers(0, 1000),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_layer_norm_fast_equals_reference_and_finite_differences(shape, seed, scale):
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=shape)
    d = shape[-1]
    g, beta = rng.normal(size=d), rng.normal(size=d)
    y_ref, c_ref = A.reference_layer_norm(x, g, beta)
    y, c = A.layer_norm(x, g, beta)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    R = rng.normal(size=shape)
    ref = A.reference_layer_norm_backward(R, c_ref)
    fast = A.layer_norm_backward(R, c)
    for a, b, name in zip(fast, ref, ("dx", "dg", "dbeta")):
        assert_grads_close(a, b, rtol=1e-10, atol=1e-12, what=name)
    if scale == 1.0:
        assert_matches_finite_differences(lambda: float((A.layer_norm(x, g, beta)[0] * R).sum()),
                                          {"x": x, "g": g, "beta": beta}, dict(zip(("x", "g", "beta"), fast)))


def test_layer_norm_normalises_each_row():
    x = np.random.default_rng(5).normal(3.0, 7.0, size=(4, 3, 16))
    y, _ = A.layer_norm(x, np.ones(16), np.zeros(16))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-5)     # 1 - eps / sigma^2
    y2, _ = A.layer_norm(x, 2.0 * np.ones(16), np.full(16, 0.5))
    np.testing.assert_allclose(y2, 2.0 * y + 0.5, rtol=1e-13)


def test_gelu_is_the_tanh_form_and_its_backward_is_its_derivative():
    a = np.linspace(-6.0, 6.0, 241)
    exact = 0.5 * a * (1.0 + np.vectorize(math.erf)(a / math.sqrt(2.0)))   # the erf definition
    assert np.abs(A.gelu(a) - exact).max() < 1e-3                          # the tanh form approximates it
    c = math.sqrt(2.0 / math.pi)
    np.testing.assert_allclose(A.gelu(a), 0.5 * a * (1.0 + np.tanh(c * (a + 0.044715 * a ** 3))), rtol=1e-14)
    np.testing.assert_allclose(A.gelu(a) - A.gelu(-a), a, atol=1e-14)      # gelu(a) - gelu(-a) = a
    np.testing.assert_allclose(A.gelu(np.array([-40.0, 0.0, 40.0])), [0.0, 0.0, 40.0], atol=1e-300)
    buf = np.empty_like(a)
    assert A.gelu(a, out=buf) is buf
    dy = np.random.default_rng(6).normal(size=a.shape)
    num = numerical_partials(lambda: float((A.gelu(a) * dy).sum()), a, [(i,) for i in range(a.size)])
    np.testing.assert_allclose(A.gelu_backward(dy, a), num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 4), B=st.integers(1, 3), d=st.integers(1, 4), seed=st.integers(0, 1000))
def test_mlp_fast_equals_reference_and_finite_differences(device, T, B, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, d))
    w = {"W_1": rng.normal(size=(d, 4 * d)), "b_1": rng.normal(size=4 * d),
         "W_2": rng.normal(size=(4 * d, d)), "b_2": rng.normal(size=d)}
    R = rng.normal(size=(T, B, d))
    x, w, R = on(device, x, w, R)
    y_ref, c_ref = A.reference_mlp(x, w)
    y, c = A.mlp(x, w)
    assert_grads_close(y, y_ref, rtol=1e-12, what="mlp output")
    dx_ref, g_ref = A.reference_mlp_backward(R, c_ref)
    dx, g = A.mlp_backward(R, c)
    assert_grads_close(dx, dx_ref, rtol=1e-10, what="dx")
    assert_grads_close(g, g_ref, rtol=1e-10)
    if device == "cpu":
        assert_matches_finite_differences(lambda: float((A.mlp(x, w)[0] * R).sum()), {"x": x, **w},
                                          {"x": dx, **g})


def test_ops_refuse_bad_heads_and_masks():
    x = np.zeros((3, 2, 6))
    w = {k: np.zeros((6, 6) if k[0] == "W" else 6) for k in A.ATTENTION_KEYS}
    for op in (A.attention, A.reference_attention):
        with pytest.raises(ValueError, match="heads = 4 must be >= 1 and divide d_model = 6"):
            op(x, w, 4)
        with pytest.raises(ValueError, match="attention dropout mask"):
            op(x, w, 2, np.ones((2, 2, 3, 2)))


# ============================================================================= the model: two tiers, gradients

@st.composite
def problems(draw, min_d=1):
    """(params, x, heads, masks) of a small random float64 transformer: drawn heads, head size,
    layers, context, window, vocabulary, tying and any subset of the three dropout masks.
    d_model = heads * d_head >= min_d."""
    heads = draw(st.integers(1, 3), label="heads")
    dh = draw(st.integers(-(-min_d // heads), max(2, -(-min_d // heads))), label="d_head")
    layers, context = draw(st.integers(1, 2), label="layers"), draw(st.integers(1, 5), label="context")
    T, B = draw(st.integers(1, context), label="T"), draw(st.integers(1, 3), label="B")
    V, tied = draw(st.integers(2, 6), label="V"), draw(st.booleans(), label="tied")
    names = draw(st.sets(st.sampled_from(M.MASK_KEYS)), label="dropout masks")
    seed = draw(st.integers(0, 10_000), label="seed")
    m = make(V, context, heads * dh, layers, heads, tied, seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B))
    masks = random_masks(rng, m.params, heads, T, B, sorted(names)) if names else None
    return m.params, x, heads, masks


@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=12, deadline=None)
@given(problem=problems())
def test_fast_pair_equals_the_reference(device, problem):
    params, x, heads, masks = problem
    params, x, masks = on(device, params, x, masks)
    assert_tiers_agree(M, params, x, heads, masks)


@pytest.mark.parametrize("tied", [False, True])
def test_reference_matches_finite_differences(tied):
    m = make(V=3, context=3, d=4, layers=2, heads=2, tied=tied, seed=1)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (3, 2))
    masks = random_masks(rng, m.params, 2, 3, 2)
    _, cache = M.reference_forward(m.params, x, 2, masks)
    grads = M.reference_backward(1.0, cache)
    assert_matches_finite_differences(lambda: float(M.reference_forward(m.params, x, 2, masks)[0]),
                                      m.params, grads, max_elements=12)


@settings(max_examples=8, deadline=None)
@given(problem=problems(min_d=3))
def test_gradients_match_finite_differences(problem):
    """d_model >= 3: a layer norm of 1 or 2 features is (nearly) constant, xhat = 0 or +-1, so
    the gradients through it are ~eps / sigma^2 and finite differences see only round-off."""
    params, x, heads, masks = problem
    V, d = params["E"].shape
    m = Transformer(V, context=params["P"].shape[0], d_model=d, layers=params["W_q"].shape[0], heads=heads,
                    tied="W_o" not in params, dtype=F64)
    m.load_state_dict(params)
    _, grads = m.loss_and_grads(x, masks=masks)
    assert set(grads) == set(m.params)
    assert_matches_finite_differences(lambda: m.loss_and_grads(x, masks=masks)[0], m.params, grads,
                                      max_elements=10)


def test_unused_rows_get_zero_gradients():
    m = make(V=5, context=6, d=4, layers=2, heads=2)
    x = np.array([[1, 2], [3, 3], [0, 4]])                            # T = 3 < context: P[3:] unused
    _, grads = m.loss_and_grads(x)
    assert np.abs(grads["P"][:3]).min(axis=1).min() > 0
    assert not grads["P"][3:].any()
    assert np.abs(grads["E"][[1, 2, 3]]).min(axis=1).max() > 0        # tokens read as inputs
    np.testing.assert_array_equal(grads["E"][[0, 4]], 0.0)            # x_3 only: the input of nothing ...
    assert np.abs(grads["W_o"][[0, 4]]).max() > 0                     # ... but targets


@pytest.mark.parametrize("tied", [False, True])
def test_tied_output_is_the_embedding_and_its_gradient_sums_both_uses(tied):
    m = make(V=5, d=4, tied=tied)
    assert ("W_o" in m.params) != tied
    x = np.array([[1, 3], [2, 1], [0, 0]])
    _, grads = m.loss_and_grads(x)
    h = M.decoder(m.params, x, 2)[0]
    W = m.params["E"] if tied else m.params["W_o"]
    np.testing.assert_allclose(m.logits(x), h @ W.T + m.params["b"], rtol=1e-12)
    E = m.params["E"]
    E[1, 0] += 1e-6                                                   # both uses see the change
    lp = m.loss_and_grads(x)[0]
    E[1, 0] -= 2e-6
    lm = m.loss_and_grads(x)[0]
    E[1, 0] += 1e-6
    assert abs((lp - lm) / 2e-6 - grads["E"][1, 0]) < 1e-7


# ============================================================================= probabilities

def assert_autoregressive(m, x, reference=False):
    """f_t of windows x depends on x_<t only: changing x_>=t leaves f_1 .. f_t alone (0-based:
    logits[:t + 1]), and changing x_{t-1} changes f_t."""
    V = m.vocab_size
    rng = np.random.default_rng(0)

    def logits(z):
        if reference:
            return np.stack(M.reference_forward(m.params, z, m.heads)[1].logp)
        return m.logits(z)
    f = logits(x)
    T = x.shape[0]
    for t in range(T):
        y = x.copy()
        y[t:] = (y[t:] + 1 + rng.integers(0, V - 1, y[t:].shape)) % V   # change every token >= t
        np.testing.assert_array_equal(logits(y)[:t + 1], f[:t + 1], err_msg=f"f_<={t} saw x_>={t}")
        if t + 1 < T:
            z = x.copy()
            z[t] = (z[t] + 1) % V                                     # change x_t only
            assert np.all(np.abs(logits(z)[t + 1] - f[t + 1]).max(axis=1) > 1e-10), f"f_{t + 1} ignores x_{t}"


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("tied,layers,heads", [(False, 1, 1), (True, 2, 2)])
def test_autoregressive_property(reference, tied, layers, heads):
    m = make(V=6, context=5, d=4, layers=layers, heads=heads, tied=tied, seed=2)
    x = np.random.default_rng(3).integers(0, 6, (5, 3))
    assert_autoregressive(m, x, reference)


def test_the_autoregressive_check_catches_attention_to_the_future(monkeypatch):
    """The planted bug: a mask that lets position t attend to t + 1."""
    m = make(V=6, context=5, d=4, layers=1, heads=2, seed=2)
    x = np.random.default_rng(3).integers(0, 6, (5, 3))
    monkeypatch.setattr(A, "causal_mask", lambda T, xp, dtype: xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=2))
    with pytest.raises(AssertionError, match="saw"):
        assert_autoregressive(m, x)


def test_the_first_token_is_predicted_from_the_start_vector():
    m = make(V=5, context=3, d=4, layers=2)
    f = m.logits(np.array([[1, 4], [0, 2]]))
    np.testing.assert_allclose(f[0, 0], f[0, 1], rtol=1e-13)          # position 1 reads no token
    h = M.decode_step(m.params, 2, M.kv_cache(m.params, 1, 2, 1), 0)  # from s + P_1 alone
    np.testing.assert_allclose(M.output_logits(m.params, h)[0], f[0, 0], rtol=1e-12)
    m.params["s"][0] += 0.5
    assert np.abs(m.logits(np.array([[1, 4], [0, 2]]))[0] - f[0]).min() > 0


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("V,T", [(3, 3), (2, 4)])
def test_normalised_over_every_sequence(V, T, tied):
    m = make(V, context=4, d=4, layers=2, heads=2, tied=tied, scale=1.0)
    total = np.exp(m.log_prob(all_sequences(V, T)).sum(axis=0)).sum()
    assert abs(total - 1.0) < 1e-10


def test_log_prob_is_the_loss_and_chunked_evaluation_scores_every_token():
    from scratchnade.evaluate import perplexity
    m = make(V=5, context=4, d=4)
    ids = np.random.default_rng(8).integers(0, 5, 23)
    windows = ids[:20].reshape(5, 4).T                                 # (p, B) chunks
    lp = m.log_prob(windows)
    assert lp.shape == (4, 5)
    assert m.loss_and_grads(windows)[0] == pytest.approx(-lp.mean(), rel=1e-12)
    r = perplexity(m, ids[:20], batch_size=2)
    assert r["p"] == 4 and r["tokens"] == 20
    assert r["nll"] == pytest.approx(-lp.mean(), rel=1e-12)


# ============================================================================= decoding with the key/value cache

@pytest.mark.parametrize("tied,layers", [(False, 1), (True, 2)])
def test_next_token_logits_equal_the_full_forward(tied, layers):
    m = make(V=5, context=6, d=6, layers=layers, heads=3, tied=tied)
    x = np.random.default_rng(9).integers(0, 5, (6, 3))
    f = m.logits(x)
    for t in range(6):
        np.testing.assert_allclose(m.next_token_logits(x[:t]), f[t], rtol=1e-11, atol=1e-12)
    cache = M.kv_cache(m.params, 3, 3, 6)
    for t in range(6):                                                # one cache through the window
        h = M.decode_step(m.params, 3, cache, t, None if t == 0 else x[t - 1])
        np.testing.assert_allclose(M.output_logits(m.params, h), f[t], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("length", [6, 10])
@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7, "top_k": 2}, {"prompt": [1, 4, 0]},
                                {"prompt": [[1, 2], [0, 0]]}, {"prompt": [1, 4, 0, 2, 2, 3, 1, 0]}])
def test_cached_sampling_equals_full_recomputation(kw, length, monkeypatch):
    """Context 6: length 10 slides a window over the last 5 tokens after the cached steps (and the
    longest prompt already fills more than the context)."""
    m = make(V=5, context=6, d=4, layers=2, scale=0.3)                # spread-out conditionals
    n = 2 if "prompt" in kw and np.ndim(kw["prompt"]) == 2 else 6
    ours = m.sample(n, length, seed=11, **kw)
    assert len(np.unique(ours[3:])) > 1                               # the draws are not all alike
    full = make(V=5, context=6, d=4, layers=2, scale=0.3)             # same weights, no cache:
    monkeypatch.setattr(full, "next_token_logits",                     # re-run the window every step
                        lambda history: SequenceModel.next_token_logits(full, history))
    np.testing.assert_array_equal(ours, SequenceModel.sample(full, n, length, seed=11, **kw))
    assert ours.shape == (length, n) and ours.dtype.kind == "i"
    if "prompt" in kw:
        prompt = np.array(kw["prompt"])
        prompt = prompt if prompt.ndim == 2 else np.repeat(prompt[:, None], n, axis=1)
        np.testing.assert_array_equal(ours[:len(prompt)], prompt[:length])   # a longer prompt is cut
    assert m.sample(n, 2, seed=1, **kw).shape == (2, n)


def test_past_the_context_the_next_token_sees_a_window_of_the_last_context_minus_one_tokens():
    m = make(V=5, context=4, d=4, layers=2)
    x = np.random.default_rng(12).integers(0, 5, (9, 3))
    for T in (4, 6, 9):                                               # histories of context tokens or more
        window = np.concatenate([x[T - 3:T], np.zeros((1, 3), dtype=int)])   # last 3 tokens + placeholder
        np.testing.assert_allclose(m.next_token_logits(x[:T]), m.logits(window)[3], rtol=1e-12)
    assert np.abs(m.next_token_logits(x[:6]) - m.next_token_logits(x[:5])).max() > 1e-6


@pytest.mark.parametrize("prompt", [None, [1, 4, 0]])
def test_every_sampling_step_sees_the_logits_of_the_full_forward(prompt, monkeypatch):
    """Spy on the draws: the logits of each cached step are the full forward's f_t of the final sample."""
    m = make(V=5, context=6, d=4, layers=2, scale=0.3)
    seen = []

    def spy(f, rng, temperature=1.0, top_k=None):
        seen.append(np.array(asnumpy(f)))
        return draw_tokens(f, rng, temperature, top_k)
    monkeypatch.setattr(M, "draw_tokens", spy)
    s = m.sample(4, 6, seed=1, prompt=prompt)
    T0 = 0 if prompt is None else len(prompt)
    assert len(seen) == 6 - T0                                        # one draw per new token
    np.testing.assert_allclose(np.stack(seen), m.logits(s)[T0:], rtol=1e-11, atol=1e-12)


def test_sample_frequencies_match_log_prob():
    V, T, n = 3, 2, 20000
    m = make(V, context=2, d=4, scale=1.0)
    s = m.sample(n, T, seed=0)
    p = np.exp(m.log_prob(all_sequences(V, T)).sum(axis=0))
    freq = np.bincount(s[0] * V + s[1], minlength=V ** T) / n
    assert 0.5 * np.abs(freq - p).sum() < 0.02


def test_sampling_draws_one_token_per_step_with_the_base_rule():
    m = make(V=4, context=3, d=4)
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    w0 = draw_tokens(m.next_token_logits(np.zeros((0, 3), dtype=int)), rng)
    assert m.sample(3, 1, seed=again)[0].tolist() == w0[0].tolist()


# ============================================================================= training-time behaviour

def test_dropout_only_while_training_and_masks_come_from_the_models_stream():
    m = make(V=5, context=4, d=4, layers=2, dropout=0.5)
    x = np.random.default_rng(10).integers(0, 5, (4, 3))
    clean = float(M.forward(m.params, x, 2)[0])
    assert m.loss_and_grads(x)[0] != pytest.approx(clean)             # training: masks were drawn
    with m.eval_mode():
        assert m.loss_and_grads(x)[0] == pytest.approx(clean, rel=1e-13)
        assert m.dropout_masks(4, 3) is None
    assert m.loss(x) == pytest.approx(clean, rel=1e-13)                # log_prob runs in eval mode
    a = make(V=5, d=4, layers=2, dropout=0.5, seed=4)
    masks = make(V=5, d=4, layers=2, dropout=0.5, seed=4).dropout_masks(4, 3)   # same seed: same stream
    assert {k: v.shape for k, v in masks.items()} == {"attn": (2, 3, 2, 4, 4), "attn_out": (2, 4, 3, 4),
                                                     "mlp_out": (2, 4, 3, 4)}
    assert set(np.unique(masks["attn"])) == {0.0, 2.0}                # inverted dropout, q = 0.5
    assert a.loss_and_grads(x)[0] == pytest.approx(float(M.forward(a.params, x, 2, masks)[0]), rel=1e-13)
    assert a.loss_and_grads(x)[0] != pytest.approx(float(M.forward(a.params, x, 2, masks)[0]))   # next draw


def test_gradcheck_replays_the_dropout_masks_of_the_models_stream():
    """scratchnade.gradcheck.check_model restores the model's generators before every loss, so
    fresh dropout masks (attention and both residual branches) are the same in every call."""
    from scratchnade.gradcheck import check_model
    m = make(V=4, context=3, d=4, layers=2, dropout=0.4)
    x = np.random.default_rng(13).integers(0, 4, (3, 2))
    errors = check_model(m, x)
    assert set(errors) == set(m.params) and max(errors.values()) < 1e-6, errors
    assert m.loss_and_grads(x)[0] != m.loss_and_grads(x)[0]            # outside check_model: fresh masks


def test_float32_default_and_initialisation():
    m = Transformer(50, context=8, d_model=16, layers=3, heads=4, init_scale=0.02, seed=3)
    assert m.dtype == np.float32
    assert list(m.params) == ["E", "P", "s", "W_q", "b_q", "W_k", "W_v", "b_v", "W_a", "b_a", "g1",
                              "beta1", "g2", "beta2", "W_1", "b_1", "W_2", "b_2", "g", "beta", "W_o", "b"]
    assert m.params["W_1"].shape == (3, 16, 64) and m.params["W_2"].shape == (3, 64, 16)
    assert m.params["P"].shape == (8, 16) and m.params["W_o"].shape == (50, 16)
    for k in ("g1", "g2", "g"):
        np.testing.assert_array_equal(m.params[k], 1.0)
    for k in ("b_q", "b_a", "b_1", "beta1", "beta", "b"):
        assert not m.params[k].any()
    assert abs(m.params["E"].std() - 0.02) < 0.002
    assert abs(m.params["W_2"].std() - 0.02 / math.sqrt(6)) < 0.001    # branch outputs: / sqrt(2 L)
    tied = Transformer(50, context=8, d_model=16, layers=3, heads=4, tied=True, seed=3)
    assert "W_o" not in tied.params
    assert all(np.array_equal(v, m.params[k]) for k, v in tied.params.items())   # the rest agree
    loss, grads = m.loss_and_grads(np.random.default_rng(0).integers(0, 50, (8, 3)))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert loss == pytest.approx(np.log(50), rel=0.02)                 # near uniform at init
    assert m.config == {"vocab_size": 50, "context": 8, "d_model": 16, "layers": 3, "heads": 4, "tied": False,
                        "dropout": 0.0, "seed": 3, "dtype": "float32", "init_scale": 0.02}
    assert repr(Transformer(**m.config)) == repr(m)


@pytest.mark.parametrize("tied", [False, True])
def test_reused_buffers_follow_the_window_shape(tied):
    m = make(V=5, context=5, d=4, tied=tied)
    m.reuse_buffers = True
    rng = np.random.default_rng(4)
    for shape in [(3, 2), (5, 2), (3, 4), (1, 3), (3, 2)]:
        x = rng.integers(0, 5, shape)
        loss, grads = m.loss_and_grads(x)
        ref_loss, cache = M.reference_forward(m.params, x, 2)
        assert_grads_close(loss, ref_loss, rtol=1e-12, what="loss")
        assert_grads_close(grads, M.reference_backward(1.0, cache), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tied", [False, True])
def test_runs_on_the_strict_fake_device(fake_device, tied):
    cpu = make(V=5, context=4, d=4, layers=2, tied=tied, dropout=0.3)
    dev = make(V=5, context=4, d=4, layers=2, tied=tied, dropout=0.3).to(fake_device)
    x = np.random.default_rng(8).integers(0, 5, (4, 2))
    xd = to_device(x, fake_device)
    for _ in range(2):
        l_cpu, g_cpu = cpu.loss_and_grads(x)
        l_dev, g_dev = dev.loss_and_grads(xd)
        assert l_dev == pytest.approx(l_cpu, rel=1e-12)                # same seed: same dropout masks
        assert_grads_close(g_dev, g_cpu, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(asnumpy(dev.log_prob(xd)), cpu.log_prob(x), rtol=1e-12)
    np.testing.assert_allclose(asnumpy(dev.next_token_logits(xd[:2])), cpu.next_token_logits(x[:2]), rtol=1e-12)
    np.testing.assert_array_equal(dev.sample(4, 4, seed=3, prompt=[2]), cpu.sample(4, 4, seed=3, prompt=[2]))


# ============================================================================= errors

def test_clear_errors():
    with pytest.raises(ValueError, match="heads = 3 must divide d_model = 8"):
        Transformer(5, d_model=8, heads=3)
    for kw, name in [({"heads": 0}, "heads"), ({"layers": 0}, "layers"), ({"context": 0}, "context"),
                     ({"d_model": 0}, "d_model"), ({"vocab_size": 0}, "vocab_size")]:
        with pytest.raises(ValueError, match=name):
            Transformer(**{"vocab_size": 5, **kw})
    with pytest.raises(ValueError, match="dropout"):
        Transformer(5, d_model=4, heads=2, dropout=1.0)
    with pytest.raises(ValueError, match="dtype"):
        Transformer(5, d_model=4, heads=2, dtype=np.int32)
    m = make(V=5, context=3, d=4)
    with pytest.raises(ValueError, match="longer than the model's order p = 3"):
        m.loss_and_grads(np.zeros((4, 2), dtype=int))
    with pytest.raises(ValueError, match="1 <= T <= context = 3"):
        M.forward(m.params, np.zeros((4, 2), dtype=int), 2)
    with pytest.raises(ValueError, match="1 <= T <= context = 3"):
        M.reference_forward(m.params, np.zeros((0, 2), dtype=int), 2)
    with pytest.raises(ValueError, match="out of range"):
        m.loss_and_grads(np.array([[0, 5]]))
    with pytest.raises(ValueError, match="time-major"):
        m.log_prob(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        m.loss_and_grads(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="heads = 3 must be >= 1 and divide d_model = 4"):
        M.forward(m.params, np.zeros((2, 2), dtype=int), 3)
    with pytest.raises(ValueError, match="dropout mask 'attn_out' must have shape"):
        m.loss_and_grads(np.zeros((2, 2), dtype=int), masks={"attn_out": np.ones((1, 2, 2, 3))})
    with pytest.raises(ValueError, match="unknown dropout mask 'embedding'"):
        m.loss_and_grads(np.zeros((2, 2), dtype=int), masks={"embedding": np.ones((1, 2, 2, 4))})
    with pytest.raises(ValueError, match="temperature"):
        m.sample(2, 3, temperature=0)
    with pytest.raises(ValueError, match="prompt"):
        m.sample(2, 3, prompt=[7])
    with pytest.raises(ValueError, match="prompt"):
        m.sample(2, 3, prompt=np.zeros((1, 3), dtype=int))


# ============================================================================= slow: it learns

@pytest.mark.slow
def test_learns_to_copy_a_token_from_two_positions_back():
    """x_t = x_{t-2} after two random tokens: attention must look back two positions; a trained
    model's loss falls from log V to about the entropy of the two free tokens, 2 log V / T."""
    from scratchnade.optim import Adam
    V, T = 6, 8
    m = Transformer(V, context=T, d_model=16, layers=1, heads=2, seed=0, dtype=F64, init_scale=0.1)
    opt = Adam(3e-2)
    rng = np.random.default_rng(0)
    for _ in range(300):
        x = np.empty((T, 32), dtype=np.int64)
        x[:2] = rng.integers(0, V, (2, 32))
        for t in range(2, T):
            x[t] = x[t - 2]
        loss, grads = m.loss_and_grads(x)
        opt.step(m.params, grads)
    assert loss < 2 * np.log(V) / T + 0.05
