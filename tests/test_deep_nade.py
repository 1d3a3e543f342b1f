"""Deep NADE: the two tiers agree, gradients, the shared W, the ReLU kink, normalisation,
autoregression, sampling, safe gradient buffers, devices.

The vocabulary size is d (the lecture's |V| = d): V is a parameter here.  Hypothesis draws the
sizes and options; the parameter VALUES come from a NumPy stream seeded by
a drawn seed, so they are generic (no exact zeros, no ties) and no pre-activation sits on the
ReLU kink where a centred difference measures 1/2 instead of either one-sided derivative.
Draws with a pre-activation closer than 1e-3 to 0 are rejected (the kink has its own test), and
so are saturated ones (loss < 1e-4): there every gradient is ~ the loss, and the round-off of
a centred difference, ~1e-16 |loss| / h, is no longer small against it.
"""
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.functional import dropout_mask
from scratchnade.gradcheck import assert_grads_close, check_grads, check_model, numerical_grad, rel_error
from scratchnade.models import deep_nade as D
from scratchnade.models.deep_nade import DeepNADE
from tiers import assert_tiers_agree

LAYERS = [1, 2, 3]


# ----------------------------------------------------------------------------- references

def random_params(rng, d, p, H, layers, scale=1.0):
    """float64 parameters ~ N(0, scale^2) with the model's keys and shapes."""
    shapes = {"W": (p, d, H), "b": (p, d), "c0": (p, H)}
    if layers > 1:
        shapes.update(V=(layers - 1, p, H, H), c=(layers - 1, p, H))
    return {k: rng.normal(0.0, scale, size=s) for k, s in shapes.items()}


def slide_logits(params, x, mask=None, W_in=None):
    """(f (T, B, d), pre-activations [a_0, ..., a_{L-1}]) straight from the slide's sums.

    A test-side copy, independent of the module's reference pair: loops over t and s with
    one-hot x_s, host NumPy only.  The first layer reads W_in (default: params["W"]),
    so the two uses of W can be given separate copies.
    """
    W_out, b, c0 = params["W"], params["b"], params["c0"]
    W_in = W_out if W_in is None else W_in
    T, B = x.shape
    p, d, H = W_out.shape
    X = np.eye(d)[x]                                        # (T, B, d) one-hot, tiny d only
    m = np.ones((T, B, H)) if mask is None else mask
    a = np.zeros((T, B, H))
    for t in range(T):
        a[t] = c0[t] + sum((X[s] @ W_in[s] * m[s] for s in range(t)), np.zeros((B, H)))
    pre = [a]
    for l in range(num_V_blocks(params)):
        h = np.maximum(pre[-1], 0.0)
        a = np.zeros((T, B, H))
        for t in range(T):
            a[t] = params["c"][l, t] + sum(h[s] @ params["V"][l, s].T for s in range(t + 1))
        pre.append(a)
    h = np.maximum(pre[-1], 0.0)
    f = np.stack([b[t] + sum(h[s] @ W_out[s].T for s in range(t + 1)) for t in range(T)])
    return f, pre


def num_V_blocks(params):
    return params["V"].shape[0] if "V" in params else 0


def log_softmax(f):
    m = f.max(axis=-1, keepdims=True)
    return f - m - np.log(np.exp(f - m).sum(axis=-1, keepdims=True))


def reference_log_prob(params, x, mask=None, W_in=None):
    """log p(x_t | x_<t), (T, B), from :func:`slide_logits`."""
    logp = log_softmax(slide_logits(params, x, mask, W_in)[0])
    return np.take_along_axis(logp, x[..., None], axis=-1)[..., 0]


def kink_margin(params, x, mask=None):
    """Smallest |pre-activation| over every unit, position and example."""
    return min(np.abs(a).min() for a in slide_logits(params, x, mask)[1])


def model_with(params, device=None, **kw):
    p, d, H = params["W"].shape
    m = DeepNADE(d, p=p, H=H, layers=1 + num_V_blocks(params), dtype=np.float64, device=device, **kw)
    m.load_state_dict(params)
    return m


