"""Order-agnostic NADE: reference == fast (any mask, depth, activation, device), gradients, the
D/(D-d) rescaling, exact log-likelihood per ordering (running sum == D masked passes),
normalisation, the autoregressive property, Uria et al.'s expectation identity, the training
masks' distribution and reproducibility, sampling and inpainting, errors."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.data.synthetic import all_binary_vectors
from scratchnade.gradcheck import assert_grads_close, rel_error
from scratchnade.models import orderless_nade as O
from scratchnade.models.orderless_nade import OrderlessNADE
from scratchnade.runs import rng_states, set_rng_states
from tiers import assert_reference_matches_finite_differences, assert_tiers_agree


def random_params(rng, D, H, layers, scale=1.0):
    """float64 parameters of an L-layer model, every entry ~ N(0, scale^2)."""
    shapes = {"W": (H, D), "U": (H, D), "c": (H,), "V": (D, H), "b": (D,)}
    if layers > 1:
        shapes.update(W_l=(layers - 1, H, H), c_l=(layers - 1, H))
    return {k: rng.normal(0.0, scale, size=s) for k, s in shapes.items()}


def model_with(params, activation="relu", device=None, seed=0):
    H, D = params["W"].shape
    layers = 1 + (params["W_l"].shape[0] if "W_l" in params else 0)
    m = OrderlessNADE(D, H, layers=layers, activation=activation, dtype=np.float64, device=device, seed=seed)
    m.load_state_dict(params)
    return m


def prefix_mask(order, d, B=1):
    """(B, D) mask observing the first d dimensions of `order`."""
    m = np.zeros((B, len(order)))
    m[:, list(order[:d])] = 1.0
    return m


def codes(x):
    """Row of binary x -> integer, x_1 the most significant bit (the row of all_binary_vectors)."""
    x = np.asarray(x).astype(int)
    return x @ (2 ** np.arange(x.shape[1])[::-1])


@st.composite
def mask_rows(draw, D):
    """One mask row: nothing observed, all but one observed, or any other non-full subset."""
    kind = draw(st.sampled_from(["none", "all but one", "any"]), label="mask kind")
    if kind == "none":
        return np.zeros(D)
    if kind == "all but one":
        row = np.ones(D)
        row[draw(st.integers(0, D - 1), label="missing dim")] = 0.0
        return row
    row = draw(arrays(np.float64, D, elements=st.sampled_from([0.0, 1.0])), label="mask row")
    if row.all():
        row[draw(st.integers(0, D - 1), label="unobserve")] = 0.0
    return row


@st.composite
def problems(draw, max_D=7, max_H=5, max_B=4):
    """(params, x, m, activation): float64 parameters in [-2, 2] of 1..3 layers, a binary batch, masks."""
    D = draw(st.integers(1, max_D), label="D")
    H = draw(st.integers(1, max_H), label="H")
    B = draw(st.integers(1, max_B), label="B")
    layers = draw(st.integers(1, 3), label="layers")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    shapes = {"W": (H, D), "U": (H, D), "c": (H,), "V": (D, H), "b": (D,)}
    if layers > 1:
        shapes.update(W_l=(layers - 1, H, H), c_l=(layers - 1, H))
    params = {k: draw(arrays(np.float64, s, elements=value), label=k) for k, s in shapes.items()}
    x = draw(arrays(np.float64, (B, D), elements=st.sampled_from([0.0, 1.0])), label="x")
    m = np.stack([draw(mask_rows(D)) for _ in range(B)])
    return params, x, m, draw(st.sampled_from(O.ACTIVATIONS), label="activation")


# ----------------------------------------------------------------------------- reference == fast

@settings(max_examples=100, deadline=None)
@given(problems())
def test_reference_and_fast_agree(problem):
    params, x, m, activation = problem
    assert_tiers_agree(O, params, x, m, activation=activation, dlosses=(1.0, -0.5))


@pytest.mark.parametrize("layers,activation", [(1, "relu"), (2, "sigmoid"), (3, "relu")])
def test_reference_and_fast_agree_on_the_fake_device(fake_device, layers, activation):
    rng = np.random.default_rng(layers)
    D, H, B = 6, 4, 5
    params = random_params(rng, D, H, layers)
    x = (rng.random((B, D)) < 0.5).astype(np.float64)
    m = np.stack([np.zeros(D), 1.0 - np.eye(D)[2], *(rng.random((B - 2, D)) < 0.5)]).astype(np.float64)
    m[2:, 0] = 0.0                                                     # every row leaves a dim to predict
    dev = {k: to_device(v, fake_device) for k, v in params.items()}
    xd, md = to_device(x, fake_device), to_device(m, fake_device)
    assert_tiers_agree(O, dev, xd, md, activation=activation)
    loss, cache = O.reference_forward(dev, xd, md, activation)
    grads = O.reference_backward(1.0, cache)
    assert all(device_of(g) == fake_device for g in grads.values())
    host_loss, host_cache = O.reference_forward(params, x, m, activation)       # and the host agrees
    assert_grads_close(loss, host_loss, rtol=1e-12, what="loss")
    assert_grads_close(grads, O.reference_backward(1.0, host_cache), rtol=1e-12)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("layers,activation", [(1, "relu"), (1, "sigmoid"), (2, "relu"), (3, "sigmoid")])
def test_reference_matches_finite_differences(layers, activation):
    rng = np.random.default_rng(10 + layers)
    D, H, B = 5, 4, 4
    params = random_params(rng, D, H, layers)
    x = (rng.random((B, D)) < 0.5).astype(np.float64)
    m = np.array([[0, 0, 0, 0, 0], [1, 1, 0, 1, 1], [1, 0, 1, 0, 0], [0, 1, 1, 0, 1]], dtype=np.float64)
    assert_reference_matches_finite_differences(O, params, x, m, activation=activation)


# ----------------------------------------------------------------------------- the loss itself

def test_loss_is_the_rescaled_masked_nll_by_hand():
    """Three examples with d = 0, 1 and 3 of D = 4: the loss weighs them by 4/4, 4/3 and 4/1."""
    rng = np.random.default_rng(3)
    D, H = 4, 3
    params = random_params(rng, D, H, 2)
    x = np.array([[1.0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0]])
    m = np.array([[0.0, 0, 0, 0], [0, 0, 1, 0], [1, 1, 0, 1]])
    nll = []
    for xb, mb in zip(x, m):                                           # one example at a time, by hand
        h1 = np.maximum(params["c"] + params["W"] @ (xb * mb) + params["U"] @ mb, 0)
        h2 = np.maximum(params["c_l"][0] + params["W_l"][0] @ h1, 0)
        l = params["b"] + params["V"] @ h2
        p = 1 / (1 + np.exp(-l))
        nll.append(-np.log(np.where(xb == 1, p, 1 - p)))               # (D,) -log p(x_j | x_observed)
    want = (4 / 4 * nll[0].sum() + 4 / 3 * (nll[1][[0, 1, 3]]).sum() + 4 / 1 * nll[2][2]) / 3
    for fwd in (O.reference_forward, O.forward):
        assert abs(float(fwd(params, x, m)[0]) - want) < 1e-12


def test_expected_training_loss_is_the_mean_nll_over_orderings():
    """Uria et al.: E_o E_d [D/(D-d) sum_{j unobserved} nll_j] = E_o[-log p_o(x)], exactly (D = 3)."""
    rng = np.random.default_rng(4)
    D = 3
    for layers, activation in [(1, "relu"), (2, "sigmoid")]:
        params = random_params(rng, D, 4, layers)
        x = all_binary_vectors(D).astype(np.float64)                   # every x at once
        orders = list(itertools.permutations(range(D)))
        lhs = np.mean([float(O.forward(params, x, prefix_mask(o, d, len(x)), activation)[0])
                       for o in orders for d in range(D)])             # E_o E_d (and mean over x)
        rhs = np.mean([-O.log_prob_in_order(params, x, np.array(o), activation).mean() for o in orders])
        assert abs(lhs - rhs) < 1e-12, (lhs, rhs)


def test_training_loss_estimates_the_mean_nll_over_orderings():
    """loss_and_grads (masks drawn inside) averages to E_o[-log p_o(x)] over many examples."""
    D = 3
    model = OrderlessNADE(D, 4, layers=2, dtype=np.float64, init_scale=1.0, seed=5)
    x = np.array([[1.0, 0.0, 1.0]])
    orders = list(itertools.permutations(range(D)))
    per_draw = np.array([float(O.forward(model.params, x, prefix_mask(o, d), "relu")[0])
                         for o in orders for d in range(D)])           # the 18 equally likely values
    mean = np.mean([-float(model.log_prob(x)[0]) if o == tuple(range(D)) else
                    -float(O.log_prob_in_order(model.params, x, np.array(o))[0]) for o in orders])
    assert abs(per_draw.mean() - mean) < 1e-12
    n = 20_000
    loss, _ = model.loss_and_grads(np.repeat(x, n, axis=0))
    assert abs(loss - mean) < 4 * per_draw.std() / np.sqrt(n), (loss, mean)


def test_training_masks_are_prefixes_of_uniform_orderings():
    """d uniform in {0..D-1} (never D); given d, every subset of size d equally likely."""
    D, n = 3, 60_000
    m = O.draw_masks(np.random.default_rng(0), n, D)
    d = m.sum(axis=1).astype(int)
    np.testing.assert_allclose(np.bincount(d, minlength=D + 1) / n, [1 / 3, 1 / 3, 1 / 3, 0], atol=0.01)
    for size in (1, 2):
        subsets = np.bincount(codes(m[d == size]), minlength=8)
        counts = subsets[subsets > 0]
        assert len(counts) == 3 and np.abs(counts / counts.sum() - 1 / 3).max() < 0.015, subsets


# ----------------------------------------------------------------------------- exact likelihood

@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("block", [None, 1, 3])
def test_running_sum_log_prob_equals_the_masked_passes(layers, block, monkeypatch):
    """The fast log p_o (running sum, blocks of positions) equals D masked reference passes."""
    D, H, B = 7, 5, 4
    if block is not None:                                              # force K = block positions per block
        monkeypatch.setattr(O, "BLOCK_ELEMENTS", block * B * H)
    rng = np.random.default_rng(layers)
    params = random_params(rng, D, H, layers)
    x = (rng.random((B, D)) < 0.5).astype(np.float64)
    for order in [np.arange(D), np.arange(D)[::-1].copy(), rng.permutation(D)]:
        for activation in O.ACTIVATIONS:
            fast = O.log_prob_in_order(params, x, order, activation)
            ref = O.reference_log_prob_in_order(params, x, order, activation)
            np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers,activation", [(1, "relu"), (1, "sigmoid"), (2, "relu"), (2, "sigmoid")])
def test_probabilities_sum_to_one_for_every_ordering(layers, activation):
    D = 6
    model = OrderlessNADE(D, 5, layers=layers, activation=activation, dtype=np.float64, init_scale=1.0, seed=2)
    model.params["b"][...] = np.random.default_rng(1).normal(size=D)
    states = all_binary_vectors(D)
    for member in range(4):
        assert abs(np.exp(model.log_prob(states, member=member)).sum() - 1.0) < 1e-10, member


def test_orderings_give_different_distributions():
    model = OrderlessNADE(4, 5, dtype=np.float64, init_scale=1.0, seed=1)
    states = all_binary_vectors(4)
    assert np.abs(model.log_prob(states, member=0) - model.log_prob(states, member=1)).max() > 1e-3


def test_autoregressive_property_under_each_ordering():
    """p(x_{o_d} | .) does not change when x_{o_>=d} changes, and does change with x_{o_{d-1}}."""
    D = 6
    model = OrderlessNADE(D, 4, layers=2, activation="sigmoid", dtype=np.float64, init_scale=1.0, seed=3)
    x = (np.random.default_rng(0).random((1, D)) < 0.5).astype(float)   # sigmoid units: no dead paths
    for member in (0, 1, 2):
        o = model.ordering(member)
        base = model.conditionals(x, member=member)[0]
        for d in range(D):
            changed = x.copy()
            changed[0, o[d:]] = 1 - changed[0, o[d:]]                  # flip x_{o_>=d}
            new = model.conditionals(changed, member=member)[0]
            np.testing.assert_array_equal(new[o[:d + 1]], base[o[:d + 1]])
            if d + 1 < D:
                assert new[o[d + 1]] != base[o[d + 1]]                 # x_{o_d} matters for o_{d+1}


def test_conditionals_are_the_masked_network_outputs():
    """conditionals(x, member)[:, o_d] = sigmoid of pass d's logit of o_d (mask = o_<d)."""
    D = 5
    model = OrderlessNADE(D, 4, layers=2, activation="sigmoid", dtype=np.float64, init_scale=1.0, seed=4)
    x = (np.random.default_rng(1).random((3, D)) < 0.5).astype(float)
    o = model.ordering(2)
    got = model.conditionals(x, member=2)
    for d in range(D):
        logit = O.reference_forward(model.params, x, prefix_mask(o, d, 3), "sigmoid")[1].logit[:, o[d]]
        np.testing.assert_allclose(got[:, o[d]], 1 / (1 + np.exp(-logit)), rtol=1e-12)


