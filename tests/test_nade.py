"""Binary NADE: reference == fast, gradients, normalisation, autoregressive property, sampling,
completion, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.data.synthetic import all_binary_vectors
from scratchnade.gradcheck import assert_grads_close, check_grads, numerical_grad, rel_error
from scratchnade.models import nade as N
from scratchnade.models.nade import NADE
from tiers import assert_tiers_agree


@st.composite
def problems(draw, max_D=8, max_H=6, max_B=4):
    """(params, x): float64 NADE parameters in [-2, 2] and a binary batch."""
    D = draw(st.integers(1, max_D), label="D")
    H = draw(st.integers(1, max_H), label="H")
    B = draw(st.integers(1, max_B), label="B")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    shapes = {"W": (H, D), "c": (H,), "V": (D, H), "b": (D,)}
    params = {k: draw(arrays(np.float64, s, elements=value), label=k) for k, s in shapes.items()}
    x = draw(arrays(np.float64, (B, D), elements=st.sampled_from([0.0, 1.0])), label="x")
    return params, x


def model_with(params, device=None):
    H, D = params["W"].shape
    m = NADE(D, H, dtype=np.float64, device=device)
    m.load_state_dict(params)
    return m


def brute_force_log_prob(params, x):
    """log p(x) straight from the definition h_t = sigmoid(c + W_{:,<t} x_<t), no running sum."""
    W, c, V, b = params["W"], params["c"], params["V"], params["b"]
    logp = np.zeros(x.shape[0])
    for t in range(x.shape[1]):
        h = 1 / (1 + np.exp(-(c + x[:, :t] @ W[:, :t].T)))        # (B, H)
        p = 1 / (1 + np.exp(-(b[t] + h @ V[t])))                   # (B,)
        logp += np.log(np.where(x[:, t] == 1, p, 1 - p))
    return logp


# ----------------------------------------------------------------------------- reference == fast

@settings(max_examples=25, deadline=None)
@given(problems(max_D=10, max_H=7, max_B=5))
def test_reference_and_fast_agree(problem):
    assert_tiers_agree(N, *problem, dlosses=(1.0, 0.5))


@pytest.mark.parametrize("D,H,B,density", [(1, 1, 1, 0.5), (9, 4, 6, 0.0), (9, 4, 6, 1.0), (12, 5, 7, 0.3)])
def test_reference_and_fast_agree_on_the_fake_device(fake_device, D, H, B, density):
    rng = np.random.default_rng(D + H + B)
    params = {"W": rng.normal(size=(H, D)), "c": rng.normal(size=H),
              "V": rng.normal(size=(D, H)), "b": rng.normal(size=D)}
    x = (rng.random((B, D)) < density).astype(np.float64)
    dev = {k: to_device(v, fake_device) for k, v in params.items()}
    ref_loss, ref_cache = N.reference_forward(dev, to_device(x, fake_device))
    ref_grads = N.reference_backward(1.0, ref_cache)
    assert all(device_of(g) == fake_device for g in ref_grads.values())
    assert isinstance(ref_cache, tuple) and hasattr(ref_cache, "_fields")     # a NamedTuple
    assert_tiers_agree(N, dev, to_device(x, fake_device))
    host_loss, host_cache = N.reference_forward(params, x)                   # and the host agrees
    assert_grads_close(ref_loss, host_loss, rtol=1e-12, what="loss")
    assert_grads_close(ref_grads, N.reference_backward(1.0, host_cache), rtol=1e-12)


def test_reference_matches_finite_differences():
    rng = np.random.default_rng(7)
    D, H, B = 6, 4, 3
    params = {"W": rng.normal(size=(H, D)), "c": rng.normal(size=H),
              "V": rng.normal(size=(D, H)), "b": rng.normal(size=D)}
    x = (rng.random((B, D)) < 0.5).astype(np.float64)
    grads = N.reference_backward(1.0, N.reference_forward(params, x)[1])
    errors = check_grads(lambda: N.reference_forward(params, x)[0], params, grads)
    assert max(errors.values()) < 1e-7, errors


def test_reference_loss_is_the_definition():
    rng = np.random.default_rng(2)
    params = {"W": rng.normal(size=(3, 5)), "c": rng.normal(size=3),
              "V": rng.normal(size=(5, 3)), "b": rng.normal(size=5)}
    x = (rng.random((4, 5)) < 0.5).astype(np.float64)
    loss, _ = N.reference_forward(params, x)
    assert abs(float(loss) + brute_force_log_prob(params, x).mean()) < 1e-12


# ----------------------------------------------------------------------------- gradients

@settings(max_examples=60, deadline=None)
@given(problems())
def test_gradients_match_finite_differences(problem):
    params, x = problem
    loss, cache = N.forward(params, x)
    grads = N.backward(1.0, cache)
    f = lambda: N.forward(params, x)[0]                              # noqa: E731
    for k, p in params.items():
        num = numerical_grad(f, p)
        # a gradient that is itself round-off sized (e.g. V ~ 1e-16) has no meaningful relative
        # error: then the absolute gap must be at round-off level instead (as in test_fvsbn)
        assert rel_error(num, grads[k]) < 1e-6 or np.abs(num - grads[k]).max() < 1e-9, k


@settings(max_examples=30, deadline=None)
@given(problems())
def test_log_prob_matches_the_definition(problem):
    params, x = problem
    np.testing.assert_allclose(model_with(params).log_prob(x), brute_force_log_prob(params, x),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("D,H", [(1, 3), (4, 2), (10, 5)])
def test_probabilities_sum_to_one(D, H):
    m = NADE(D, H, dtype=np.float64, init_scale=1.0, seed=D)
    m.params["b"][...] = np.random.default_rng(1).normal(size=D)
    total = np.exp(m.log_prob(all_binary_vectors(D))).sum()
    assert abs(total - 1.0) < 1e-10


def test_autoregressive_property(rng):
    D = 7
    m = NADE(D, 4, dtype=np.float64, init_scale=1.0)
    x = (rng.random((1, D)) < 0.5).astype(float)
    base = m.conditionals(x)[0]
    for t in range(D):
        changed = x.copy()
        changed[0, t:] = 1 - changed[0, t:]                         # flip x_>=t
        np.testing.assert_array_equal(m.conditionals(changed)[0, :t + 1], base[:t + 1])
        if t + 1 < D:                                               # and x_t does matter for t+1
            assert m.conditionals(changed)[0, t + 1] != base[t + 1]


def test_sampling_frequencies_match_probabilities():
    D = 3
    m = NADE(D, 3, dtype=np.float64, init_scale=1.5, seed=3)
    states = all_binary_vectors(D)
    p = np.exp(m.log_prob(states))
    n = 60_000
    codes = asnumpy(m.sample(n, seed=0)).astype(int) @ (2 ** np.arange(D)[::-1])
    freq = np.bincount(codes, minlength=2 ** D) / n
    chi2 = n * ((freq - p) ** 2 / p).sum()
    assert chi2 < 30, (freq, p)                                     # 7 dof: 30 is p < 1e-4


def test_sampler_off_by_one_would_be_caught():
    """The chi-square bound above is tight enough to catch a sampler shifted by one position."""
    D, n = 3, 60_000
    m = NADE(D, 3, dtype=np.float64, init_scale=1.5, seed=3)
    p = np.exp(m.log_prob(all_binary_vectors(D)))
    good = asnumpy(m.sample(n, seed=0)).astype(int)
    shifted = np.roll(good, 1, axis=1)                              # x_t drawn where x_{t+1} belongs
    freq = np.bincount(shifted @ (2 ** np.arange(D)[::-1]), minlength=2 ** D) / n
    assert n * ((freq - p) ** 2 / p).sum() > 30


def test_temperature_sharpens_conditionals():
    m = NADE(1, 2, dtype=np.float64)
    m.params["b"][...] = 1.0                                        # p(x=1) = sigmoid(1 + V.h)
    p1 = float(m.conditionals(np.zeros((1, 1)))[0, 0])
    cold = asnumpy(m.sample(40_000, seed=1, temperature=0.5)).mean()
    logit = np.log(p1 / (1 - p1))
    assert abs(cold - 1 / (1 + np.exp(-logit / 0.5))) < 0.01


def test_completion_keeps_the_given_part_and_follows_the_conditionals():
    D = 4
    m = NADE(D, 3, dtype=np.float64, init_scale=1.5, seed=5)
    given = np.array([[1.0, 0.0, 0.0, 0.0]])
    out = asnumpy(m.complete(np.repeat(given, 40_000, axis=0), n_given=2, seed=2))
    assert (out[:, :2] == given[0, :2]).all()
    # p(x_3, x_4 | x_1 = 1, x_2 = 0) from the joint
    states = all_binary_vectors(D)
    joint = np.exp(m.log_prob(states))
    keep = (states[:, 0] == 1) & (states[:, 1] == 0)
    want = joint[keep] / joint[keep].sum()
    got = np.bincount(out[:, 2:].astype(int) @ [2, 1], minlength=4) / len(out)
    assert np.abs(got - want).max() < 0.01


def test_float32_loss_matches_float64(rng):
    x = (rng.random((5, 20)) < 0.3).astype(np.uint8)
    m64 = NADE(20, 8, dtype=np.float64, init_scale=0.5)
    m32 = NADE(20, 8, dtype=np.float32, init_scale=0.5)
    l64, g64 = m64.loss_and_grads(x)
    l32, g32 = m32.loss_and_grads(x)
    assert abs(l64 - l32) < 1e-4 * abs(l64)
    assert all(g32[k].dtype == np.float32 for k in g32)
    assert max(rel_error(g32[k], g64[k]) for k in g64) < 1e-4


def test_bad_input_gives_clear_errors():
    m = NADE(6, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        m.loss_and_grads(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="binary"):
        m.log_prob(np.full((2, 6), 0.5))


def test_runs_on_the_strict_fake_device(fake_device, rng):
    params = {k: v.astype(np.float64) for k, v in NADE(6, 4, init_scale=1.0).state_dict().items()}
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    host = model_with(params)
    dev = model_with(params, device=fake_device)
    xd = to_device(x, fake_device)
    loss, grads = dev.loss_and_grads(xd)
    ref_loss, ref_grads = host.loss_and_grads(x)
    assert abs(loss - ref_loss) < 1e-12
    for k in grads:
        assert device_of(grads[k]) == fake_device
        np.testing.assert_allclose(asnumpy(grads[k]), ref_grads[k], atol=1e-12)
    np.testing.assert_allclose(asnumpy(dev.log_prob(xd)), host.log_prob(x), atol=1e-12)
    np.testing.assert_array_equal(asnumpy(dev.sample(5, seed=4)), host.sample(5, seed=4))
    np.testing.assert_array_equal(asnumpy(dev.complete(xd, 3, seed=4)), host.complete(x, 3, seed=4))
    dev.init_bias(xd)