@st.composite
def problems(draw, layers, max_d=7, max_p=5, max_H=5, max_B=3):
    """(params, x, mask): float64 parameters, a (T, B) window with T <= p, a fixed dropout mask or None."""
    d = draw(st.integers(2, max_d), label="d")
    p = draw(st.integers(1, max_p), label="p")
    T = draw(st.integers(1, p), label="T")
    H = draw(st.integers(1, max_H), label="H")
    B = draw(st.integers(1, max_B), label="B")
    scale = draw(st.sampled_from([0.5, 1.0, 1.5]), label="scale")
    dropout = draw(st.booleans(), label="dropout")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    params = random_params(rng, d, p, H, layers, scale)
    x = rng.integers(0, d, size=(T, B))
    mask = dropout_mask((T, B, H), 0.5, rng, params["W"]) if dropout else None
    assume(kink_margin(params, x, mask) > 1e-3)             # finite differences off the kink
    assume(-reference_log_prob(params, x, mask).mean() > 1e-4)   # not saturated
    return params, x, mask


# ----------------------------------------------------------------------------- the two tiers

TIERS = {"reference": (D.reference_forward, D.reference_backward), "fast": (D.forward, D.backward)}


@st.composite
def tier_problems(draw, max_d=9, max_p=6, max_H=6, max_B=4):
    """(params, x, mask) of any L in LAYERS, no kink margin asked: both tiers use ReLU'(0) = 0."""
    layers = draw(st.sampled_from(LAYERS), label="L")
    d = draw(st.integers(1, max_d), label="d")
    p = draw(st.integers(1, max_p), label="p")
    T = draw(st.integers(1, p), label="T")
    H = draw(st.integers(1, max_H), label="H")
    B = draw(st.integers(1, max_B), label="B")
    dropout = draw(st.sampled_from([None, 0.3, 0.6]), label="dropout")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    params = random_params(rng, d, p, H, layers)
    x = rng.integers(0, d, size=(T, B))
    mask = None if dropout is None else dropout_mask((T, B, H), dropout, rng, params["W"])
    return params, x, mask


@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=25, deadline=None)
@given(problem=tier_problems())
def test_fast_pair_equals_reference_pair(device, problem):
    params, x, mask = problem
    params = {k: to_device(v, device) for k, v in params.items()}
    mask = None if mask is None else to_device(mask, device)
    assert_tiers_agree(D, params, to_device(x, device), mask)


@pytest.mark.parametrize("layers", LAYERS)
def test_tiers_agree_at_the_model_defaults_on_the_kink(device, layers):
    """Default init (c = 0, b = 0): position 1 sits exactly on the ReLU kink in both tiers."""
    m = DeepNADE(6, p=5, H=4, layers=layers, dtype=np.float64, init_scale=1.0, seed=layers, device=device)
    x = to_device(np.random.default_rng(layers).integers(0, 6, size=(4, 3)), device)
    mask = dropout_mask((4, 3, 4), 0.5, np.random.default_rng(0), m.params["W"])
    assert_tiers_agree(D, m.params, x, mask)
    assert_tiers_agree(D, m.params, x, None)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("tier", list(TIERS))