# ----------------------------------------------------------------------------- orderings and draws

def test_orderings_are_reproducible():
    D = 9
    a, b = OrderlessNADE(D, 3, seed=7), OrderlessNADE(D, 5, layers=2, seed=7)
    for k in (0, 1, 2, 50, 10 ** 6):
        o = a.ordering(k)
        np.testing.assert_array_equal(o, np.random.default_rng([7, 2, k]).permutation(D))
        np.testing.assert_array_equal(o, b.ordering(k))                # same seed: same ordering
    assert not np.array_equal(a.ordering(1), a.ordering(2))
    assert not np.array_equal(a.ordering(1), OrderlessNADE(D, 3, seed=8).ordering(1))
    assert a.n_members is None


def test_training_draws_are_reproducible_from_the_saved_rng_state(rng):
    x = (rng.random((6, 5)) < 0.5).astype(np.float64)
    one = OrderlessNADE(5, 4, layers=2, dtype=np.float64, seed=3)
    other = OrderlessNADE(5, 4, layers=2, dtype=np.float64, seed=3)
    one.loss_and_grads(x)                                              # one step in: the draws moved on
    states = rng_states(one)
    assert "_rng" in states                                            # checkpoints save it
    want, want_grads = one.loss_and_grads(x)
    assert other.loss_and_grads(x)[0] != want                          # a fresh model draws other masks
    set_rng_states(other, states)                                      # resume
    got, got_grads = other.loss_and_grads(x)
    assert got == want
    assert_grads_close(got_grads, want_grads, rtol=0.0)


