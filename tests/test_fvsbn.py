"""FVSBN: reference == fast, gradients, loop == masked, normalisation, autoregressive property,
sampling, fitting."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.data.synthetic import all_binary_vectors, random_fvsbn, sample_dataset
from scratchnade.gradcheck import assert_grads_close, check_grads, check_model, numerical_grad
from scratchnade.models import fvsbn as F
from scratchnade.models.fvsbn import FVSBN
from scratchnade.optim import SGD, Adam, Nesterov
from tiers import assert_tiers_agree

FORMS = F.FORMS


def random_params(D, form, rng, scale=1.0, upper=True):
    """Host float64 params; with upper=True the unused upper part of W is filled too."""
    if form == "vector":
        return {"P0": np.asarray(scale * rng.standard_normal()), "P": scale * rng.standard_normal(D)}
    W = scale * rng.standard_normal((D, D))
    return {"b": scale * rng.standard_normal(D), "W": W if upper else np.tril(W, -1)}


@st.composite
def problems(draw, max_D=8, max_B=4):
    """(form, params, x): float64 parameters in [-2, 2] (all of W, upper part included), binary x."""
    form = draw(st.sampled_from(FORMS), label="form")
    D = draw(st.integers(1, max_D), label="D")
    B = draw(st.integers(1, max_B), label="B")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    if form == "vector":
        params = {"P0": draw(arrays(np.float64, (), elements=value), label="P0"),
                  "P": draw(arrays(np.float64, (D,), elements=value), label="P")}
    else:
        params = {"b": draw(arrays(np.float64, (D,), elements=value), label="b"),
                  "W": draw(arrays(np.float64, (D, D), elements=value), label="W")}
    x = draw(arrays(np.float64, (B, D), elements=st.sampled_from([0.0, 1.0])), label="x")
    return form, params, x


def model_with(params, form, dtype=np.float64, device=None):
    m = FVSBN(len(params["P"] if form == "vector" else params["b"]), form=form, dtype=dtype,
              device=device)
    m.load_state_dict(params)
    return m


# ----------------------------------------------------------------------------- reference == fast

@settings(max_examples=25, deadline=None)
@given(problems(max_D=10, max_B=5))
def test_reference_and_fast_agree(problem):
    form, params, x = problem
    assert_tiers_agree(F, params, x, form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("D,B", [(1, 1), (2, 3), (7, 5)])
def test_reference_and_fast_agree_on_the_fake_device(fake_device, form, D, B):
    rng = np.random.default_rng(10 * D + B)
    params = random_params(D, form, rng)
    x = (rng.random((B, D)) < 0.5).astype(np.float64)
    dev = {k: to_device(v, fake_device) for k, v in params.items()}
    xd = to_device(x, fake_device)
    assert_tiers_agree(F, dev, xd, form)
    ref_loss, ref_cache = F.reference_forward(dev, xd)
    ref_grads = F.reference_backward(1.0, ref_cache)
    assert all(device_of(g) == fake_device for g in ref_grads.values())
    assert ref_grads.keys() == params.keys() and all(ref_grads[k].shape == params[k].shape for k in params)
    host_loss, host_cache = F.reference_forward(params, x)                 # and the host agrees
    assert_grads_close(ref_loss, host_loss, rtol=1e-12, what="loss")
    assert_grads_close(ref_grads, F.reference_backward(1.0, host_cache), rtol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_reference_matches_finite_differences(form):
    rng = np.random.default_rng(4)
    params = random_params(6, form, rng)
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)
    grads = F.reference_backward(1.0, F.reference_forward(params, x)[1])
    errors = check_grads(lambda: F.reference_forward(params, x)[0], params, grads)
    # the unused entries (upper W, P_D) have gradient exactly 0 on both sides: error 0
    assert max(errors.values()) < 1e-7, errors


# ----------------------------------------------------------------------------- gradients

@settings(max_examples=60, deadline=None)
@given(problems())
def test_gradients_match_finite_differences(problem):
    form, params, x = problem
    loss, cache = F.forward(params, x, form)
    grads = F.backward(1.0, cache)

    def loss_fn():
        return F.forward(params, x, form)[0]

    for name, p in params.items():
        num = numerical_grad(loss_fn, p)                  # centred differences, float64
        # An exactly-zero true gradient (e.g. dP0 = B sigmoid(0) - 1 with B = 2) leaves only
        # round-off in `num`, which rel_error reads as 1; accept a tiny absolute gap there.
        assert_grads_close(grads[name], num, rtol=1e-6, atol=1e-9, what=name)


@pytest.mark.parametrize("form", FORMS)
def test_check_model_whole_model(form):
    rng = np.random.default_rng(3)
    m = model_with(random_params(6, form, rng), form)
    x = (rng.random((5, 6)) < 0.5).astype(np.uint8)
    errors = check_model(m, x)
    assert max(errors.values()) < 1e-7, errors


def test_backward_scales_with_dloss():
    rng = np.random.default_rng(0)
    params, x = random_params(5, "matrix", rng), (rng.random((3, 5)) < 0.5) * 1.0
    _, cache = F.forward(params, x)
    g1, g3 = F.backward(1.0, cache), F.backward(3.0, cache)
    for k in g1:
        np.testing.assert_allclose(g3[k], 3.0 * g1[k], rtol=1e-13)


def test_masked_gradients_are_exactly_zero_where_unused():
    rng = np.random.default_rng(1)
    D = 7
    x = (rng.random((4, D)) < 0.5) * 1.0
    g = F.backward(1.0, F.forward(random_params(D, "matrix", rng), x)[1])
    assert np.all(np.triu(g["W"]) == 0)                # diagonal and above
    assert np.any(np.tril(g["W"], -1) != 0)
    g = F.backward(1.0, F.forward(random_params(D, "vector", rng), x)[1])
    assert g["P"][-1] == 0 and g["P0"].shape == ()     # P_D multiplies nothing


# ----------------------------------------------------------------------------- loop == masked

@settings(max_examples=60, deadline=None)
@given(problems(max_D=10, max_B=5))
def test_loop_equals_masked(problem):
    _, params, x = problem
    np.testing.assert_allclose(F.logits_loop(params, x), F.logits_masked(params, x),
                               rtol=0, atol=1e-12)


def test_loop_is_the_lecture_definition():
    """Hand-computed logits for D = 3 in both forms."""
    x = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    vec = {"P0": np.asarray(0.5), "P": np.array([2.0, -3.0, 7.0])}
    expected = np.array([[0.5, 2.0, 2.0 - 3.0], [0.5, 0.0, -3.0]])   # a_1 = P0, a_t = <P_<t, x_<t>
    for f in (F.logits_loop, F.logits_masked):
        np.testing.assert_allclose(f(vec, x), expected)
    mat = {"b": np.array([0.1, 0.2, 0.3]), "W": np.array([[9.0, 9, 9], [2, 9, 9], [4, 5, 9]])}
    expected = np.array([[0.1, 0.2 + 2, 0.3 + 4 + 5], [0.1, 0.2, 0.3 + 5]])
    for f in (F.logits_loop, F.logits_masked):
        np.testing.assert_allclose(f(mat, x), expected)


def test_vector_form_is_a_matrix_form():
    rng = np.random.default_rng(2)
    params = random_params(6, "vector", rng)
    b, W = F.effective_weights(params)
    x = all_binary_vectors(6).astype(np.float64)
    np.testing.assert_allclose(F.logits_masked({"b": b, "W": W}, x), F.logits_masked(params, x),
                               atol=1e-12)


# ----------------------------------------------------------------------------- probabilities

@settings(max_examples=20, deadline=None)
@given(form=st.sampled_from(FORMS), D=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_normalisation(form, D, seed):
    params = random_params(D, form, np.random.default_rng(seed), scale=2.0)
    x = all_binary_vectors(D).astype(np.float64)
    total = np.exp(F.log_prob(params, x)).sum()
    assert abs(total - 1.0) < 1e-10


@settings(max_examples=30, deadline=None)
@given(problems(max_D=8, max_B=3), st.data())
def test_autoregressive_property(problem, data):
    form, params, x = problem
    B, D = x.shape
    t = data.draw(st.integers(0, D - 1), label="t")              # 0-based position
    x2 = x.copy()
    x2[:, t:] = data.draw(arrays(np.float64, (B, D - t), elements=st.sampled_from([0.0, 1.0])))
    c1, c2 = F.conditionals(params, x), F.conditionals(params, x2)
    np.testing.assert_array_equal(c1[:, :t + 1], c2[:, :t + 1])  # p(x_u | x_<u), u <= t


@pytest.mark.parametrize("form", FORMS)
def test_conditional_depends_on_previous_dimension(form):
    params = random_params(5, form, np.random.default_rng(4))
    x = np.zeros((1, 5))
    for t in range(1, 5):
        flipped = x.copy()
        flipped[0, t - 1] = 1.0
        assert F.conditionals(params, x)[0, t] != F.conditionals(params, flipped)[0, t]


def test_loss_is_mean_nll_and_log_prob_is_finite_for_huge_logits():
    rng = np.random.default_rng(5)
    m = model_with(random_params(4, "matrix", rng), "matrix")
    x = (rng.random((6, 4)) < 0.5).astype(np.uint8)
    loss, _ = m.loss_and_grads(x)
    assert np.isclose(float(loss), -m.log_prob(x).mean())
    assert np.isclose(m.loss(x), float(loss))
    m.params["b"][:] = [1e4, -1e4, 1e4, -1e4]                  # no overflow warning (errors here)
    assert np.all(np.isfinite(m.log_prob(x)))
    assert np.all(np.isfinite(m.loss_and_grads(x)[1]["b"]))


# ----------------------------------------------------------------------------- sampling

def _state_index(x):
    """Row of each sample in all_binary_vectors order (x_1 most significant)."""
    D = x.shape[1]
    return (np.asarray(x, dtype=np.int64) << np.arange(D - 1, -1, -1)).sum(axis=1)


def chi_square(samples, params):
    """Pearson's statistic of the sample counts against n p(x) over all 2^D states."""
    D = samples.shape[1]
    p = np.exp(F.log_prob(params, all_binary_vectors(D).astype(np.float64)))
    counts = np.bincount(_state_index(samples), minlength=2 ** D)
    expected = len(samples) * p
    return float(((counts - expected) ** 2 / expected).sum())


