"""Finite-difference checks: they must pass on right gradients and fail on wrong ones."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from scratchnade import functional as F
from scratchnade.backend import asnumpy, device_of, get_xp, to_device
from scratchnade.gradcheck import (assert_grads_close, check_directional, check_grads, check_model, format_table,
                                   numerical_grad, rel_error)

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
# |x| < 1e-3 becomes 0: an all-tiny gradient (1e-17) has no meaningful relative error
values = st.floats(-3, 3, allow_nan=False).map(lambda v: v if abs(v) > 1e-3 else 0.0)


class LogisticRegression:
    """p(y = 1 | x) = sigmoid(x . W + b); loss = mean Bernoulli NLL.  A model for the contract."""

    def __init__(self, D, seed=0, device="cpu"):
        rng = np.random.default_rng(seed)
        self.params = {"W": to_device(rng.standard_normal(D), device),     # (D,)
                       "b": to_device(np.array(0.3), device)}               # ()

    def loss_and_grads(self, batch):
        X, y = batch                                     # (N, D), (N,)
        W, b = self.params["W"], self.params["b"]
        xp = get_xp(X, W)
        a = X @ W + b                                    # (N,) logits
        loss = F.bernoulli_nll(a, y).mean()
        da = F.bernoulli_nll_backward(1.0 / a.shape[0], a, y)   # (N,)
        grads = {"W": X.T @ da, "b": xp.asarray(da.sum())}
        return loss, grads


def logistic_batch(N=7, D=4, seed=1, device="cpu"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    y = (rng.random(N) < 0.5).astype(np.float64)
    return to_device(X, device), to_device(y, device)


# ----------------------------------------------------------------------------- rel_error

def test_rel_error_basics():
    assert rel_error(1.0, 1.0) == 0.0
    assert rel_error(0.0, 0.0) == 0.0                          # 0 / 0 is no error
    assert rel_error(1.0, -1.0) == 1.0                         # opposite signs: maximal
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(0.2 / 4.2)
    assert rel_error(np.float32(3), 3) == 0.0
    assert np.isnan(rel_error([np.inf, 1.0], [np.inf, 1.0]))       # reported, not a warning


def test_rel_error_elementwise_is_stricter_on_tiny_entries():
    a, b = np.array([1.0, 1e-12]), np.array([1.0, 2e-12])
    assert rel_error(a, b) < 1e-11
    assert rel_error(a, b, elementwise=True) == pytest.approx(1 / 3)


def test_rel_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))


def test_rel_error_on_fake_device(fake_device):
    a = to_device(np.array([1.0, 2.0]), fake_device)
    assert rel_error(a, np.array([1.0, 2.0])) == 0.0


# ----------------------------------------------------------------------------- numerical_grad

def test_assert_grads_close_passes_close_and_names_what_differs(fake_device):
    g = np.array([1.0, -2.0, 3.0])
    assert_grads_close(g + 1e-12, g)                                     # rel. error ~2e-13
    assert_grads_close({"W": to_device(g, fake_device)}, {"W": g})       # any device, dicts
    with pytest.raises(AssertionError, match=r"gradient 'b': relative error 2\.00e-01"):
        assert_grads_close({"W": g, "b": g}, {"W": g, "b": 1.5 * g})
    with pytest.raises(AssertionError, match="different keys"):
        assert_grads_close({"W": g}, {"W": g, "b": g})
    with pytest.raises(AssertionError, match="shape"):
        assert_grads_close(g, g[:2])
    with pytest.raises(AssertionError, match="nan"):
        assert_grads_close(np.array([np.nan]), np.array([0.0]), atol=1.0)   # nan never passes


def test_assert_grads_close_atol_side_is_for_all_tiny_gradients():
    true_zero, round_off = np.zeros(3), np.array([1e-17, 0.0, -2e-17])  # rel. error 1: only round-off
    with pytest.raises(AssertionError):
        assert_grads_close(round_off, true_zero)
    assert_grads_close(round_off, true_zero, atol=1e-14)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_numerical_grad_of_sum_of_squares(data):
    x = data.draw(hnp.arrays(np.float64, shapes, elements=values), label="x")
    x0 = x.copy()
    g = numerical_grad(lambda: (x * x).sum(), x)
    assert g.shape == x.shape
    assert rel_error(g, 2 * x) < 1e-9                           # d/dx sum x^2 = 2 x
    np.testing.assert_array_equal(x, x0)                        # restored exactly


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_numerical_grad_of_quadratic_form(n, seed):
    rng = np.random.default_rng(seed)
    A, x = rng.standard_normal((n, n)), rng.standard_normal(n)
    g = numerical_grad(lambda: x @ A @ x, x)
    assert rel_error(g, (A + A.T) @ x) < 1e-8                   # d/dx x'Ax = (A + A') x


def test_numerical_grad_uses_the_step_actually_taken():
    x = np.array([1e4, -1e4 / 3])                  # fl(x + h) - x differs from h by ~1e-7 h
    g = numerical_grad(lambda: (x[0] - 1e4) - 2.0 * (x[1] + 1e4 / 3), x)
    np.testing.assert_array_equal(g, [1.0, -2.0])   # exact: f is linear and exactly evaluated


def test_numerical_grad_refuses_float32():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="float64.*dtype=numpy.float64"):
        numerical_grad(lambda: (x * x).sum(), x)


def test_numerical_grad_on_fake_device(fake_device):
    x = to_device(np.array([[1.0, -2.0], [0.5, 3.0]]), fake_device)
    xp = get_xp(x)
    g = numerical_grad(lambda: xp.sin(x).sum(), x)
    assert isinstance(g, np.ndarray) and device_of(x) == fake_device
    assert rel_error(g, np.cos(asnumpy(x))) < 1e-9


# ----------------------------------------------------------------------------- check_grads

def test_check_grads_passes_right_and_fails_wrong_gradient():
    rng = np.random.default_rng(0)
    params = {"x": rng.standard_normal(5), "A": rng.standard_normal((5, 5))}

    def loss_fn():
        return np.tanh(params["A"] @ params["x"]).sum()

    t = 1 - np.tanh(params["A"] @ params["x"]) ** 2                     # (5,) tanh'
    right = {"x": params["A"].T @ t, "A": np.outer(t, params["x"])}
    errors = check_grads(loss_fn, params, right)
    assert max(errors.values()) < 1e-8
    wrong = {"x": right["x"], "A": np.outer(t, params["x"]).T}           # transposed: a typical bug
    errors = check_grads(loss_fn, params, wrong)
    assert errors["x"] < 1e-8 and errors["A"] > 1e-2
    assert "NO" in format_table(errors) and "yes" in format_table(errors)


def test_check_grads_subset_of_elements_still_catches_a_bug():
    rng = np.random.default_rng(1)
    params = {"W": rng.standard_normal((20, 30))}
    calls = []

    def loss_fn():
        calls.append(1)
        return (params["W"] ** 3).sum()

    errors = check_grads(loss_fn, params, {"W": 3 * params["W"] ** 2}, max_elements=10, rng=0)
    assert errors["W"] < 1e-8 and len(calls) == 20             # 10 entries x 2 calls
    errors = check_grads(loss_fn, params, {"W": 2 * params["W"] ** 2}, max_elements=10, rng=0)
    assert errors["W"] > 1e-2


def test_check_grads_validates_keys_and_shapes():
    params = {"W": np.zeros(3)}
    with pytest.raises(ValueError, match="keys"):
        check_grads(lambda: 0.0, params, {"V": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        check_grads(lambda: 0.0, params, {"W": np.zeros(4)})


# ----------------------------------------------------------------------------- directional

@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_directional_check_on_quadratic(data):
    shape = data.draw(shapes, label="shape")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    params = {"x": rng.standard_normal(shape), "c": rng.standard_normal(shape)}
    x0 = params["x"].copy()

    def f():
        return ((params["x"] - params["c"]) ** 2 * 1.5).sum()

    d = 3.0 * (params["x"] - params["c"])
    errors = check_directional(f, params, {"x": d, "c": -d}, rng)
    assert max(errors.values()) < 1e-8
    np.testing.assert_array_equal(params["x"], x0)             # restored exactly
    errors = check_directional(f, params, {"x": d, "c": d}, rng)    # sign bug in dc
    assert errors["c"] > 1e-2 and errors["x"] < 1e-8


# ----------------------------------------------------------------------------- whole model

def test_check_model_logistic_regression():
    model = LogisticRegression(4)
    batch = logistic_batch()
    errors = check_model(model, batch)
    assert set(errors) == {"W", "b"} and max(errors.values()) < 1e-7
    errors = check_model(model, batch, n_directions=4, rng=0)
    assert max(errors.values()) < 1e-7


def test_check_model_detects_a_wrong_backward():
    class Broken(LogisticRegression):
        def loss_and_grads(self, batch):
            loss, grads = super().loss_and_grads(batch)
            grads["b"] = grads["b"] * 2.0               # forgot a factor 1/2 somewhere
            return loss, grads

    errors = check_model(Broken(4), logistic_batch())
    assert errors["W"] < 1e-7 and errors["b"] > 1e-2


def test_check_model_refuses_float32():
    model = LogisticRegression(3)
    model.params = {k: v.astype(np.float32) for k, v in model.params.items()}
    with pytest.raises(ValueError, match="dtype=numpy.float64"):
        check_model(model, logistic_batch(D=3))


def test_check_model_on_fake_device(fake_device):
    model = LogisticRegression(4, device=fake_device)
    W0 = asnumpy(model.params["W"]).copy()
    errors = check_model(model, logistic_batch(device=fake_device))
    assert max(errors.values()) < 1e-7
    errors = check_model(model, logistic_batch(device=fake_device), n_directions=3)
    assert max(errors.values()) < 1e-7
    assert device_of(model.params["W"]) == fake_device and device_of(model.params["b"]) == fake_device
    np.testing.assert_array_equal(asnumpy(model.params["W"]), W0)


def test_format_table():
    table = format_table({"W": 3.1e-11, "bias_long_name": 0.5, "c": float("nan")}, tol=1e-6)
    lines = table.splitlines()
    assert lines[0].split("|")[0].strip() == "parameter"
    assert len(lines) == 5
    assert lines[2].startswith("W ") and lines[2].endswith("yes") and "3.10e-11" in lines[2]
    assert lines[3].endswith("NO") and lines[4].endswith("NO")     # nan is not ok