# ----------------------------------------------------------------------------- sampling and inpainting

def test_sampling_frequencies_match_probabilities():
    D, n = 3, 60_000
    model = OrderlessNADE(D, 4, layers=2, dtype=np.float64, init_scale=1.5, seed=3)
    for member in (0, 1):
        p = np.exp(model.log_prob(all_binary_vectors(D), member=member))
        freq = np.bincount(codes(model.sample(n, seed=member, member=member)), minlength=2 ** D) / n
        assert n * ((freq - p) ** 2 / p).sum() < 30, (member, freq, p)   # 7 dof: 30 is p < 1e-4


def test_temperature_sharpens_conditionals():
    model = OrderlessNADE(1, 2, dtype=np.float64)
    model.params["b"][...] = 1.0
    p1 = float(model.conditionals(np.zeros((1, 1)))[0, 0])
    logit = np.log(p1 / (1 - p1))
    cold = asnumpy(model.sample(40_000, seed=1, temperature=0.5)).mean()
    assert abs(cold - 1 / (1 + np.exp(-logit / 0.5))) < 0.01


def test_inpaint_keeps_the_given_pixels(rng):
    D, B = 8, 30
    model = OrderlessNADE(D, 6, layers=2, init_scale=1.0, seed=1)
    x = (rng.random((B, D)) < 0.5).astype(np.float32)
    given = rng.random((B, D)) < 0.4
    out = model.inpaint(x, given, seed=0, member=3)
    assert out.shape == (B, D) and set(np.unique(out)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out[given], x[given])
    assert not (out[~given] == x[~given]).all()


