"""Synthetic ground truth: binary enumeration, exact entropy, random FVSBN sources."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy, device_of
from scratchnade.data.synthetic import (MAX_ENUM_D, SyntheticSource, all_binary_vectors,
                                        exact_entropy, fvsbn_source, random_fvsbn, sample_dataset)
from scratchnade.models.fvsbn import FVSBN


# ----------------------------------------------------------------------------- enumeration

def test_all_binary_vectors_small_cases():
    np.testing.assert_array_equal(all_binary_vectors(2), [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert all_binary_vectors(0).shape == (1, 0)                   # the one empty vector
    assert all_binary_vectors(3).dtype == np.uint8


@settings(max_examples=12, deadline=None)
@given(D=st.integers(1, 12), data=st.data())
def test_all_binary_vectors_enumerates_every_state_once_in_order(D, data):
    x = all_binary_vectors(D)
    assert x.shape == (2 ** D, D) and set(np.unique(x)) <= {0, 1}
    index = (x.astype(np.int64) << np.arange(D - 1, -1, -1)).sum(axis=1)
    np.testing.assert_array_equal(index, np.arange(2 ** D))        # row i = binary of i
    start = data.draw(st.integers(0, 2 ** D), label="start")
    stop = data.draw(st.integers(start, 2 ** D), label="stop")
    np.testing.assert_array_equal(all_binary_vectors(D, start, stop), x[start:stop])


# ----------------------------------------------------------------------------- entropy

def _independent_log_prob(q):
    """log p(x) of independent bits with p(x_t = 1) = q_t."""
    def log_prob(x):
        return (x * np.log(q) + (1 - x) * np.log1p(-q)).sum(axis=1)
    return log_prob


def test_exact_entropy_of_independent_bits_in_small_chunks():
    q = np.array([0.1, 0.5, 0.7, 0.99, 0.3])
    H = -(q * np.log(q) + (1 - q) * np.log1p(-q)).sum()
    assert np.isclose(exact_entropy(_independent_log_prob(q), 5), H, rtol=1e-13)
    assert np.isclose(exact_entropy(_independent_log_prob(q), 5, chunk=3), H, rtol=1e-13)


def test_exact_entropy_refuses_large_D_and_unnormalised_models():
    with pytest.raises(ValueError, match="2\\^D"):
        exact_entropy(_independent_log_prob(np.full(21, 0.5)), MAX_ENUM_D + 1)

    def twice(x):
        return np.log(2.0) + _independent_log_prob(np.full(3, 0.5))(x)
    with pytest.raises(ValueError, match="not normalised"):
        exact_entropy(twice, 3)


def test_entropy_matches_monte_carlo():
    truth = random_fvsbn(8, seed=3)
    x = sample_dataset(truth, 50_000, seed=0)
    nll = -truth.log_prob(x)                                       # E[-log p(x)] = H
    se = nll.std() / np.sqrt(len(nll))
    assert abs(nll.mean() - truth.exact_entropy()) < 4 * se


# ----------------------------------------------------------------------------- ground truth

def test_random_fvsbn_is_a_strictly_lower_matrix_form_model():
    m = random_fvsbn(6, seed=1, scale=2.0)
    assert isinstance(m, FVSBN) and m.form == "matrix" and m.dtype == np.float64
    W = m.params["W"]
    assert np.all(np.triu(W) == 0) and np.all(W[np.tril_indices(6, -1)] != 0)
    assert 1.0 < np.std(W[np.tril_indices(6, -1)]) < 3.5            # scale 2
    np.testing.assert_array_equal(random_fvsbn(6, seed=1, scale=2.0).params["W"], W)
    assert not np.array_equal(random_fvsbn(6, seed=2, scale=2.0).params["W"], W)
    # stronger weights, lower entropy; never above the uniform distribution's D log 2
    H = [random_fvsbn(6, seed=1, scale=s).exact_entropy() for s in (0.1, 1.0, 3.0)]
    assert 6 * np.log(2) > H[0] > H[1] > H[2] > 0


def test_fvsbn_source_splits_and_entropy():
    src = fvsbn_source(D=7, n_train=500, n_valid=100, n_test=200, seed=4)
    assert isinstance(src, SyntheticSource) and src.D == 7
    for name, n in (("train", 500), ("valid", 100), ("test", 200)):
        arr = src[name]
        assert arr.shape == (n, 7) and arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1}
    assert not np.array_equal(src.train[:100], src.valid)          # independent streams
    assert src.entropy == src.model.exact_entropy()
    assert 0 < src.entropy < 7 * np.log(2)
    again = fvsbn_source(D=7, n_train=900, n_valid=100, n_test=200, seed=4)
    np.testing.assert_array_equal(again.test, src.test)            # test set fixed by the seed
    np.testing.assert_array_equal(again.train[:500], src.train)
    other = fvsbn_source(D=7, n_train=500, n_valid=100, n_test=200, seed=5)
    assert not np.array_equal(other.train, src.train)


def test_random_fvsbn_on_fake_device(fake_device):
    m = random_fvsbn(4, seed=0, device=fake_device)
    assert device_of(m.params["W"]) == fake_device
    x = sample_dataset(m, 10, seed=0)
    assert isinstance(x, np.ndarray) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, sample_dataset(random_fvsbn(4, seed=0), 10, seed=0))
    assert np.isclose(m.exact_entropy(), random_fvsbn(4, seed=0).exact_entropy(), rtol=1e-12)
    assert np.isclose(np.exp(asnumpy(m.log_prob(all_binary_vectors(4)))).sum(), 1.0)
