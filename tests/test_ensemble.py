"""Ensembles over orderings / mask sets: the mixture is a distribution, the per-pixel average is not.

On small D every one of the 2^D vectors is scored, so normalisation is checked exactly; Jensen's
inequality log p_ens(x) >= mean_k log p_k(x) is checked example by example.
"""

import numpy as np
import pytest

from fakedevice import DeviceArray
from scratchnade.backend import asnumpy, to_device
from scratchnade.data.synthetic import all_binary_vectors
from scratchnade.ensemble import (Ensemble, check_members, ensemble_log_prob, member_log_probs,
                                  mixture_log_prob, per_pixel_average_log_prob)
from scratchnade.models.made import MADE
from scratchnade.models.orderless_nade import OrderlessNADE, log_prob_in_order


def made(D=6, masks=8, **kw):
    """A MADE whose mask sets differ in ordering too, with weights large enough to matter."""
    m = MADE(D, H=12, layers=kw.pop("layers", 1), masks=masks, shuffle_order=True, seed=3, dtype=np.float64,
             init_scale=1.0, **kw)
    return m


def orderless(D=6, layers=1):
    return OrderlessNADE(D, H=10, layers=layers, seed=5, dtype=np.float64, init_scale=1.0)


MODELS = {"made": made, "made-2-layers": lambda: made(layers=2), "orderless": orderless,
          "orderless-2-layers": lambda: orderless(layers=2)}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("K", [1, 2, 5])
def test_the_mixture_sums_to_one_over_every_vector(name, K):
    model = MODELS[name]()
    x = all_binary_vectors(6).astype(np.float64)
    total = np.exp(asnumpy(ensemble_log_prob(model, x, K))).sum()
    assert abs(total - 1.0) < 1e-12, total
    members = member_log_probs(model, x, K)
    assert members.shape == (K, 64)
    assert np.allclose(np.exp(members).sum(axis=1), 1.0, atol=1e-12)       # every member is normalised


@pytest.mark.parametrize("name", MODELS)
def test_the_mixture_is_at_least_the_members_mean_log_prob_example_by_example(name):
    model = MODELS[name]()
    x = all_binary_vectors(6).astype(np.float64)
    logps = member_log_probs(model, x, 4)
    ens = ensemble_log_prob(model, x, 4)
    assert np.all(ens >= logps.mean(axis=0) - 1e-12)                        # Jensen, per x
    assert np.all(ens <= logps.max(axis=0) + 1e-12)                         # a mixture never beats its best
    assert np.any(ens > logps.mean(axis=0) + 1e-3)                          # members really differ


def test_the_per_pixel_average_is_not_normalised():
    model = made()
    x = all_binary_vectors(6).astype(np.float64)
    for K in (2, 4, 8):
        total = np.exp(per_pixel_average_log_prob(model, x, K)).sum()
        print(f"K = {K}: the per-pixel average of predictions sums to {total:.4f} over all 2^6 vectors")
        assert abs(total - 1.0) > 1e-3, total
    one = np.exp(per_pixel_average_log_prob(model, x, 1)).sum()             # one member: it IS the model
    assert abs(one - 1.0) < 1e-12


def test_mixture_log_prob_is_the_log_of_the_mean_probability():
    rng = np.random.default_rng(0)
    logps = rng.normal(-5.0, 3.0, size=(7, 11))
    expected = np.log(np.exp(logps).mean(axis=0))
    assert np.allclose(mixture_log_prob(logps), expected, rtol=1e-13)
    big = logps - 2000.0                                                    # no underflow: logsumexp
    assert np.allclose(mixture_log_prob(big), expected - 2000.0, rtol=1e-13)


def test_the_ensemble_wrapper_scores_like_the_function_and_keeps_the_model_attributes():
    model = orderless()
    x = all_binary_vectors(6)[::5].astype(np.float64)
    ens = Ensemble(model, 3)
    assert np.array_equal(ens.log_prob(x), ensemble_log_prob(model, x, 3))
    assert ens.loss(x) == pytest.approx(-float(np.mean(ensemble_log_prob(model, x, 3))))
    assert ens.dtype == model.dtype and ens.config == model.config
    ens.training = False
    assert model.training is False


def test_ensembles_on_the_fake_device(fake_device):
    model = made().to(fake_device)
    x = to_device(all_binary_vectors(6).astype(np.float64), fake_device)
    lp = ensemble_log_prob(model, x, 3)
    assert isinstance(lp, DeviceArray) and lp.shape == (64,)                # stayed on the device
    assert abs(np.exp(asnumpy(lp)).sum() - 1.0) < 1e-12


@pytest.mark.parametrize("K, message", [(0, "K must be a whole number >= 1"), (2.0, "whole number"),
                                        (True, "whole number"), (9, "has 8")])
def test_bad_ensemble_sizes_are_refused(K, message):
    with pytest.raises(ValueError, match=message):
        check_members(made(masks=8), K)


# ----------------------------------------------------------------------------- completions

def exact_completion_distribution(model, given_bits):
    """p(x_rest | x_given = given_bits) over every completion, by enumeration of the joint under the
    ordering that lists the given dimensions first, then the others in member 0's order."""
    D, n = model.config["D"], len(given_bits)
    x = all_binary_vectors(D).astype(np.float64)
    keep = np.all(x[:, :n] == given_bits, axis=1)
    order = np.array(list(range(n)) + [d for d in model.ordering(0).tolist() if d >= n])
    if isinstance(model, MADE):
        assert np.array_equal(order, model.ordering(0))
        logp = asnumpy(model.log_prob(x[keep]))
    else:
        logp = asnumpy(log_prob_in_order(model.params, x[keep], order, model.activation))
    p = np.exp(logp - logp.max())
    return x[keep], p / p.sum()


@pytest.mark.parametrize("make", [lambda: MADE(6, H=12, seed=3, dtype=np.float64, init_scale=1.0),  # natural order
                                  lambda: orderless()], ids=["made", "orderless"])
def test_complete_draws_the_exact_conditional_of_the_rest(make):
    model = make()
    given = np.array([1.0, 0.0])
    support, probs = exact_completion_distribution(model, given)
    n = 20000
    x = np.zeros((n, 6))
    x[:, :2] = given
    out = asnumpy(model.complete(x, 2, seed=1))
    assert np.all(out[:, :2] == given)
    codes = out @ (2 ** np.arange(6))
    freq = np.array([(codes == c).mean() for c in support @ (2 ** np.arange(6))])
    assert np.abs(freq - probs).max() < 4 * np.sqrt(probs.max() / n) + 1e-3, (freq, probs)


def test_made_refuses_to_complete_from_dimensions_its_ordering_does_not_put_first():
    model = MADE(6, H=12, masks=4, shuffle_order=True, seed=3, dtype=np.float64)
    k = next(k for k in range(4) if model.ordering(k)[0] != 0)
    with pytest.raises(ValueError, match="does not order dimensions 0..2 first"):
        model.complete(np.zeros((2, 6)), 3, member=k)