def test_inpaint_follows_the_exact_conditional():
    """Two given patterns in one batch; each row's missing pixels follow p_o'(x_missing | x_given),
    o' = the given dims, then the missing ones in ordering(member)'s order."""
    D, n, member = 4, 20_000, 1
    model = OrderlessNADE(D, 5, layers=2, dtype=np.float64, init_scale=1.5, seed=6)
    o = model.ordering(member)
    assert list(o[:2]) != [0, 3] and o[0] != 2                         # the given dims are NOT first in o
    patterns = [(np.array([1.0, 0, 0, 1]), np.array([True, False, False, True])),
                (np.array([0.0, 0, 1, 0]), np.array([False, False, True, False]))]
    x = np.concatenate([np.repeat(v[None], n, axis=0) for v, _ in patterns])
    g = np.concatenate([np.repeat(gv[None], n, axis=0) for _, gv in patterns])
    out = asnumpy(model.inpaint(x, g, seed=2, member=member))
    states = all_binary_vectors(D)
    for i, (value, gv) in enumerate(patterns):
        rows = out[i * n:(i + 1) * n]
        np.testing.assert_array_equal(rows[:, gv], np.repeat(value[gv][None], n, axis=0))
        o_prime = np.concatenate([np.flatnonzero(gv), [j for j in o if not gv[j]]])
        joint = np.exp(O.log_prob_in_order(model.params, states, o_prime))
        keep = (states[:, gv] == value[gv]).all(axis=1)
        want = joint[keep] / joint[keep].sum()                         # p_o'(x_missing | x_given)
        got = np.bincount(codes(rows[:, ~gv]), minlength=keep.sum()) / n
        assert np.abs(got - want).max() < 0.01, (i, got, want)