def shifted_sampler(params, n, rng, shift):
    """A deliberately wrong sampler: x_t drawn from the conditional of position t + shift."""
    b, W = F.effective_weights(params)
    D = b.shape[0]
    u = rng.random((n, D))
    x = np.zeros((n, D))
    for t in range(D):
        s = min(max(t + shift, 0), D - 1)
        a = b[s] + x[:, :s] @ W[s, :s] if s <= t else b[s] + x[:, :t] @ W[s, :t]
        x[:, t] = u[:, t] < 1.0 / (1.0 + np.exp(-a))
    return x


CHI2_LIMIT = 60.0   # 15 degrees of freedom: P(chi2 > 60) ~ 2e-7 when sampling is right


@pytest.mark.parametrize("form", FORMS)
def test_sampling_matches_log_prob(form):
    D, n = 4, 100_000
    params = random_params(D, form, np.random.default_rng(6), scale=1.5, upper=False)
    m = model_with(params, form)
    x = asnumpy(m.sample(n, seed=0))
    assert x.shape == (n, D) and set(np.unique(x)) <= {0.0, 1.0}
    assert chi_square(x, params) < CHI2_LIMIT
    # the test of the test: an off-by-one sampler is caught
    for shift in (-1, 1):
        bad = shifted_sampler(params, n, np.random.default_rng(0), shift)
        assert chi_square(bad, params) > 10 * CHI2_LIMIT, shift