@pytest.mark.parametrize("layers", LAYERS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_gradients_match_finite_differences(tier, layers, data):
    """Each tier against centred differences of its own loss (the independent check).  A gradient
    that is all ~0 may miss the relative 1e-6 by round-off (~1e-16 loss / h): then |error| <= 1e-10."""
    params, x, mask = data.draw(problems(layers))
    forward, backward = TIERS[tier]
    _, cache = forward(params, x, mask)
    grads = backward(1.0, cache)
    assert list(grads) == list(params)

    def loss():
        return forward(params, x, mask)[0]

    numeric = {k: numerical_grad(loss, v) for k, v in params.items()}
    assert_grads_close(grads, numeric, rtol=1e-6, atol=1e-10)


def test_reference_passes_check_grads():
    """check_grads on a fixed small case with dropout, two layers, a short window."""
    rng = np.random.default_rng(3)
    params = random_params(rng, d=5, p=4, H=3, layers=2)
    x = rng.integers(0, 5, size=(3, 2))
    mask = dropout_mask((3, 2, 3), 0.5, rng, params["W"])
    assert kink_margin(params, x, mask) > 1e-3
    grads = D.reference_backward(1.0, D.reference_forward(params, x, mask)[1])
    errors = check_grads(lambda: D.reference_forward(params, x, mask)[0], params, grads)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("layers", LAYERS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_log_prob_matches_the_definition(layers, data):
    params, x, mask = data.draw(problems(layers))
    loss, _ = D.forward(params, x, mask)
    want = reference_log_prob(params, x, mask)
    assert abs(loss + want.mean()) < 1e-10
    np.testing.assert_allclose(model_with(params).log_prob(x), reference_log_prob(params, x),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layers", LAYERS)
def test_W_gradient_is_the_sum_of_its_two_uses(layers):
    """dW equals d/dW_in + d/dW_out of a version where the first layer reads a separate copy W_in."""
    rng = np.random.default_rng(10 + layers)
    params = random_params(rng, d=4, p=3, H=3, layers=layers)
    for k in ("c0", "c"):
        if k in params:
            params[k] = np.abs(params[k]) + 0.5            # live units, so both uses get gradient
    x = rng.integers(0, 4, size=(3, 2))
    assert kink_margin(params, x) > 1e-3
    _, cache = D.forward(params, x)
    dW = D.backward(1.0, cache)["W"].copy()

    untied = {k: v.copy() for k, v in params.items()}      # untied["W"] is W_out
    W_in = params["W"].copy()

    def loss():
        return -reference_log_prob(untied, x, W_in=W_in).mean()

    dW_in, dW_out = numerical_grad(loss, W_in), numerical_grad(loss, untied["W"])
    assert rel_error(dW, dW_in + dW_out) < 1e-7
    assert rel_error(dW, dW_out) > 1e-2 and rel_error(dW, dW_in) > 1e-2   # both uses matter
    assert np.all(dW_in[-1] == 0)                          # W_p is never an input in the window


@pytest.mark.parametrize("layers", LAYERS)
def test_relu_kink_uses_the_subgradient_zero(layers):
    """At a = 0 exactly, h = 0 and dh/da = 0 in every layer: the gradient is the left derivative."""
    m = DeepNADE(4, p=3, H=3, layers=layers, dtype=np.float64, init_scale=1.0, seed=3)
    m.params["b"][...] = np.random.default_rng(0).normal(size=m.params["b"].shape)
    x = np.array([[1], [2], [0]])
    # Position 1 sits on the kink by default (c = 0, no input).  Put one interior unit there too:
    # a_{0,2,0} = c_{0,2,0} + W_1[x_1, 0] = 0 exactly.
    m.params["c0"][1, 0] = -m.params["W"][0, x[0, 0], 0]
    _, cache = D.forward(m.params, x)
    assert all(np.all(h[0] == 0) for h in cache.hs) and cache.hs[0][1, 0, 0] == 0.0
    grads = {k: v.copy() for k, v in D.backward(1.0, cache).items()}

    kinks = [("c0", (0, j)) for j in range(3)] + [("c0", (1, 0))]
    kinks += [("c", (l, 0, j)) for l in range(layers - 1) for j in range(3)]
    step = 1e-6
    right_slopes = []
    for name, i in kinks:
        P, v = m.params[name], m.params[name][i]
        losses = []
        for value in (v - step, v, v + step):
            P[i] = value
            losses.append(D.forward(m.params, x)[0])
        P[i] = v
        assert grads[name][i] == 0.0                        # subgradient 0 ...
        assert losses[0] == losses[1]                       # ... = the left derivative: unit stays off
        right_slopes.append(abs(losses[2] - losses[1]) / step)
    assert max(right_slopes) > 1e-3                          # the kink is real: switching on matters


# ----------------------------------------------------------------------------- the distribution

@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("d,p", [(3, 3), (2, 4)])
def test_probabilities_sum_to_one(layers, d, p):
    m = DeepNADE(d, p=p, H=4, layers=layers, dtype=np.float64, init_scale=1.0, seed=d + p)
    for k in ("b", "c0", "c"):
        if k in m.params:
            m.params[k][...] = np.random.default_rng(len(k)).normal(size=m.params[k].shape)
    x = np.array(list(itertools.product(range(d), repeat=p))).T      # (p, d^p): every window
    total = np.exp(m.log_prob(x).sum(axis=0)).sum()
    assert abs(total - 1.0) < 1e-10


@pytest.mark.parametrize("layers", LAYERS)
def test_autoregressive_property(layers):
    d, p = 6, 5
    m = DeepNADE(d, p=p, H=6, layers=layers, dtype=np.float64, init_scale=1.0, seed=1)
    for k in ("c0", "c"):
        if k in m.params:
            m.params[k][...] = 0.5                           # most units active
    rng = np.random.default_rng(2)
    x = rng.integers(0, d, size=(p, 1))
    base = m.logits(x)
    for t in range(p):
        changed = x.copy()
        changed[t:] = (changed[t:] + rng.integers(1, d, size=(p - t, 1))) % d   # every x_>=t differs
        np.testing.assert_array_equal(m.logits(changed)[:t + 1], base[:t + 1])
        if t > 0:                                            # f_t does see x_{t-1} (s <= t, not s < t)
            prev = x.copy()
            prev[t - 1] = (prev[t - 1] + 1) % d
            assert np.abs(m.logits(prev)[t] - base[t]).max() > 1e-6


@pytest.mark.parametrize("layers", LAYERS)
def test_sampling_frequencies_match_probabilities(layers):
    d, p, n = 3, 2, 60_000
    m = DeepNADE(d, p=p, H=4, layers=layers, dtype=np.float64, init_scale=1.5, seed=7)
    m.params["c0"][...] = 0.3
    x = np.array(list(itertools.product(range(d), repeat=p))).T      # (p, 9)
    prob = np.exp(m.log_prob(x).sum(axis=0))
    s = m.sample(n, p, seed=layers)
    freq = np.bincount(s[0] * d + s[1], minlength=d ** p) / n
    assert 0.5 * np.abs(freq - prob).sum() < 0.015                     # total variation
    shifted = np.bincount(s[1] * d + s[0], minlength=d ** p) / n       # tokens swapped: must fail
    assert 0.5 * np.abs(shifted - prob).sum() > 0.03


def test_sampling_past_the_window_and_from_a_prompt():
    m = DeepNADE(5, p=3, H=4, layers=2, seed=0)
    s = m.sample(4, 10, seed=0, prompt=[1, 2])
    assert s.shape == (10, 4) and (s[:2] == [[1], [2]]).all() and s.max() < 5


# ----------------------------------------------------------------------------- the class

@pytest.mark.parametrize("layers", LAYERS)
def test_model_gradients_with_buffer_reuse_and_short_windows(layers):
    m = DeepNADE(5, p=4, H=3, layers=layers, dtype=np.float64, init_scale=1.0, seed=4)
    m.reuse_buffers = True
    for k in ("c0", "c"):
        if k in m.params:
            m.params[k][...] = 0.7
    rng = np.random.default_rng(5)
    for T, B in [(4, 3), (2, 2), (4, 1)]:                    # buffers shrink and grow
        x = rng.integers(0, 5, size=(T, B))
        assert kink_margin(m.params, x) > 1e-3
        errors = check_model(m, x)
        assert max(errors.values()) < 1e-6, (T, B, errors)
        _, grads = m.loss_and_grads(x)
        assert np.all(grads["b"][T:] == 0) and np.all(grads["W"][T:] == 0)


def test_dropout_only_when_training():
    m = DeepNADE(6, p=4, H=8, layers=2, dropout=0.5, dtype=np.float64, init_scale=1.0, seed=0)
    x = np.random.default_rng(0).integers(0, 6, size=(4, 3))
    a, b = m.loss_and_grads(x)[0], m.loss_and_grads(x)[0]
    assert a != b                                            # fresh masks each call
    with m.eval_mode():
        c, d = m.loss_and_grads(x)[0], m.loss_and_grads(x)[0]
    assert c == d == pytest.approx(m.loss(x), abs=1e-12)
    assert m.training


def test_initialisation():
    m = DeepNADE(50, p=4, H=64, layers=3, seed=0, init_scale=0.1)
    P = m.params
    assert all(v.dtype == np.float32 for v in P.values())
    assert P["V"].shape == (2, 4, 64, 64) and P["c"].shape == (2, 4, 64)
    assert abs(P["V"].std() / np.sqrt(2 / (4 * 64)) - 1) < 0.02   # He scale, fan-in p H
    assert abs(P["W"].std() / 0.1 - 1) < 0.02
    assert all(np.all(P[k] == 0) for k in ("b", "c0", "c"))
    same = DeepNADE(50, p=4, H=64, layers=3, seed=0, init_scale=0.1)
    assert all(np.array_equal(P[k], same.params[k]) for k in P)
    assert set(DeepNADE(5, p=2, H=3, layers=1).params) == {"W", "b", "c0"}
    assert DeepNADE(5, p=2, H=3).context == 2


def test_float32_matches_float64():
    x = np.random.default_rng(1).integers(0, 30, size=(6, 4))
    m64 = DeepNADE(30, p=6, H=8, layers=3, dtype=np.float64, init_scale=0.5)
    m32 = DeepNADE(30, p=6, H=8, layers=3, dtype=np.float32, init_scale=0.5)
    l64, g64 = m64.loss_and_grads(x)
    l32, g32 = m32.loss_and_grads(x)
    assert abs(l64 - l32) < 1e-5 * abs(l64)
    assert all(g32[k].dtype == np.float32 for k in g32)
    assert max(rel_error(g32[k], g64[k]) for k in g64) < 1e-4


def test_bad_input_gives_clear_errors():
    m = DeepNADE(6, p=4, H=3)
    with pytest.raises(ValueError, match=r"\[0, 6\)|range"):
        m.loss_and_grads(np.full((4, 2), 6))
    with pytest.raises(ValueError, match=r"\[0, 6\)|range"):
        m.log_prob(np.full((4, 2), -1))
    with pytest.raises(ValueError, match="time-major"):
        m.log_prob(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="longer than"):
        m.loss_and_grads(np.zeros((5, 2), dtype=int))
    for forward in (D.forward, D.reference_forward):
        with pytest.raises(ValueError, match="p = 4"):
            forward(m.params, np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match="layers"):
        DeepNADE(6, layers=0)
    with pytest.raises(ValueError, match="dropout"):
        DeepNADE(6, dropout=1.0)


@pytest.mark.parametrize("layers", LAYERS)
def test_runs_on_the_strict_fake_device(fake_device, layers):
    params = random_params(np.random.default_rng(layers), d=7, p=4, H=5, layers=layers)
    x = np.random.default_rng(0).integers(0, 7, size=(4, 3))
    host = model_with(params, dropout=0.3)
    dev = model_with(params, device=fake_device, dropout=0.3)
    xd = to_device(x, fake_device)
    for _ in range(2):                                       # same mask stream on both devices
        loss, grads = dev.loss_and_grads(xd)
        ref_loss, ref_grads = host.loss_and_grads(x)
        assert abs(loss - ref_loss) < 1e-12
        for k in ref_grads:
            assert device_of(grads[k]) == fake_device
            np.testing.assert_allclose(asnumpy(grads[k]), ref_grads[k], atol=1e-12)
    np.testing.assert_allclose(asnumpy(dev.log_prob(xd)), host.log_prob(x), atol=1e-12)
    np.testing.assert_array_equal(asnumpy(dev.sample(5, 6, seed=4)), host.sample(5, 6, seed=4))
