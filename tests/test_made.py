"""MADE: reference == fast, gradients, masks, autoregressive property, normalisation, sampling,
mask sets, connectivity-agnostic training, devices, errors."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device, tree_to_device
from scratchnade.data.synthetic import all_binary_vectors
from scratchnade.gradcheck import rel_error
from scratchnade.models import made as M
from scratchnade.models.base import buffers_reused
from scratchnade.models.made import MADE
from scratchnade.runs import rng_states, set_rng_states
from tiers import assert_reference_matches_finite_differences, assert_tiers_agree

ACTIVATIONS = ["relu", "sigmoid"]


def random_params(D, H, layers, direct, rng, scale=1.0):
    """float64 MADE parameters with every entry ~ N(0, scale^2) (biases too)."""
    params = {}
    for l in range(1, layers + 1):
        params[f"W{l}"] = scale * rng.normal(size=(H, D if l == 1 else H))
        params[f"c{l}"] = scale * rng.normal(size=H)
    params["V"], params["b"] = scale * rng.normal(size=(D, H)), scale * rng.normal(size=D)
    if direct:
        params["A"] = scale * rng.normal(size=(D, D))
    return params


def model_with(D, H, layers=1, activation="relu", direct=False, masks=1, shuffle_order=False, seed=0,
               device=None, param_seed=0, scale=1.0):
    """A float64 MADE whose parameters (biases too) are N(0, scale^2), so nothing starts at a kink."""
    m = MADE(D, H, layers=layers, activation=activation, direct=direct, masks=masks,
             shuffle_order=shuffle_order, seed=seed, dtype=np.float64, device=device)
    m.load_state_dict(random_params(D, H, layers, direct, np.random.default_rng(param_seed), scale))
    return m


def path_counts(masks, layers):
    """(D, D): entry [d, d'] = number of paths from input d' to output d in the binary masks."""
    P = masks["M1"]
    for l in range(2, layers + 1):
        P = masks[f"M{l}"] @ P
    P = masks["MV"] @ P
    return P + masks["MA"] if "MA" in masks else P


def chi_square(samples, p):
    """n sum_s (freq_s - p_s)^2 / p_s over the 2^D states, samples (n, D) of 0/1."""
    D = samples.shape[1]
    codes = asnumpy(samples).astype(int) @ (2 ** np.arange(D)[::-1])        # all_binary_vectors' order
    freq = np.bincount(codes, minlength=2 ** D) / len(samples)
    return len(samples) * ((freq - p) ** 2 / p).sum()


@st.composite
def problems(draw, max_D=7, max_H=6, max_B=4):
    """(params, x, masks, activation, device): a float64 MADE problem on the host or the fake device."""
    D = draw(st.integers(1, max_D), label="D")
    H = draw(st.integers(1, max_H), label="H")
    L = draw(st.integers(1, 3), label="layers")
    B = draw(st.integers(1, max_B), label="B")
    direct = draw(st.booleans(), label="direct")
    shuffle = draw(st.booleans(), label="shuffle_order")
    k = draw(st.integers(0, 3), label="mask set")
    activation = draw(st.sampled_from(ACTIVATIONS), label="activation")
    device = draw(st.sampled_from(["cpu", "fake"]), label="device")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    shapes = {"V": (D, H), "b": (D,)}
    for l in range(1, L + 1):
        shapes[f"W{l}"], shapes[f"c{l}"] = (H, D if l == 1 else H), (H,)
    if direct:
        shapes["A"] = (D, D)
    params = {n: draw(arrays(np.float64, s, elements=value), label=n) for n, s in shapes.items()}
    x = draw(arrays(np.float64, (B, D), elements=st.sampled_from([0.0, 1.0])), label="x")
    masks = M.mask_set(D, H, L, k, seed=5, shuffle_order=shuffle, direct=direct).masks
    return tree_to_device(params, device), to_device(x, device), tree_to_device(masks, device), activation, device


# ----------------------------------------------------------------------------- reference == fast

@settings(max_examples=40, deadline=None)
@given(problems())
def test_reference_and_fast_agree(problem):
    params, x, masks, activation, device = problem
    assert_tiers_agree(M, params, x, masks, activation, dlosses=(1.0, 0.5))
    _, cache = M.reference_forward(params, x, masks, activation)
    assert all(device_of(g) == device for g in M.reference_backward(1.0, cache).values())


@settings(max_examples=15, deadline=None)
@given(problems())
def test_fast_pair_with_buffers_matches_and_writes_into_them(problem):
    params, x, masks, activation, device = problem
    loss, cache = M.forward(params, x, masks, activation)
    grads = M.backward(1.0, cache)
    weights = [k for k in params if k[0] in "WVA"]
    masked = {k: to_device(np.full(params[k].shape, np.nan), device) for k in weights}   # stale contents
    out = {k: to_device(np.full(params[k].shape, np.nan), device) for k in weights}
    loss2, cache2 = M.forward(params, x, masks, activation, out=masked)
    grads2 = M.backward(1.0, cache2, out=out)
    assert float(loss2) == float(loss)
    for k in weights:                                                   # the buffers were written
        np.testing.assert_array_equal(asnumpy(masked[k]), asnumpy(cache.masked[k]), err_msg=k)
        np.testing.assert_array_equal(asnumpy(out[k]), asnumpy(grads[k]), err_msg=k)
    for k in grads:
        np.testing.assert_array_equal(asnumpy(grads2[k]), asnumpy(grads[k]), err_msg=k)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("direct", [False, True])
def test_reference_matches_finite_differences(activation, direct):
    rng = np.random.default_rng(3)
    D, H, L = 5, 4, 2
    params = random_params(D, H, L, direct, rng)
    x = (rng.random((3, D)) < 0.5).astype(np.float64)
    masks = M.mask_set(D, H, L, k=1, seed=2, shuffle_order=True, direct=direct).masks
    assert_reference_matches_finite_differences(M, params, x, masks, activation)


def test_reference_loss_is_minus_log_prob_of_each_row():
    """The class's log_prob (fast path) and the reference loss of a single row are one number."""
    m = model_with(5, 4, layers=2, direct=True, masks=2, shuffle_order=True, param_seed=4)
    x = all_binary_vectors(5)[::3]
    logp = m.log_prob(x, member=1)
    masks = m.mask_set(1).masks
    for b in range(len(x)):
        loss, _ = M.reference_forward(m.params, x[b:b + 1], masks)
        assert abs(float(loss) + logp[b]) < 1e-12


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("direct", [False, True])
def test_masked_gradient_entries_are_exactly_zero_and_masked_weights_do_nothing(activation, direct):
    rng = np.random.default_rng(8)
    D, H, L = 6, 5, 3
    params = random_params(D, H, L, direct, rng)
    x = (rng.random((4, D)) < 0.5).astype(np.float64)
    masks = M.mask_set(D, H, L, k=2, seed=1, shuffle_order=True, direct=direct).masks
    mask_of = {f"W{l}": f"M{l}" for l in range(1, L + 1)} | {"V": "MV", "A": "MA"}
    loss = M.forward(params, x, masks, activation)[0]
    for tier in ("reference", "fast"):
        fwd, bwd = (M.reference_forward, M.reference_backward) if tier == "reference" else (M.forward, M.backward)
        grads = bwd(1.0, fwd(params, x, masks, activation)[1])
        for w, mk in mask_of.items():
            if w in params:
                off = masks[mk] == 0
                assert off.any() and (grads[w][off] == 0).all(), (tier, w)   # exactly 0, not ~1e-17
                if activation == "sigmoid":                             # no dead units: live entries move
                    assert (grads[w][~off] != 0).any(), (tier, w)
    changed = {k: v.copy() for k, v in params.items()}
    for w, mk in mask_of.items():
        if w in params:
            changed[w][masks[mk] == 0] = 1e3 * rng.normal(size=int((masks[mk] == 0).sum()))
    assert float(M.forward(changed, x, masks, activation)[0]) == float(loss)
    assert float(M.reference_forward(changed, x, masks, activation)[0]) == float(loss)


@settings(max_examples=60, deadline=None)
@given(D=st.integers(1, 10), H=st.integers(1, 8), L=st.integers(1, 4), k=st.integers(0, 5),
       shuffle=st.booleans(), direct=st.booleans())
def test_masks_satisfy_the_autoregressive_rule(D, H, L, k, shuffle, direct):
    order, masks, m = M.mask_set(D, H, L, k, seed=0, shuffle_order=shuffle, direct=direct)
    m0 = m[0]
    np.testing.assert_array_equal(m0[order], np.arange(1, D + 1))       # m_0 = position in the ordering
    assert sorted(masks) == sorted([f"M{l}" for l in range(1, L + 1)] + ["MV"] + (["MA"] if direct else []))
    for l in range(1, L + 1):                                          # m_l in [min m_{l-1}, D-1]
        lo = min(m[l - 1].min(), D - 1)
        assert m[l].shape == (H,) and m[l].min() >= lo and m[l].max() <= D - 1
        np.testing.assert_array_equal(masks[f"M{l}"], m[l][:, None] >= m[l - 1][None, :])
    np.testing.assert_array_equal(masks["MV"], m0[:, None] > m[L][None, :])
    earlier = m0[None, :] < m0[:, None]                                 # [d, d'] = d' before d
    P = path_counts(masks, L)
    assert (P[~earlier] == 0).all()                                     # no path from a later input
    if direct:
        np.testing.assert_array_equal(masks["MA"], earlier)


def test_a_large_layer_connects_every_output_to_all_earlier_inputs():
    """With H >> D every connectivity value occurs, so every allowed path exists: the masks
    are not merely safe (e.g. all zero) but as connected as the ordering allows."""
    D = 6
    for shuffle in (False, True):
        order, masks, m = M.mask_set(D, 200, 2, k=1, seed=3, shuffle_order=shuffle)
        earlier = m[0][None, :] < m[0][:, None]
        np.testing.assert_array_equal(path_counts(masks, 2) > 0, earlier)


def test_one_dimension_has_no_inputs_and_a_normalised_output():
    m = model_with(1, 3, layers=2, direct=True, masks=2, shuffle_order=True)
    order, masks, conn = m.mask_set(1)
    assert order.tolist() == [0] and all((c == 0).all() for c in conn[1:])
    assert (masks["M1"] == 0).all() and (masks["MA"] == 0).all()       # the hidden units see no input
    x = all_binary_vectors(1)
    assert abs(np.exp(m.log_prob(x, member=1)).sum() - 1.0) < 1e-12
    grads = m.loss_and_grads(x)[1]
    assert (grads["W1"] == 0).all() and (grads["A"] == 0).all()


# ----------------------------------------------------------------------------- the model's probabilities

@pytest.mark.parametrize("activation,direct,layers", [("relu", False, 1), ("sigmoid", True, 2),
                                                      ("relu", True, 3), ("sigmoid", False, 1)])
def test_autoregressive_property_by_flipping_each_input(activation, direct, layers):
    """Flip input i and watch the conditionals: only outputs later in the ordering may move,
    and (sigmoid units, none dead) every output with a path from i in the masks does move."""
    D = 7
    m = model_with(D, 6, layers=layers, activation=activation, direct=direct, masks=3,
                   shuffle_order=True, param_seed=layers)
    x = (np.random.default_rng(0).random((1, D)) < 0.5).astype(np.float64)
    moved_any = False
    for member in range(3):
        _, masks, conn = m.mask_set(member)
        m0, P = conn[0], path_counts(masks, layers)
        base = m.conditionals(x, member)[0]
        for i in range(D):
            flipped = x.copy()
            flipped[0, i] = 1 - flipped[0, i]
            moved = m.conditionals(flipped, member)[0] != base          # exact comparison
            assert not moved[m0 <= m0[i]].any(), (member, i)            # x_i affects only later outputs
            if activation == "sigmoid":
                np.testing.assert_array_equal(moved, P[:, i] > 0)       # ... each one it has a path to
            moved_any |= moved.any()
    assert moved_any


@pytest.mark.parametrize("D,layers,activation,direct,shuffle", [
    (1, 1, "relu", False, False), (3, 2, "sigmoid", True, True), (5, 1, "relu", True, True),
    (5, 3, "relu", False, True), (4, 2, "sigmoid", False, False)])
def test_probabilities_sum_to_one(D, layers, activation, direct, shuffle):
    m = model_with(D, 5, layers=layers, activation=activation, direct=direct, masks=3,
                   shuffle_order=shuffle, param_seed=D, scale=1.5)
    x = all_binary_vectors(D)
    for member in range(3):
        assert abs(np.exp(m.log_prob(x, member)).sum() - 1.0) < 1e-10, member


def test_members_are_different_models():
    m = model_with(4, 5, layers=2, masks=3, shuffle_order=True, param_seed=1)
    x = all_binary_vectors(4)
    logps = [m.log_prob(x, k) for k in range(3)]
    assert not np.allclose(logps[0], logps[1]) and not np.allclose(logps[1], logps[2])


def test_conditionals_are_in_data_order():
    """conditionals(x)[:, d] is p(x_d = 1 | earlier ones): the first dimension in the ordering
    has a conditional that is the same for every x, and it is that dimension's marginal."""
    D = 4
    m = model_with(D, 6, layers=2, direct=True, masks=2, shuffle_order=True, param_seed=9)
    x = all_binary_vectors(D)
    for member in range(2):
        first = m.ordering(member)[0]
        c = m.conditionals(x, member)
        assert np.ptp(c[:, first]) == 0
        p = np.exp(m.log_prob(x, member))
        assert abs(p[x[:, first] == 1].sum() - c[0, first]) < 1e-12


# ----------------------------------------------------------------------------- sampling

def _shuffled_member(m):
    """A mask set of m whose ordering is not the natural one (sampling in 0..D-1 would be wrong)."""
    return next(k for k in range(m.n_members) if m.ordering(k).tolist() != sorted(m.ordering(k).tolist()))


def test_sampling_frequencies_match_probabilities():
    D, n = 3, 60_000
    m = model_with(D, 6, layers=2, direct=True, masks=4, shuffle_order=True, param_seed=2, scale=1.5)
    member = _shuffled_member(m)
    p = np.exp(m.log_prob(all_binary_vectors(D), member))
    assert chi_square(m.sample(n, seed=0, member=member), p) < 30        # 7 dof: 30 is p < 1e-4


def test_sampling_in_the_wrong_order_would_be_caught():
    """The chi-square bound above is tight enough to catch an ancestral sampler that walks the
    dimensions in the natural order instead of the mask set's ordering."""
    D, n = 3, 60_000
    m = model_with(D, 6, layers=2, direct=True, masks=4, shuffle_order=True, param_seed=2, scale=1.5)
    member = _shuffled_member(m)
    u = np.random.default_rng(0).random((D, n))
    x = np.zeros((n, D))
    for d in range(D):                                                  # the bug: d = 0, 1, 2
        x[:, d] = u[d] < m.conditionals(x, member)[:, d]
    p = np.exp(m.log_prob(all_binary_vectors(D), member))
    assert chi_square(x, p) > 30


def test_temperature_sharpens_conditionals():
    m = model_with(1, 2, direct=True)
    p1 = float(m.conditionals(np.zeros((1, 1)))[0, 0])
    cold = asnumpy(m.sample(40_000, seed=1, temperature=0.5)).mean()
    logit = np.log(p1 / (1 - p1))
    assert abs(cold - 1 / (1 + np.exp(-logit / 0.5))) < 0.01


def test_samples_are_reproducible_and_depend_on_seed_and_member():
    m = model_with(8, 5, layers=2, masks=2, shuffle_order=True)
    a = asnumpy(m.sample(50, seed=3, member=1))
    np.testing.assert_array_equal(a, m.sample(50, seed=3, member=1))
    assert not np.array_equal(a, m.sample(50, seed=4, member=1))
    assert not np.array_equal(a, m.sample(50, seed=3, member=0))
    assert set(np.unique(a)) <= {0.0, 1.0} and a.dtype == np.float64


# ----------------------------------------------------------------------------- mask sets

def test_mask_sets_are_reproducible_and_differ_across_k():
    kw = dict(layers=2, masks=3, shuffle_order=True, seed=4)
    a, b = MADE(6, 5, **kw), MADE(6, 5, **kw)
    for k in range(3):
        sa, sb = a.mask_set(k), b.mask_set(k)
        ref = M.mask_set(6, 5, 2, k, seed=4, shuffle_order=True)
        for s in (sb, ref):
            np.testing.assert_array_equal(sa.order, s.order)
            assert all(np.array_equal(sa.masks[n], s.masks[n]) for n in sa.masks)
            assert all(np.array_equal(u, v) for u, v in zip(sa.m, s.m))
        np.testing.assert_array_equal(a.ordering(k), M.ordering(6, k, seed=4, shuffle_order=True))
    orders = [tuple(a.ordering(k)) for k in range(3)]
    assert len(set(orders)) == 3
    other = MADE(6, 5, layers=2, masks=3, shuffle_order=True, seed=5)
    assert tuple(other.ordering(0)) != orders[0] or not np.array_equal(other.mask_set(0).m[1], a.mask_set(0).m[1])


def test_without_shuffling_every_set_uses_the_natural_order_but_its_own_connectivity():
    m = MADE(6, 8, layers=1, masks=3, seed=0)
    for k in range(3):
        np.testing.assert_array_equal(m.ordering(k), np.arange(6))
        np.testing.assert_array_equal(m.mask_set(k).m[0], np.arange(1, 7))
    assert not np.array_equal(m.mask_set(0).m[1], m.mask_set(1).m[1])


def test_masks_are_cached_on_the_device_and_are_not_parameters(fake_device):
    m = MADE(5, 4, layers=2, direct=True, masks=2, device=fake_device)
    assert m._masks(1) is m._masks(1)
    assert all(device_of(v) == fake_device and v.dtype == np.float32 for v in m._masks(1).values())
    assert sorted(m.state_dict()) == ["A", "V", "W1", "W2", "b", "c1", "c2"]
    m.to("cpu")
    assert all(device_of(v) == "cpu" for v in m._masks(1).values())


# ----------------------------------------------------------------------------- training with a pool of masks

def test_training_draws_members_and_resume_reproduces_the_draws():
    m = model_with(5, 4, layers=2, masks=4, seed=1)
    x = (np.random.default_rng(0).random((6, 5)) < 0.5).astype(np.float64)
    saved = json.loads(json.dumps(rng_states(m)))                        # as a checkpoint stores it
    assert "_mask_rng" in saved
    members = []
    for _ in range(30):
        loss, _ = m.loss_and_grads(x)
        members.append(m.member)
        assert abs(loss + m.log_prob(x, m.member).mean()) < 1e-12       # the loss of the drawn set
    assert set(members) == {0, 1, 2, 3}
    set_rng_states(m, saved)
    again = []
    for _ in range(30):
        m.loss_and_grads(x)
        again.append(m.member)
    assert again == members
    fresh = model_with(5, 4, layers=2, masks=4, seed=1)                 # a new model draws the same
    fresh.loss_and_grads(x)
    assert fresh.member == members[0]


def test_evaluation_and_a_single_mask_set_use_set_zero():
    x = (np.random.default_rng(1).random((4, 5)) < 0.5).astype(np.float64)
    m = model_with(5, 4, masks=4, seed=2)
    state = m._mask_rng.bit_generator.state
    with m.eval_mode():
        for _ in range(5):
            loss, _ = m.loss_and_grads(x)
            assert m.member == 0 and abs(loss + m.log_prob(x).mean()) < 1e-12
    assert m._mask_rng.bit_generator.state == state                      # no draw outside training
    one = model_with(5, 4, masks=1)
    one.loss_and_grads(x)
    assert one.member == 0 and one.n_members == 1


def test_reused_gradient_buffers_are_overwritten_by_the_next_call():
    m = model_with(6, 5, layers=2, direct=True)
    x = (np.random.default_rng(2).random((4, 6)) < 0.5).astype(np.float64)
    want = m.loss_and_grads(x)[1]
    with buffers_reused(m):
        g1 = m.loss_and_grads(x)[1]
        for k in want:
            np.testing.assert_array_equal(g1[k], want[k])
        g2 = m.loss_and_grads(x[:2])[1]
    assert np.shares_memory(g2["W1"], g1["W1"]) and np.shares_memory(g2["V"], g1["V"])
    assert not np.shares_memory(m.loss_and_grads(x)[1]["W1"], m.loss_and_grads(x)[1]["W1"])   # default: new


# ----------------------------------------------------------------------------- the class

def test_config_is_json_and_rebuilds_the_model():
    m = MADE(7, 6, layers=2, activation="sigmoid", direct=True, masks=3, shuffle_order=True, seed=3,
             dtype=np.float64, init_scale=0.2)
    again = MADE(**json.loads(json.dumps(m.config)))
    assert again.config == m.config
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)
    np.testing.assert_array_equal(again.ordering(2), m.ordering(2))