# ----------------------------------------------------------------------------- the class

def test_initialisation_and_config():
    D, H = 60, 300
    relu = OrderlessNADE(D, H, layers=2, seed=1, dtype=np.float64)
    assert relu.config == {"D": D, "H": H, "layers": 2, "activation": "relu", "seed": 1, "dtype": "float64",
                           "init_scale": None}
    rebuilt = OrderlessNADE(**relu.config)                              # the config rebuilds the model
    assert all(np.array_equal(rebuilt.params[k], v) for k, v in relu.params.items())
    assert abs(relu.params["W"].std() / np.sqrt(2 / (2 * D)) - 1) < 0.03
    assert abs(relu.params["U"].std() / np.sqrt(2 / (2 * D)) - 1) < 0.03
    assert abs(relu.params["W_l"].std() / np.sqrt(2 / H) - 1) < 0.03
    assert abs(relu.params["V"].std() / np.sqrt(2 / H) - 1) < 0.03
    sig = OrderlessNADE(D, H, activation="sigmoid", seed=1, dtype=np.float64)
    assert abs(sig.params["W"].std() / np.sqrt(1 / (2 * D)) - 1) < 0.03
    assert "W_l" not in sig.params and "c_l" not in sig.params
    fixed = OrderlessNADE(D, H, init_scale=0.01, seed=1, dtype=np.float64)
    assert abs(fixed.params["V"].std() / 0.01 - 1) < 0.03
    for k in ("c", "b"):
        assert not relu.params[k].any()
    assert not relu.params["c_l"].any()
    assert relu.dtype == np.float64 and OrderlessNADE(3, 2).dtype == np.float32
    data = np.array([[1, 0, 1], [1, 0, 0]], dtype=np.uint8)
    b = OrderlessNADE(3, 2, dtype=np.float64).init_bias(data).params["b"]
    np.testing.assert_allclose(b, np.log(np.array([0.999, 0.001, 0.5]) / (1 - np.array([0.999, 0.001, 0.5]))))