def test_sampling_is_reproducible_and_temperature_zero_is_greedy():
    m = model_with(random_params(6, "matrix", np.random.default_rng(7)), "matrix")
    np.testing.assert_array_equal(m.sample(50, seed=3), m.sample(50, seed=np.random.default_rng(3)))
    assert not np.array_equal(m.sample(50, seed=3), m.sample(50, seed=4))
    cold = m.sample(20, seed=1, temperature=1e-6)                  # x_t = 1[p_t > 1/2]
    assert np.all(cold == cold[0])
    greedy = np.zeros(6)
    for t in range(6):
        greedy[t] = F.conditionals(m.params, greedy[None, :])[0, t] > 0.5
    np.testing.assert_array_equal(cold[0], greedy)
    with pytest.raises(ValueError, match="temperature"):
        m.sample(2, temperature=0.0)


# ----------------------------------------------------------------------------- fitting

def test_adam_fit_approaches_true_entropy_and_keeps_upper_triangle_zero():
    D = 5
    truth = random_fvsbn(D, seed=11, scale=1.0)
    data = sample_dataset(truth, 20_000, seed=1)                   # KL from estimation ~ 15 / 2n
    p = np.exp(truth.log_prob(all_binary_vectors(D)))              # true probabilities
    H = truth.exact_entropy()
    m = FVSBN(D, form="matrix", seed=0, dtype=np.float64)
    opt = Adam(lr=0.1, weight_decay=1e-6)
    for _ in range(150):                                           # full-batch Adam
        _, grads = m.loss_and_grads(data)
        opt.step(m.params, grads)
    cross = -float(p @ m.log_prob(all_binary_vectors(D)))          # E_p[-log q] = H + KL(p||q)
    assert H - 1e-9 <= cross < H + 0.01, (cross, H)
    assert np.all(np.triu(m.params["W"]) == 0)