def test_initialisation_scales():
    D, H = 400, 300
    m = MADE(D, H, layers=2, direct=True, dtype=np.float64)
    assert abs(m.params["W1"].std() - np.sqrt(2 / D)) < 0.02 * np.sqrt(2 / D)   # He, fan-in D
    assert abs(m.params["W2"].std() - np.sqrt(2 / H)) < 0.02 * np.sqrt(2 / H)
    assert abs(m.params["V"].std() - np.sqrt(1 / H)) < 0.02 * np.sqrt(1 / H)
    assert abs(m.params["A"].std() - np.sqrt(1 / D)) < 0.02 * np.sqrt(1 / D)
    s = MADE(D, H, activation="sigmoid", dtype=np.float64)
    assert abs(s.params["W1"].std() - np.sqrt(1 / D)) < 0.02 * np.sqrt(1 / D)
    fixed = MADE(D, H, init_scale=0.01, dtype=np.float64)
    assert abs(fixed.params["W1"].std() - 0.01) < 2e-4 and (fixed.params["c1"] == 0).all()
    assert (m.params["b"] == 0).all() and m.params["W1"].dtype == np.float64
    assert MADE(5, 3).dtype == np.float32


def test_init_bias_sets_the_output_bias_to_the_data_logits():
    x = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=np.uint8)
    m = MADE(3, 4, dtype=np.float64).init_bias(x)
    mean = np.clip(x.mean(axis=0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(m.params["b"], np.log(mean / (1 - mean)))


def test_float32_loss_matches_float64():
    x = (np.random.default_rng(0).random((5, 20)) < 0.3).astype(np.uint8)
    m64 = MADE(20, 8, layers=2, direct=True, dtype=np.float64)
    m32 = MADE(20, 8, layers=2, direct=True, dtype=np.float32)
    l64, g64 = m64.loss_and_grads(x)
    l32, g32 = m32.loss_and_grads(x)
    assert abs(l64 - l32) < 1e-4 * abs(l64)
    assert all(g32[k].dtype == np.float32 for k in g32)
    assert max(rel_error(g32[k], g64[k]) for k in g64) < 1e-4


def test_runs_on_the_strict_fake_device(fake_device):
    x = (np.random.default_rng(5).random((4, 6)) < 0.5).astype(np.float64)
    kw = dict(layers=2, direct=True, masks=3, shuffle_order=True, seed=2)
    host = model_with(6, 5, **kw)
    dev = model_with(6, 5, device=fake_device, **kw)
    xd = to_device(x, fake_device)
    for _ in range(3):                                                  # same member draws, same numbers
        loss, grads = dev.loss_and_grads(xd)
        ref_loss, ref_grads = host.loss_and_grads(x)
        assert dev.member == host.member and abs(loss - ref_loss) < 1e-12
        for k in grads:
            assert device_of(grads[k]) == fake_device
            np.testing.assert_allclose(asnumpy(grads[k]), ref_grads[k], atol=1e-12)
    for member in range(3):
        np.testing.assert_allclose(asnumpy(dev.log_prob(xd, member)), host.log_prob(x, member), atol=1e-12)
        np.testing.assert_allclose(asnumpy(dev.conditionals(xd, member)), host.conditionals(x, member),
                                   atol=1e-12)
        np.testing.assert_array_equal(asnumpy(dev.sample(7, seed=4, member=member)),
                                      host.sample(7, seed=4, member=member))
    dev.init_bias(xd)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,match", [
    (dict(D=0), "D must be"), (dict(H=0), "H must be"), (dict(layers=0), "layers must be"),
    (dict(masks=0), "masks must be"), (dict(H=2.5), "H must be"), (dict(activation="tanh"), "activation"),
    (dict(seed=-1), "seed"), (dict(init_scale=0.0), "init_scale"), (dict(dtype=np.int32), "dtype")])
