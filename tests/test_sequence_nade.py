"""SequenceNADE (order-p NADE over tokens): equations, gradients, tying, normalisation,
autoregressive property, sampling, errors, buffer reuse, the strict fake device."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.gradcheck import (assert_grads_close, check_model, numerical_grad,
                                   rel_error)
from scratchnade.models import sequence_nade as S
from scratchnade.models.sequence_nade import SequenceNADE
from tiers import assert_reference_matches_finite_differences, assert_tiers_agree, on


def random_model(d=5, p=4, H=3, tied=False, seed=0, scale=1.0, dtype=np.float64, **kw):
    """A float64 model with every parameter ~ N(0, scale^2) (biases too, so none are trivial)."""
    m = SequenceNADE(d, p=p, H=H, tied=tied, seed=seed, dtype=dtype, **kw)
    rng = np.random.default_rng(seed + 100)
    m.load_state_dict({k: scale * rng.standard_normal(v.shape) for k, v in m.params.items()})
    return m


def naive_logits(params, x):
    """The lecture's equations with one-hot x_s and the lecture's shapes, loop by loop.

    V_s = V[s].T is (H, d) and W_s = W[s] is (d, H); tied: V_s = W_s^T.
        h_t = sigmoid(c_t + sum_{s<t} V_s x_s),   f_t = b_t + sum_{s<=t} W_s h_s
    """
    W, c, b = params["W"], params["c"], params["b"]
    p, d, H = W.shape
    Vs = [W[s].T if "V" not in params else params["V"][s].T for s in range(p)]   # (H, d) each
    T, B = x.shape
    f = np.zeros((T, B, d))
    for j in range(B):
        onehot = np.eye(d)[x[:, j]]                                   # (T, d)
        h = [1.0 / (1.0 + np.exp(-(c[t] + sum((Vs[s] @ onehot[s] for s in range(t)), np.zeros(H)))))
             for t in range(T)]
        for t in range(T):
            f[t, j] = b[t] + sum(W[s] @ h[s] for s in range(t + 1))
    return f


def all_sequences(d, T):
    """Every sequence of T ids in [0, d), as columns: (T, d^T)."""
    return np.array(list(itertools.product(range(d), repeat=T)), dtype=np.int64).T


# ----------------------------------------------------------------------------- equations

@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("T", [1, 3, 4])
def test_logits_match_the_lectures_equations(tied, T):
    m = random_model(d=5, p=4, H=3, tied=tied)
    x = np.random.default_rng(1).integers(0, 5, size=(T, 3))
    f = m.logits(x)
    assert f.shape == (T, 3, 5)
    np.testing.assert_allclose(f, naive_logits(m.params, x), rtol=1e-12, atol=1e-12)


def test_log_prob_and_loss():
    m = random_model()
    x = np.random.default_rng(2).integers(0, 5, size=(4, 3))
    f = naive_logits(m.params, x)
    logp = f - np.log(np.exp(f).sum(axis=2, keepdims=True))
    want = np.take_along_axis(logp, x[..., None], axis=2)[..., 0]
    np.testing.assert_allclose(m.log_prob(x), want, rtol=1e-12)
    loss, _ = m.loss_and_grads(x)
    assert isinstance(loss, float)
    assert loss == pytest.approx(-want.mean(), rel=1e-12)
    assert m.loss(x) == pytest.approx(loss, rel=1e-12)


# ----------------------------------------------------------------------------- gradients

@st.composite
def problems(draw):
    """(params, x, mask) for a small float64 NADE, tied or not, with or without a fixed mask."""
    d = draw(st.integers(2, 7), label="d")
    p = draw(st.integers(1, 5), label="p")
    H = draw(st.integers(1, 5), label="H")
    B = draw(st.integers(1, 3), label="B")
    T = draw(st.integers(1, p), label="T")
    tied = draw(st.booleans(), label="tied")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    params = {"W": draw(arrays(np.float64, (p, d, H), elements=value), label="W")}
    if not tied:
        params["V"] = draw(arrays(np.float64, (p, d, H), elements=value), label="V")
    params["c"] = draw(arrays(np.float64, (p, H), elements=value), label="c")
    params["b"] = draw(arrays(np.float64, (p, d), elements=value), label="b")
    x = draw(arrays(np.int64, (T, B), elements=st.integers(0, d - 1)), label="x")
    mask = None
    if draw(st.booleans(), label="dropout"):
        mask = draw(arrays(np.float64, (T, B, H), elements=st.sampled_from([0.0, 2.0])), label="mask")
    return params, x, mask


@settings(max_examples=40, deadline=None)
@given(problems())
def test_gradients_match_finite_differences(problem):
    params, x, mask = problem
    loss, cache = S.forward(params, x, mask)
    grads = S.backward(1.0, cache)
    assert set(grads) == set(params)

    def loss_fn():
        return S.forward(params, x, mask)[0]

    for name, p in params.items():
        num, ana = numerical_grad(loss_fn, p), asnumpy(grads[name])     # centred differences
        # when every entry is tiny (~1e-6) the round-off of `num` (~1e-11) reads as a relative error
        assert_grads_close(ana, num, rtol=1e-6, atol=1e-9, what=name)


@pytest.mark.parametrize("tied", [False, True])
def test_check_model_whole_model(tied):
    m = random_model(d=6, p=3, H=4, tied=tied)
    x = np.random.default_rng(3).integers(0, 6, size=(3, 2))
    errors = check_model(m, x)
    assert max(errors.values()) < 1e-6, errors


def test_unused_parameters_get_zero_gradients():
    """V_p conditions nothing inside a window; positions >= T are unused by a short window."""
    m = random_model(d=5, p=4, H=3)
    _, g = m.loss_and_grads(np.random.default_rng(4).integers(0, 5, size=(2, 3)))
    assert np.all(g["V"][1:] == 0) and np.any(g["V"][0] != 0)   # T = 2: only V_1 x_1 is used
    for k in ("W", "c", "b"):
        assert np.all(g[k][2:] == 0) and np.any(g[k][:2] != 0), k


def test_repeated_ids_accumulate_in_dV():
    """Token 1 at s = 1 in all three columns: dV[0, 1] must add the three contributions."""
    m = random_model(d=4, p=3, H=2)
    x = np.array([[1, 1, 1], [2, 0, 2], [3, 3, 0]])
    dV = m.loss_and_grads(x)[1]["V"].copy()
    per_column = [m.loss_and_grads(x[:, j:j + 1])[1]["V"].copy() for j in range(3)]
    np.testing.assert_allclose(dV, sum(per_column) / 3, rtol=1e-12, atol=1e-16)   # mean of columns
    assert np.all(np.abs(dV[0, 1]) > 0)
    assert max(check_model(m, x).values()) < 1e-6


# ----------------------------------------------------------------------------- two tiers: reference = fast

@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=25, deadline=None)
@given(problem=problems(), dloss=st.floats(0.1, 2.0, allow_nan=False))
def test_fast_pair_equals_the_reference(device, problem, dloss):
    """forward/backward give reference_forward/backward's loss and every gradient (float64),
    tied or not, with or without a fixed dropout mask."""
    params, x, mask = on(device, *problem)
    assert_tiers_agree(S, params, x, mask, dlosses=(dloss,))


@pytest.mark.parametrize("tied", [False, True])
def test_reference_matches_finite_differences(tied):
    m = random_model(d=4, p=3, H=3, tied=tied)
    x = np.array([[1, 1, 0], [2, 1, 3], [0, 3, 3]])               # repeated ids in a position
    mask = np.random.default_rng(13).choice([0.0, 2.0], size=(3, 3, 3))
    assert_reference_matches_finite_differences(S, m.params, x, mask)
    loss = S.reference_forward(m.params, x, mask)[0]
    assert float(loss) == pytest.approx(float(S.forward(m.params, x, mask)[0]), rel=1e-12)


# ----------------------------------------------------------------------------- weight sharing

def test_tied_model_holds_one_array_used_twice():
    m = random_model(d=5, p=3, H=4, tied=True)
    assert set(m.params) == {"W", "c", "b"}
    x = np.array([[2, 3], [0, 4], [1, 1]])
    h0 = S.hidden_states(m.params, x)
    f0 = m.logits(x)
    m.params["W"][0, 2] += 0.5                   # row x_1 = 2 of W_1, i.e. column 2 of V_1 = W_1^T
    h1 = S.hidden_states(m.params, x)
    assert np.all(h1[0] == h0[0])                # h_1 sees no input
    assert np.all(np.abs(h1[1:, 0] - h0[1:, 0]) > 1e-6)      # input use: h_2, h_3 of column 0 move
    np.testing.assert_array_equal(h1[:, 1], h0[:, 1])        # column 1 never read token 2 at s = 1
    assert np.abs(m.logits(x)[0, 1, 2] - f0[0, 1, 2]) > 1e-6  # output use: f_1[2] = b_1 + W_1[2] h_1


@pytest.mark.parametrize("mask", [False, True])
def test_tied_gradient_is_the_sum_of_both_uses(mask):
    m = random_model(d=5, p=3, H=4, tied=True)
    x = np.random.default_rng(5).integers(0, 5, size=(3, 4))
    M = np.random.default_rng(6).choice([0.0, 2.0], size=(3, 4, 4)) if mask else None
    untied = dict(m.params, V=m.params["W"].copy())          # V_s = W_s^T, as two arrays
    loss_t, cache_t = S.forward(m.params, x, M)
    loss_u, cache_u = S.forward(untied, x, M)
    assert loss_t == pytest.approx(loss_u, rel=1e-14)
    g_t, g_u = S.backward(1.0, cache_t), S.backward(1.0, cache_u)
    assert set(g_t) == {"W", "c", "b"}
    assert np.any(g_u["V"] != 0) and np.any(g_u["W"] != 0)
    np.testing.assert_allclose(g_t["W"], g_u["W"] + g_u["V"], rtol=1e-12, atol=1e-15)
    for k in ("c", "b"):
        np.testing.assert_allclose(g_t[k], g_u[k], rtol=1e-12)


# ----------------------------------------------------------------------------- probability

@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("T", [3, 2])
def test_normalisation(tied, T):
    m = random_model(d=3, p=3, H=2, tied=tied, scale=1.5)
    x = all_sequences(3, T)                                  # (T, 27) or (T, 9)
    total = np.exp(m.log_prob(x).sum(axis=0)).sum()
    assert abs(total - 1.0) < 1e-10


@pytest.mark.parametrize("tied", [False, True])
def test_autoregressive_property(tied):
    m = random_model(d=6, p=5, H=4, tied=tied)
    rng = np.random.default_rng(7)
    x = rng.integers(0, 6, size=(5, 3))
    f = m.logits(x)
    for t in range(5):
        y = x.copy()
        y[t:] = (x[t:] + rng.integers(1, 6, size=y[t:].shape)) % 6     # every token >= t changes
        np.testing.assert_array_equal(m.logits(y)[:t + 1], f[:t + 1])  # f_t sees x_<t only
        if t > 0:
            z = x.copy()
            z[t - 1] = (x[t - 1] + 1) % 6                              # only x_{t-1} changes
            assert np.all(np.abs(m.logits(z)[t] - f[t]).max(axis=1) > 1e-6)   # f_t sees x_{t-1}


def test_sampling_frequencies_match_probabilities():
    m = random_model(d=3, p=2, H=3, scale=1.5)
    n = 20000
    samples = m.sample(n, 2, seed=0)
    assert samples.shape == (2, n)
    codes = samples[0] * 3 + samples[1]
    freq = np.bincount(codes, minlength=9) / n
    prob = np.exp(m.log_prob(all_sequences(3, 2)).sum(axis=0))      # same order as the codes
    assert 0.5 * np.abs(freq - prob).sum() < 0.02


def test_sampling_longer_than_p_and_deterministic():
    m = random_model(d=4, p=2, H=2)
    a, b = m.sample(5, 7, seed=3), m.sample(5, 7, seed=3)
    assert a.shape == (7, 5) and a.min() >= 0 and a.max() < 4
    np.testing.assert_array_equal(a, b)
    prompt = np.array([1, 2, 3])
    c = m.sample(2, 5, seed=1, prompt=prompt)
    np.testing.assert_array_equal(c[:3], np.repeat(prompt[:, None], 2, axis=1))


# ----------------------------------------------------------------------------- dropout

def test_dropout_mask_is_applied_to_input_columns():
    m = random_model(d=5, p=3, H=4)
    x = np.random.default_rng(8).integers(0, 5, size=(3, 2))
    ones = np.ones((3, 2, 4))
    np.testing.assert_array_equal(S.hidden_states(m.params, x, ones), S.hidden_states(m.params, x))
    h0 = S.hidden_states(m.params, x, np.zeros((3, 2, 4)))           # every V_s x_s dropped
    np.testing.assert_allclose(h0, 1.0 / (1.0 + np.exp(-m.params["c"][:, None])) * np.ones((3, 2, 4)))


def test_dropout_only_in_training_mode():
    m = random_model(d=5, p=3, H=4, dropout=0.5)
    x = np.random.default_rng(9).integers(0, 5, size=(3, 8))
    l1, _ = m.loss_and_grads(x)
    l2, _ = m.loss_and_grads(x)
    assert l1 != l2                                                # fresh masks each call
    with m.eval_mode():
        e1, _ = m.loss_and_grads(x)
        e2, _ = m.loss_and_grads(x)
    assert e1 == e2 == pytest.approx(m.loss(x), rel=1e-12)
    assert m.training
    with pytest.raises(ValueError):
        SequenceNADE(5, dropout=1.0)


# ----------------------------------------------------------------------------- errors

def test_clear_errors():
    m = random_model(d=5, p=3, H=2)
    for bad, match in [(np.array([[0, 5]]), "out of range"), (np.array([[-1, 0]]), "out of range"),
                       (np.zeros((2, 2)), "integer"), (np.zeros(3, dtype=int), "time-major"),
                       (np.zeros((4, 2), dtype=int), "longer than")]:
        with pytest.raises(ValueError, match=match):
            m.loss_and_grads(bad)
        with pytest.raises(ValueError):
            m.log_prob(bad)
    with pytest.raises(ValueError, match="1 <= T <= p"):
        S.forward(m.params, np.zeros((4, 2), dtype=int))
    with pytest.raises(ValueError, match="1 <= T <= p"):
        S.forward(m.params, np.zeros((0, 2), dtype=int))
    with pytest.raises(ValueError, match="out of range"):
        S.forward(m.params, np.full((2, 2), 7))
    with pytest.raises(ValueError, match="out must have shape"):
        S.forward(m.params, np.zeros((2, 2), dtype=int), out=np.empty((3, 2, 5)))


# ----------------------------------------------------------------------------- buffers, init, dtype

def test_reused_buffers_give_fresh_correct_gradients():
    m = random_model(d=6, p=4, H=3)
    m.reuse_buffers = True                              # the training loop's opt-in
    rng = np.random.default_rng(10)
    first = m.loss_and_grads(rng.integers(0, 6, size=(4, 3)))[1]
    first["V"] *= 3.0                                   # an optimizer may scale grads in place
    first["V"] += 1.0                                   # ... or worse: the next call must not care
    first["W"] += 1.0
    for T, B in [(2, 3), (4, 5), (4, 3)]:               # shorter window, bigger batch, back again
        x = rng.integers(0, 6, size=(T, B))
        loss, g = m.loss_and_grads(x)
        want_loss, cache = S.forward(m.params, x)
        want = S.backward(1.0, cache)                   # fresh arrays, no buffers
        assert loss == pytest.approx(float(want_loss), rel=1e-14)
        for k in want:
            np.testing.assert_allclose(g[k], want[k], rtol=1e-13, atol=1e-16)
    assert g["W"] is not want["W"]
    assert np.shares_memory(g["V"], first["V"])         # documented: the big grads are reused
    assert np.shares_memory(g["W"], m._buffers["dW"])


def test_initialisation():
    m = SequenceNADE(50, p=3, H=20, seed=4, init_scale=0.1)
    assert m.dtype == np.float32 and m.context == 3 and m.vocab_size == 50
    assert {k: v.shape for k, v in m.params.items()} == {
        "W": (3, 50, 20), "V": (3, 50, 20), "c": (3, 20), "b": (3, 50)}
    assert abs(m.params["W"].std() - 0.1) < 0.01 and abs(m.params["V"].std() - 0.1) < 0.01
    assert np.all(m.params["c"] == 0) and np.all(m.params["b"] == 0)
    same = SequenceNADE(50, p=3, H=20, seed=4, init_scale=0.1)
    tied = SequenceNADE(50, p=3, H=20, seed=4, init_scale=0.1, tied=True)
    np.testing.assert_array_equal(same.params["V"], m.params["V"])
    np.testing.assert_array_equal(tied.params["W"], m.params["W"])    # W drawn first
    assert not np.array_equal(SequenceNADE(50, p=3, H=20, seed=5).params["W"], m.params["W"])
    assert m.num_parameters() == 2 * 3 * 50 * 20 + 3 * 20 + 3 * 50


def test_float32_agrees_with_float64():
    m64 = random_model(d=7, p=4, H=5, scale=0.5)
    m32 = SequenceNADE(7, p=4, H=5, dtype=np.float32)
    m32.load_state_dict(m64.state_dict())
    x = np.random.default_rng(11).integers(0, 7, size=(4, 3))
    l64, g64 = m64.loss_and_grads(x)
    l32, g32 = m32.loss_and_grads(x)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in g64:
        assert g32[k].dtype == np.float32
        assert rel_error(g32[k], g64[k]) < 1e-4, k


# ----------------------------------------------------------------------------- fake device

@pytest.mark.parametrize("tied", [False, True])
def test_runs_on_the_strict_fake_device(fake_device, tied):
    cpu = random_model(d=5, p=3, H=4, tied=tied)
    dev = random_model(d=5, p=3, H=4, tied=tied, dropout=0.3).to(fake_device)
    x = np.random.default_rng(12).integers(0, 5, size=(3, 4))
    xd = to_device(x, fake_device)
    with dev.eval_mode():
        loss, grads = dev.loss_and_grads(xd)
    want_loss, want = cpu.loss_and_grads(x)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for k, g in grads.items():
        assert device_of(g) == fake_device
        np.testing.assert_allclose(asnumpy(g), want[k], rtol=1e-12, atol=1e-15)
    loss_train, grads_train = dev.loss_and_grads(xd)             # dropout mask on the device
    assert device_of(grads_train["W"]) == fake_device
    lp = dev.log_prob(xd)
    assert device_of(lp) == fake_device
    np.testing.assert_allclose(asnumpy(lp), cpu.log_prob(x), rtol=1e-12)
    np.testing.assert_array_equal(dev.sample(3, 5, seed=0), cpu.sample(3, 5, seed=0))