@pytest.mark.parametrize("opt", [SGD(lr=0.5), Nesterov(lr=0.1, weight_decay=1e-3),
                                 Adam(lr=0.1, weight_decay=1e-3, clip=1.0)])
def test_upper_triangle_of_W_stays_zero_under_optimizers(opt):
    rng = np.random.default_rng(8)
    m = FVSBN(5, seed=1, init_scale=1.0)
    assert np.all(np.triu(m.params["W"]) == 0) and np.any(m.params["W"] != 0)
    for _ in range(5):
        opt.step(m.params, m.loss_and_grads((rng.random((8, 5)) < 0.5).astype(np.uint8))[1])
    assert np.all(np.triu(m.params["W"]) == 0)


# ----------------------------------------------------------------------------- class and errors

def test_class_config_dtype_and_shapes():
    m = FVSBN(784)
    assert m.config == dict(D=784, form="matrix", seed=0, dtype="float32", init_scale=0.01)
    assert m.dtype == np.float32 and m.num_parameters() == 784 + 784 * 784
    x = (np.random.default_rng(0).random((3, 784)) < 0.3).astype(np.uint8)
    loss, grads = m.loss_and_grads(x)
    assert {k: (g.shape, g.dtype) for k, g in grads.items()} == \
        {"b": ((784,), np.float32), "W": ((784, 784), np.float32)}
    assert m.log_prob(x).shape == (3,) and m.conditionals(x).shape == (3, 784)
    v = FVSBN(4, form="vector")
    assert set(v.params) == {"P0", "P"} and v.params["P0"].shape == () and v.params["P"].shape == (4,)
    assert repr(v).startswith("FVSBN(D=4, form='vector'")


def test_clear_errors():
    m = FVSBN(4)
    with pytest.raises(ValueError, match="binary"):
        m.log_prob(np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="binary"):
        m.loss_and_grads(np.array([[0, 1, 2, 1]]))
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        m.log_prob(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        m.loss_and_grads(np.zeros(4))
    with pytest.raises(ValueError, match="form"):
        FVSBN(4, form="tensor")
    with pytest.raises(ValueError, match="keys"):
        F.forward({"b": np.zeros(2)}, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="form="):
        F.forward(random_params(2, "matrix", np.random.default_rng(0)), np.zeros((1, 2)), "vector")
    with pytest.raises(ValueError, match="2\\^D"):
        FVSBN(21).exact_entropy()


def test_exact_entropy_independent_bits():
    """W = 0: the bits are independent, H = sum_t h(sigmoid(b_t))."""
    m = FVSBN(5, dtype=np.float64, init_scale=0.0)
    b = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    m.params["b"][:] = b
    q = 1.0 / (1.0 + np.exp(-b))
    H = -(q * np.log(q) + (1 - q) * np.log(1 - q)).sum()
    assert np.isclose(m.exact_entropy(), H, rtol=1e-12)
    assert np.isclose(FVSBN(3, dtype=np.float32, init_scale=0.0).exact_entropy(), 3 * np.log(2))


# ----------------------------------------------------------------------------- devices

@pytest.mark.parametrize("form", FORMS)
def test_runs_on_fake_device_and_matches_cpu(form, fake_device):
    params = random_params(5, form, np.random.default_rng(9), upper=False)
    cpu = model_with(params, form)
    dev = model_with(params, form, device=fake_device)
    assert dev.device == fake_device
    x = (np.random.default_rng(1).random((4, 5)) < 0.5).astype(np.uint8)
    loss_c, g_c = cpu.loss_and_grads(x)
    loss_d, g_d = dev.loss_and_grads(to_device(x, fake_device))
    assert np.isclose(float(loss_d), float(loss_c), rtol=1e-12)
    for k in g_c:
        assert device_of(g_d[k]) == fake_device
        np.testing.assert_allclose(asnumpy(g_d[k]), g_c[k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(asnumpy(dev.log_prob(x)), cpu.log_prob(x), rtol=1e-12)
    np.testing.assert_allclose(asnumpy(dev.conditionals(x)), cpu.conditionals(x), rtol=1e-12)
    np.testing.assert_allclose(asnumpy(F.logits_loop(dev.params, to_device(x * 1.0, fake_device))),
                               F.logits_loop(cpu.params, x * 1.0), atol=1e-12)
    np.testing.assert_array_equal(asnumpy(dev.sample(7, seed=2)), cpu.sample(7, seed=2))
    assert np.isclose(dev.exact_entropy(), cpu.exact_entropy(), rtol=1e-12)
    opt = Adam(lr=0.1)
    opt.step(dev.params, g_d)
    assert device_of(dev.params[next(iter(dev.params))]) == fake_device