def test_float32_loss_matches_float64(rng):
    x = (rng.random((5, 20)) < 0.3).astype(np.uint8)
    m64 = OrderlessNADE(20, 8, layers=2, dtype=np.float64, init_scale=0.5)
    m32 = OrderlessNADE(20, 8, layers=2, dtype=np.float32, init_scale=0.5)
    l64, g64 = m64.loss_and_grads(x)
    l32, g32 = m32.loss_and_grads(x)                                   # the same masks: same seed
    assert abs(l64 - l32) < 1e-4 * abs(l64)
    assert all(g32[k].dtype == np.float32 for k in g32)
    assert max(rel_error(g32[k], g64[k]) for k in g64) < 1e-4
    assert m32.log_prob(x).dtype == np.float32


def test_runs_on_the_strict_fake_device(fake_device, rng):
    params = random_params(rng, 6, 4, 2)
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    given = rng.random((3, 6)) < 0.5
    host = model_with(params, seed=2)
    dev = model_with(params, device=fake_device, seed=2)
    xd = to_device(x, fake_device)
    loss, grads = dev.loss_and_grads(xd)
    ref_loss, ref_grads = host.loss_and_grads(x)                       # host-drawn masks: the same
    assert abs(loss - ref_loss) < 1e-12
    for k in grads:
        assert device_of(grads[k]) == fake_device
        np.testing.assert_allclose(asnumpy(grads[k]), ref_grads[k], atol=1e-12)
    for member in (0, 2):
        np.testing.assert_allclose(asnumpy(dev.log_prob(xd, member=member)), host.log_prob(x, member=member),
                                   atol=1e-12)
        np.testing.assert_allclose(asnumpy(dev.conditionals(xd, member)), host.conditionals(x, member),
                                   atol=1e-12)
        np.testing.assert_array_equal(asnumpy(dev.sample(5, seed=4, member=member)),
                                      host.sample(5, seed=4, member=member))
        gd = to_device(given, fake_device)
        np.testing.assert_array_equal(asnumpy(dev.inpaint(xd, gd, seed=4, member=member)),
                                      host.inpaint(x, given, seed=4, member=member))
    dev.init_bias(xd)


def test_bad_input_and_options_give_clear_errors():
    with pytest.raises(ValueError, match="activation"):
        OrderlessNADE(4, 3, activation="tanh")
    with pytest.raises(ValueError, match="layers"):
        OrderlessNADE(4, 3, layers=0)
    with pytest.raises(ValueError, match="H must"):
        OrderlessNADE(4, 0)
    with pytest.raises(ValueError, match="D must"):
        OrderlessNADE(2.5)
    with pytest.raises(ValueError, match="init_scale"):
        OrderlessNADE(4, 3, init_scale=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        OrderlessNADE(4, 3, dtype=np.int32)
    model = OrderlessNADE(6, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        model.loss_and_grads(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(np.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="member"):
        model.log_prob(np.zeros((2, 6)), member=-1)
    with pytest.raises(ValueError, match="member"):
        model.ordering(1.5)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(3, temperature=0.0)
    with pytest.raises(ValueError, match="number of samples"):
        model.sample(-1)
    with pytest.raises(ValueError, match="same shape"):
        model.inpaint(np.zeros((2, 6)), np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="given"):
        model.inpaint(np.zeros((2, 6)), np.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="binary"):
        model.inpaint(np.full((2, 6), 0.5), np.ones((2, 6), dtype=bool))
    params = random_params(np.random.default_rng(0), 4, 3, 1)
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="mask m must have the data's shape"):
        O.forward(params, x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mask m must be binary"):
        O.reference_forward(params, x, np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="observes every dimension"):
        O.forward(params, x, np.array([[1.0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="activation"):
        O.forward(params, x, np.zeros((2, 4)), activation="tanh")
    with pytest.raises(ValueError, match="permutation"):
        O.log_prob_in_order(params, x, np.array([0, 1, 1, 3]))
    with pytest.raises(ValueError, match="permutation"):
        O.log_prob_in_order(params, x, np.arange(5))