def test_bad_options_give_clear_errors(kwargs, match):
    args = dict(D=4, H=3) | kwargs
    with pytest.raises(ValueError, match=match):
        MADE(**args)


def test_bad_input_gives_clear_errors():
    m = MADE(6, 3, masks=2)
    for method in (m.loss_and_grads, m.log_prob, m.conditionals):
        with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
            method(np.zeros((2, 5)))
        with pytest.raises(ValueError, match="binary"):
            method(np.full((2, 6), 0.5))
    for member in (2, -1, 0.5):
        with pytest.raises(ValueError, match="member"):
            m.log_prob(np.zeros((1, 6)), member=member)
    with pytest.raises(ValueError, match="temperature"):
        m.sample(2, temperature=0.0)
    state = m._mask_rng.bit_generator.state
    with pytest.raises(ValueError):
        m.loss_and_grads(np.full((2, 6), 2.0))
    assert m._mask_rng.bit_generator.state == state                      # a refused batch draws nothing


def test_pure_functions_check_masks_and_activation():
    rng = np.random.default_rng(0)
    params = random_params(4, 3, 2, True, rng)
    x = np.zeros((2, 4))
    masks = M.mask_set(4, 3, 2, direct=True).masks
    no_direct = M.mask_set(4, 3, 2).masks
    for fwd in (M.reference_forward, M.forward):
        with pytest.raises(ValueError, match="masks must have keys"):
            fwd(params, x, no_direct)
        with pytest.raises(ValueError, match="mask M2 has shape"):
            fwd(params, x, masks | {"M2": np.ones((3, 4))})
        with pytest.raises(ValueError, match="activation"):
            fwd(params, x, masks, "tanh")
    with pytest.raises(ValueError, match="permutation"):
        M.made_masks(4, 3, 1, [0, 1, 1, 2], rng)
