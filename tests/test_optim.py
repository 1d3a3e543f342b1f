"""SGD, Nesterov and Adam: hand-computed steps, the two tiers (textbook rules and host kernels)
equal, convergence, clipping, decay, errors, state."""
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from scratchnade import optim, optim_host
from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.optim import SGD, Adam, Nesterov, clip_grad_norm, grad_norm
from fakedevice import DeviceArray

W0, G1, G2 = [1.0, -2.0], [0.5, 1.0], [1.0, -1.0]     # start point and two gradients


def run(opt, grads_seq, w0=W0):
    """Params {"w": w0} after one opt.step per gradient in grads_seq; returns the array."""
    params = {"w": np.array(w0)}
    for g in grads_seq:
        opt.step(params, {"w": np.array(g)})
    return params["w"]


# ----------------------------------------------------------------------------- exact steps

def test_sgd_first_step_by_hand():
    np.testing.assert_allclose(run(SGD(0.1), [G1]), [1 - 0.05, -2 - 0.1], rtol=1e-15)
    np.testing.assert_allclose(run(SGD(0.1), [G1, G2]), [0.95 - 0.1, -2.1 + 0.1], rtol=1e-15)


def test_nesterov_first_two_steps_by_hand():
    opt = Nesterov(0.1, momentum=0.9)
    # step 1: v = g1 = [0.5, 1];  w -= 0.1 (g1 + 0.9 v) = 0.1 * 1.9 * g1
    np.testing.assert_allclose(run(opt, [G1]), [0.905, -2.19], rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["v"], [0.5, 1.0], rtol=1e-15)
    # step 2: v = 0.9 [0.5, 1] + [1, -1] = [1.45, -0.1];  w -= 0.1 ([1, -1] + 0.9 v) = [0.2305, -0.109]
    opt = Nesterov(0.1, momentum=0.9)
    np.testing.assert_allclose(run(opt, [G1, G2]), [0.905 - 0.2305, -2.19 + 0.109], rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["v"], [1.45, -0.1], rtol=1e-14)


def test_adam_first_two_steps_by_hand():
    opt = Adam(0.1, betas=(0.9, 0.999), eps=1e-8)
    # step 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
    w1 = np.array([1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 - 0.1 * 1.0 / (1.0 + 1e-8)])
    np.testing.assert_allclose(run(opt, [G1]), w1, rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["m"], [0.05, 0.1], rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["v"], [0.00025, 0.001], rtol=1e-14)
    # step 2: m = 0.9 m + 0.1 g2 = [0.145, -0.01]; v = 0.999 v + 0.001 g2^2 = [0.00124975, 0.001999]
    #         bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999
    m_hat = np.array([0.145, -0.01]) / 0.19
    v_hat = np.array([0.00124975, 0.001999]) / 0.001999
    opt = Adam(0.1, betas=(0.9, 0.999), eps=1e-8)
    np.testing.assert_allclose(run(opt, [G1, G2]), w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(opt.state["w"]["m"], [0.145, -0.01], rtol=1e-13)
    assert opt.t == 2


@pytest.mark.parametrize("tier", ["textbook", "host"])
def test_pure_update_functions_work_in_place(tier):
    """The textbook rules (optim) and the host kernels (optim_host, with or without scratch)."""
    mod, tmp = (optim, {}) if tier == "textbook" else (optim_host, {"tmp": np.empty(2)})
    w, v, m = np.array(W0), np.zeros(2), np.zeros(2)
    assert mod.sgd_update(w, np.array(G1), 0.1, **tmp) is w
    np.testing.assert_allclose(w, [0.95, -2.1], rtol=1e-15)
    w = np.array(W0)
    assert mod.nesterov_update(w, np.array(G1), v, 0.1, 0.9, **tmp) is w
    np.testing.assert_allclose((w, v), ([0.905, -2.19], G1), rtol=1e-14)
    w, v = np.array(W0), np.zeros(2)
    assert mod.adam_update(w, np.array(G1), m, v, 1, 0.1, 0.9, 0.999, 0.0, **tmp) is w
    np.testing.assert_allclose(w, [0.9, -2.1], rtol=1e-14)      # eps = 0: step = lr * sign(g)
    np.testing.assert_allclose((m, v), ([0.05, 0.1], [0.00025, 0.001]), rtol=1e-14)


def test_nesterov_matches_the_look_ahead_form():
    """Sutskever's u <- mu u - lr grad(theta + mu u); theta <- theta + u, with w = theta + mu u."""
    A = np.diag([1.0, 10.0])
    lr, mu = 0.05, 0.9
    theta, u = np.array(W0), np.zeros(2)
    params, opt = {"w": np.array(W0)}, Nesterov(lr, momentum=mu)
    for _ in range(20):
        u = mu * u - lr * A @ (theta + mu * u)
        theta = theta + u
        opt.step(params, {"w": A @ params["w"]})
        np.testing.assert_allclose(params["w"], theta + mu * u, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- convergence

def steps_to_converge(opt, tol=1e-6, max_steps=2000):
    """Steps until f(w) = 1/2 sum_i lam_i w_i^2 (condition number 100) falls below tol * f(w0)."""
    lam = np.logspace(0, 2, 10)
    params = {"w": np.ones(10)}
    f0 = 0.5 * lam.sum()
    for k in range(1, max_steps + 1):
        opt.step(params, {"w": lam * params["w"]})
        if 0.5 * (lam * params["w"] ** 2).sum() < tol * f0:
            return k
    return max_steps + 1


def test_momentum_and_adam_beat_sgd_on_ill_conditioned_quadratic():
    lr = 0.01                                  # = 1 / L: SGD is stable (needs lr < 2 / L)
    n_sgd = steps_to_converge(SGD(lr))
    n_nag = steps_to_converge(Nesterov(lr, momentum=0.9))
    n_adam = steps_to_converge(Adam(lr))
    assert n_sgd <= 2000                       # SGD does converge, slowly (~1 / (lr * lam_min))
    assert n_nag < n_sgd / 3 and n_adam < n_sgd


# ----------------------------------------------------------------------------- clipping

grad_dicts = st.dictionaries(
    st.sampled_from(["W", "V", "b", "c"]),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4),
               elements=st.floats(-1e3, 1e3)),
    min_size=1)


@settings(max_examples=40, deadline=None)
@given(grads=grad_dicts, max_norm=st.floats(1e-3, 1e3))
def test_clip_grad_norm_bounds_the_global_norm(grads, max_norm):
    before = {k: g.copy() for k, g in grads.items()}
    expected = np.sqrt(sum((g ** 2).sum() for g in before.values()))
    total = clip_grad_norm(grads, max_norm)
    assert total == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert grad_norm(grads) <= max_norm * (1 + 1e-12)
    if total <= max_norm:
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])    # untouched
    else:
        for k in grads:                                            # same direction, shorter
            np.testing.assert_allclose(grads[k], before[k] * (max_norm / total), rtol=1e-12)


def test_optimizer_clip_scales_the_step_and_records_the_norm():
    opt = SGD(1.0, clip=1.0)
    w = run(opt, [[3.0, 4.0]], w0=[0.0, 0.0])                     # norm 5 -> clipped to 1
    np.testing.assert_allclose(w, [-0.6, -0.8], rtol=1e-15)
    assert opt.last_grad_norm == 5.0
    with pytest.raises(ValueError, match="positive"):
        clip_grad_norm({"w": np.ones(2)}, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda **k: SGD(0.1, **k), lambda **k: Nesterov(0.05, **k),
                                  lambda **k: Adam(1e-3, **k), lambda **k: Adam(1e-3, lazy=True, **k),
                                  lambda **k: Adam(1e-3, weight_decay=0.01, **k)])
def test_clipping_inside_the_host_pass_gives_the_bits_of_clip_grad_norm_then_the_step(make, dtype):
    """On the host the clip scale is applied block by block inside the update's pass.  Over steps
    that clip and steps that do not: the same params, state and (scaled in place) gradients, bit
    for bit, as clip_grad_norm on every array followed by the unclipped step; for blocked arrays
    with a zero block, rows whose tiny entries underflow to zero when scaled, a strided array and
    a small one."""
    block = optim_host.BLOCK_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(1)
    w0 = {"big": rng.standard_normal((3 * block + 64) // 16 * 16).astype(dtype).reshape(-1, 16),
          "strided": rng.standard_normal((block // 8, 20)).astype(dtype).T,
          "small": rng.standard_normal((3, 4)).astype(dtype)}
    clipped, plain = make(clip=2.0), make()
    got, want = ({k: v.copy() for k, v in w0.items()} for _ in range(2))
    for t in range(6):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in w0.items()}
        flat = grads["big"].reshape(-1)
        flat[block:2 * block] = 0.0                                   # a zero block
        flat[2 * block:2 * block + 64] = np.finfo(dtype).smallest_subnormal   # underflow when scaled
        if t == 3:
            for g in grads.values():
                g *= 1e-3                                             # a step below the clip
        g_got, g_want = ({k: g.copy() for k, g in grads.items()} for _ in range(2))
        clipped.step(got, g_got)
        norm = clip_grad_norm(g_want, 2.0)
        plain.step(want, g_want)
        assert clipped.last_grad_norm == norm
        for k in w0:
            assert got[k].tobytes() == want[k].tobytes(), k
            assert g_got[k].tobytes() == g_want[k].tobytes(), k
    assert optim_host._blocks(got["big"], got["big"]) is not None          # really blocked
    for name, st_ in clipped.state.items():
        for s, a in st_.items():
            assert a.tobytes() == plain.state[name][s].tobytes(), f"{s}/{name}"


def test_grad_norm_of_huge_float32_gradients_does_not_overflow():
    g = {"W": np.full(100, 1e30, dtype=np.float32)}               # g^2 overflows float32
    assert grad_norm(g) == pytest.approx(1e31, rel=1e-6)


# ----------------------------------------------------------------------------- weight decay

def test_weight_decay_is_classic_l2():
    # g + wd * w = [0.5 + 0.01, 1 - 0.02] = [0.51, 0.98]
    np.testing.assert_allclose(run(SGD(0.1, weight_decay=0.01), [G1]), [0.949, -2.098], rtol=1e-14)
    np.testing.assert_allclose(run(SGD(0.1, weight_decay=0.5), [[0.0, 0.0]]), [0.95, -1.9], rtol=1e-15)
    grads = {"w": np.array(G1)}
    params = {"w": np.array(W0)}
    Adam(0.1, weight_decay=0.3).step(params, grads)
    np.testing.assert_array_equal(grads["w"], G1)                  # grads are not modified
    g_l2 = np.array(G1) + 0.3 * np.array(W0)
    np.testing.assert_allclose(params["w"], run(Adam(0.1), [g_l2]), rtol=1e-15)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Nesterov(0.1), lambda: Adam()])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("host_kernels", [True, False])
def test_non_finite_gradient_is_a_clear_error_and_nothing_moves(make, bad, host_kernels):
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    grads = {"W": np.ones((2, 2)), "b": np.array([1.0, bad])}
    opt = make()
    opt.host_kernels = host_kernels
    with pytest.raises(ValueError, match="gradient of 'b' contains NaN or inf"):
        opt.step(params, grads)
    np.testing.assert_array_equal(params["W"], np.ones((2, 2)))   # no partial update


def test_mismatched_keys_or_shapes_are_clear_errors():
    params = {"W": np.ones((2, 3)), "b": np.ones(3)}
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        SGD(0.1).step(params, {"W": np.ones((2, 3)), "c": np.ones(3)})
    with pytest.raises(ValueError, match=r"gradient of 'W' has shape \(3, 2\)"):
        Adam().step(params, {"W": np.ones((3, 2)), "b": np.ones(3)})


def test_lr_is_a_mutable_attribute():
    opt = SGD(0.1)
    params = {"w": np.zeros(1)}
    opt.step(params, {"w": np.ones(1)})
    opt.lr = 0.01                                                  # a schedule's job
    opt.step(params, {"w": np.ones(1)})
    np.testing.assert_allclose(params["w"], [-0.11], rtol=1e-15)


def test_step_allocates_no_parameter_sized_temporaries():
    for opt in (SGD(0.1, weight_decay=1e-3, clip=1.0), Nesterov(0.1, weight_decay=1e-3),
                Adam(weight_decay=1e-3, clip=5.0)):
        params = {"W": np.ones((500, 400)), "b": np.ones(400)}
        grads = {"W": np.full((500, 400), 1e-2), "b": np.ones(400)}
        opt.step(params, grads)                                    # state and scratch created
        tracemalloc.start()
        opt.step(params, grads)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < params["W"].nbytes / 100, f"{type(opt).__name__} allocated {peak} bytes"


# ----------------------------------------------------------------------------- the two tiers

HOST_KERNELS = [   # an optimizer, and its host kernel run on one whole array: (w, g, state, t, tmp)
    (lambda: SGD(0.1), lambda w, g, s, t, tmp: optim_host.sgd_update(w, g, 0.1, tmp)),
    (lambda: Nesterov(0.1, momentum=0.8),
     lambda w, g, s, t, tmp: optim_host.nesterov_update(w, g, s["v"], 0.1, 0.8, tmp)),
    (lambda: Adam(3e-3, eps=1e-5),
     lambda w, g, s, t, tmp: optim_host.adam_update(w, g, s["m"], s["v"], t, 3e-3, 0.9, 0.999, 1e-5, tmp)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, kernel", HOST_KERNELS)
def test_host_path_gives_the_whole_array_kernel_bit_for_bit(make, kernel, dtype):
    """On the host a big parameter is updated in cache-sized blocks, a block whose gradient is
    zero takes the rule's g = 0 form, and every flush_every steps decaying state below a threshold
    is zeroed block by block.  Over 30 steps: the same bits as the kernel run once on whole arrays
    with the same flush, for a size that is no multiple of the block, a strided array, a small
    one, zero blocks, all-zero steps, and gradients so small that moments turn subnormal."""
    block = optim_host.BLOCK_BYTES // np.dtype(dtype).itemsize
    n = 4 * block + 17
    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(0)
    params = {"big": rng.standard_normal(n).astype(dtype),
              "strided": rng.standard_normal((n // 20, 20)).astype(dtype).T,  # > a block, not C-contiguous
              "small": rng.standard_normal(5).astype(dtype)}
    expect = {k: v.copy() for k, v in params.items()}
    opt = make()
    opt.flush_every = 4
    state = {k: {s: np.zeros_like(v) for s in opt.state_names} for k, v in params.items()}
    flushed = 0
    for t in range(1, 31):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        for g in (grads["big"], grads["strided"].reshape(-1)):     # views
            g[block:2 * block] = 0.0                          # a zero block (untouched embedding rows)
            g[2 * block:3 * block] *= np.sqrt(tiny)           # (1 - beta2) g^2 subnormal
            g[3 * block:] *= 8 * tiny                         # moments near the flush threshold
        if t % 7 == 0 or t > 24:
            grads["big"][:] = 0.0                             # every block zero: state decays, w moves
        opt.step(params, grads)
        thresholds = opt._flush_thresholds(params["big"])
        for k in params:
            kernel(expect[k], grads[k], state[k], t, np.empty_like(expect[k]))
            for s, threshold in thresholds.items():           # the same flush, on the whole array
                flushed += int(((state[k][s] != 0) & (np.abs(state[k][s]) < threshold)).sum())
                optim_host.flush_subnormals_(state[k][s], threshold)
    assert len(optim_host._blocks(params["big"], params["big"])) == 5           # really blocked
    assert flushed > 0 or not opt.state_names                                   # really flushed
    for k in params:
        np.testing.assert_array_equal(params[k], expect[k], err_msg=k)
    for name, st_ in opt.state.items():                     # the state too
        for s, a in st_.items():
            np.testing.assert_array_equal(a, state[name][s], err_msg=f"{s}/{name}")


def run_both_tiers(make, dtype, steps, seed=0):
    """(fast, textbook): the params and optimizer after `steps` steps of make() with host_kernels
    True (blocked, zero blocks, flush) and False, from the same start and gradients, and the
    path length sum_t |w_t - w_{t-1}| of the textbook run (the scale of its rounding errors)."""
    block = optim_host.BLOCK_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(seed)
    w0 = {"big": rng.standard_normal(3 * block + 5).astype(dtype), "small": rng.standard_normal((3, 4)).astype(dtype)}
    runs, path = [], {k: np.zeros_like(v) for k, v in w0.items()}
    fast, textbook = make(), make()
    textbook.host_kernels = False
    grads_seq = []
    for t in range(steps):
        scale = 10.0 ** rng.integers(-3, 2)
        grads = {k: (rng.standard_normal(v.shape) * scale).astype(dtype) for k, v in w0.items()}
        grads["big"][block:2 * block] = 0.0                   # a zero block: the g = 0 host kernel
        if t % 10 == 9:
            grads["big"][:] = 0.0
        grads_seq.append(grads)
    for opt in (fast, textbook):
        params = {k: v.copy() for k, v in w0.items()}
        for grads in grads_seq:
            before = {k: v.copy() for k, v in params.items()}
            opt.step(params, {k: g.copy() for k, g in grads.items()})
            if opt is textbook:
                for k in path:
                    path[k] += np.abs(params[k] - before[k])
        runs.append((params, opt))
    return runs[0], runs[1], path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda: SGD(0.1, weight_decay=1e-2, clip=30.0),
                                  lambda: Nesterov(0.05, momentum=0.9, weight_decay=1e-2)])
def test_sgd_and_nesterov_host_kernels_give_the_textbook_bits(make, dtype):
    """The host kernels of SGD and Nesterov do the textbook's operations in the textbook's order
    (weight decay included): over 50 steps, blocks and zero blocks, the very same bits."""
    (fast_params, fast), (text_params, text), _ = run_both_tiers(make, dtype, 50)
    assert fast.host_kernels and not text.host_kernels
    for k in fast_params:
        np.testing.assert_array_equal(fast_params[k], text_params[k], err_msg=k)
        for s in fast.state_names:
            np.testing.assert_array_equal(fast.state[k][s], text.state[k][s], err_msg=f"{s}/{k}")


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_adam_host_kernel_is_the_textbook_rule_to_a_few_ulps(dtype, rtol):
    """The host Adam folds its bias corrections into two scalars (optim_host._adam_step): other
    roundings, so NOT the same bits as the textbook.  Over 50 steps w agrees to rtol relative to
    |w| plus the distance it travelled; the moments m, v are computed as in the textbook and do
    agree bit for bit."""
    (fast_params, fast), (text_params, text), path = run_both_tiers(lambda: Adam(1e-2, eps=1e-8), dtype, 50)
    for k in fast_params:
        err = np.abs(fast_params[k].astype(np.float64) - text_params[k])
        assert np.all(err <= rtol * (np.abs(text_params[k]) + path[k])), (k, err.max())
        for s in ("m", "v"):
            np.testing.assert_array_equal(fast.state[k][s], text.state[k][s], err_msg=f"{s}/{k}")
    assert not np.array_equal(fast_params["big"], text_params["big"])   # honest: the bits do differ


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), steps=st.integers(1, 50), lr=st.floats(1e-4, 0.5),
       mu=st.floats(0.0, 0.99), betas=st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9), (0.0, 0.999)]),
       eps=st.sampled_from([1e-8, 1e-5, 0.0]), log_scale=st.integers(-6, 3), seed=st.integers(0, 2 ** 16))
def test_host_kernels_match_the_textbook_rules_on_drawn_problems(n, steps, lr, mu, betas, eps, log_scale, seed):
    """The per-array functions of both tiers, float64, on whole arrays of drawn size and drawn
    hyperparameters: SGD and Nesterov the same bits; Adam's w to 1e-14 of |w| + its path, m and v
    the same bits."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(n)
    text = {k: w0.copy() for k in ("sgd", "nag", "adam")}
    fast = {k: w0.copy() for k in ("sgd", "nag", "adam")}
    text_v, fast_v = np.zeros(n), np.zeros(n)
    text_mv, fast_mv = [np.zeros(n), np.zeros(n)], [np.zeros(n), np.zeros(n)]
    path, tmp = np.zeros(n), np.empty(n)
    for t in range(1, steps + 1):
        g = rng.standard_normal(n) * 10.0 ** log_scale
        optim.sgd_update(text["sgd"], g, lr)
        optim_host.sgd_update(fast["sgd"], g, lr, tmp)
        optim.nesterov_update(text["nag"], g, text_v, lr, mu)
        optim_host.nesterov_update(fast["nag"], g, fast_v, lr, mu, tmp)
        before = text["adam"].copy()
        optim.adam_update(text["adam"], g, *text_mv, t, lr, *betas, eps)
        optim_host.adam_update(fast["adam"], g, *fast_mv, t, lr, *betas, eps, tmp)
        path += np.abs(text["adam"] - before)
    np.testing.assert_array_equal(fast["sgd"], text["sgd"])
    np.testing.assert_array_equal(fast["nag"], text["nag"])
    np.testing.assert_array_equal(fast_v, text_v)
    np.testing.assert_array_equal(fast_mv[0], text_mv[0])
    np.testing.assert_array_equal(fast_mv[1], text_mv[1])
    assert np.all(np.abs(fast["adam"] - text["adam"]) <= 1e-14 * (np.abs(text["adam"]) + path))


def test_host_kernels_is_the_switch_between_the_tiers(monkeypatch):
    """host_kernels = True runs optim_host (blocked on the host); False runs only the textbook
    rules of optim, which give the same step (Adam to a few ulps)."""
    calls = []
    real = optim_host.update_blocked
    monkeypatch.setattr(optim_host, "update_blocked", lambda *a, **k: calls.append(1) or real(*a, **k))
    for make in (lambda: SGD(0.1), lambda: Nesterov(0.1), lambda: Adam(0.1)):
        params = {"w": np.array(W0)}
        assert make().host_kernels is True                                # the default
        make().step(params, {"w": np.array(G1)})
        assert calls == [1]
        text, text_params = make(), {"w": np.array(W0)}
        text.host_kernels = False
        text.step(text_params, {"w": np.array(G1)})
        assert calls == [1]                                               # no host kernel ran
        np.testing.assert_allclose(text_params["w"], params["w"], rtol=1e-15)
        calls.clear()


def test_flush_subnormals_zeroes_exactly_the_entries_below_the_threshold():
    tiny = np.finfo(np.float32).tiny
    a = np.array([tiny / 4, -tiny / 4, tiny, -2.2 * tiny, 2.4 * tiny, -2.6 * tiny, 1e-30, -3.0, 0.0],
                 dtype=np.float32)
    expect = np.where(np.abs(a) < 2.5 * tiny, 0.0, a).astype(np.float32)
    optim_host.flush_subnormals_(a, 2.5 * tiny)
    np.testing.assert_array_equal(a, expect)
    assert expect[5] != 0 and expect[4] == 0                        # the threshold really cuts


def test_flush_threshold_stays_far_below_any_real_moment():
    tiny = np.finfo(np.float32).tiny
    assert optim_host.flush_threshold(np.float32, 0.9, 8) == pytest.approx(tiny / 0.9 ** 8)
    assert optim_host.flush_threshold(np.float32, 0.999, 8) < 1.01 * tiny
    assert optim_host.flush_threshold(np.float32, 1e-5, 8) == 2.0 ** 20 * tiny    # capped: not 1e40 tiny


@pytest.mark.parametrize("make, moment", [(lambda: Adam(1e-3, eps=1e-5), "m"),
                                          (lambda: Nesterov(0.01, momentum=0.9), "v")])
@pytest.mark.parametrize("n", [2 * optim_host.BLOCK_BYTES // 4, 1000])  # host blocks, and one whole array
def test_a_decaying_moment_never_turns_subnormal(make, moment, n):
    """A row whose gradient stays 0 (a rare token's embedding row) decays m <- 0.9 m: after
    ~750 steps it would be subnormal (~50x slower per operation on x86).  Every flush_every
    steps the optimizers zero what would get there before the next flush; w ends exactly
    where the unflushed rule puts it."""
    rng = np.random.default_rng(0)
    params = {"E": rng.standard_normal(n).astype(np.float32)}
    g0 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    reference = {"E": params["E"].copy()}
    opt, ref = make(), make()
    ref.flush_every = None                                          # the plain rule
    zero = {"E": np.zeros(n, np.float32)}
    tiny = np.finfo(np.float32).tiny
    for t in range(900):
        opt.step(params, {"E": g0} if t == 0 else zero)
        ref.step(reference, {"E": g0} if t == 0 else zero)
        m = opt.state["E"][moment]
        assert not np.any((m != 0) & (np.abs(m) < tiny)), f"subnormal after step {t + 1}"
    r = ref.state["E"][moment]
    assert np.any((r != 0) & (np.abs(r) < tiny))                   # unflushed, it did go subnormal
    assert not opt.state["E"][moment].any()                         # flushed: exactly 0 by now
    np.testing.assert_array_equal(params["E"], reference["E"])


# ----------------------------------------------------------------------------- state_dict

def random_problem(seed):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    return params, grads


@pytest.mark.parametrize("make", [lambda: SGD(0.1, weight_decay=0.01),
                                  lambda: Nesterov(0.05, momentum=0.8, clip=2.0),
                                  lambda: Adam(0.01, betas=(0.8, 0.99), weight_decay=0.1)])
def test_state_dict_round_trip_gives_identical_steps(make):
    params, grads = random_problem(0)
    opt = make()
    for g in grads[:3]:
        opt.step(params, {k: v.copy() for k, v in g.items()})
    d = opt.state_dict()
    json.dumps({k: v for k, v in d.items() if k != "arrays"})    # scalars are JSON-able
    assert all(isinstance(a, np.ndarray) for a in d["arrays"].values())
    d = json.loads(json.dumps({**d, "arrays": {}})) | {"arrays": d["arrays"]}
    twin_params = {k: v.copy() for k, v in params.items()}
    twin = make()
    twin.lr = 123.0                                                # overwritten by the load
    twin.load_state_dict(d)
    for g in grads[3:]:
        opt.step(params, {k: v.copy() for k, v in g.items()})
        twin.step(twin_params, {k: v.copy() for k, v in g.items()})
    for k in params:
        np.testing.assert_array_equal(twin_params[k], params[k])
    assert twin.t == opt.t == 5


def test_load_state_dict_errors_are_clear():
    params, grads = random_problem(1)
    opt = Adam()
    opt.step(params, grads[0])
    d = opt.state_dict()
    with pytest.raises(ValueError, match="state_dict is for 'Adam', not 'Nesterov'"):
        Nesterov(0.1).load_state_dict(d)
    with pytest.raises(ValueError, match="unexpected state array 'q/W'"):
        Adam().load_state_dict({**d, "arrays": {**d["arrays"], "q/W": np.zeros((3, 2))}})
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        Adam().load_state_dict({**d, "hyper": {**d["hyper"], "momentum": 0.9}})
    with pytest.raises(ValueError, match=r"state is for parameters \['W', 'b'\]"):
        Adam().load_state_dict(d, params={"W": params["W"]})
    with pytest.raises(ValueError, match=r"state m/W has shape \(3, 2\)"):
        Adam().load_state_dict(d, params={"W": np.zeros((2, 3)), "b": params["b"]})
    lazy = Adam()
    lazy.load_state_dict(d)                                        # no params: checked at step
    with pytest.raises(ValueError, match="state is for parameters"):
        lazy.step({"V": np.zeros(2)}, {"V": np.zeros(2)})


# ----------------------------------------------------------------------------- hyperparameter ranges

MAKERS = {"SGD": lambda **kw: SGD(**{"lr": 0.1, **kw}), "Nesterov": lambda **kw: Nesterov(**{"lr": 0.1, **kw}),
          "Adam": lambda **kw: Adam(**kw)}
BAD_COMMON = [("lr", np.nan, "nan"), ("lr", np.inf, "inf"), ("lr", -np.inf, "-inf"), ("lr", -0.1, "-0.1"),
              ("lr", np.float32(-1e-3), "-0.0010000000474974513"), ("lr", "fast", "'fast'"), ("lr", None, "None"),
              ("lr", True, "True"), ("lr", np.array(-1.0), "-1.0"), ("lr", np.array([0.1]), "array([0.1])"),
              ("weight_decay", -1e-4, "-0.0001"), ("weight_decay", np.nan, "nan"),
              ("weight_decay", np.inf, "inf"), ("clip", 0.0, "0.0"), ("clip", -1.0, "-1.0"), ("clip", np.nan, "nan")]
BAD_OWN = {"SGD": [],
           "Nesterov": [("momentum", -0.1, "-0.1"), ("momentum", 1.0, "1.0"), ("momentum", 1.5, "1.5"),
                        ("momentum", np.nan, "nan")],
           "Adam": [("betas", (0.9, 1.0), "beta2 = 1.0"), ("betas", (-0.1, 0.999), "beta1 = -0.1"),
                    ("betas", (np.nan, 0.999), "beta1 = nan"), ("betas", (0.9,), "betas = (0.9,)"),
                    ("betas", 0.9, "betas = 0.9"), ("eps", 0.0, "0.0"), ("eps", -1e-8, "-1e-08"),
                    ("eps", np.nan, "nan"), ("eps", np.inf, "inf")]}
CASES = [(kind, name, value, shown) for kind in MAKERS for name, value, shown in BAD_COMMON + BAD_OWN[kind]]


def _expected(name, shown):
    return shown if " = " in shown else f"{name} = {shown}"


@pytest.mark.parametrize("kind, name, value, shown", CASES)
def test_out_of_range_hyperparameters_are_refused_at_construction(kind, name, value, shown):
    with pytest.raises(ValueError) as err:
        MAKERS[kind](**{name: value})
    msg = str(err.value)
    assert msg.startswith(f"{kind}: {_expected(name, shown)}") and "\n" not in msg
    assert "NaN or inf" not in msg          # runs.py reads that phrase as a diverged gradient


@pytest.mark.parametrize("kind, name, value, shown", CASES)
@pytest.mark.parametrize("host_kernels", [True, False])
def test_hyperparameters_set_between_steps_are_refused_before_anything_moves(kind, name, value, shown,
                                                                           host_kernels):
    """A schedule sets opt.lr (or anything else) between steps: the next step refuses it."""
    params, grads = random_problem(3)
    opt = MAKERS[kind](clip=10.0)
    opt.host_kernels = host_kernels
    opt.step(params, grads[0])
    before = {k: v.copy() for k, v in params.items()}
    state = {k: {s: a.copy() for s, a in st.items()} for k, st in opt.state.items()}
    setattr(opt, name, value)
    with pytest.raises(ValueError) as err:
        opt.step(params, grads[1])
    assert str(err.value).startswith(f"{kind} step 2: {_expected(name, shown)}")
    assert opt.t == 1
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
        for s, a in opt.state[k].items():
            np.testing.assert_array_equal(a, state[k][s])


@pytest.mark.parametrize("make", [lambda: SGD(0.0), lambda: Nesterov(np.float32(0.0), momentum=np.array(0.0)),
                                  lambda: Adam(0.0, betas=(0.0, 0.0), eps=1e-300, weight_decay=0.0, clip=np.inf)])
def test_the_edges_of_the_ranges_are_allowed(make):
    """lr = 0 (where a linear anneal ends), momentum and betas 0, clip inf (never clip)."""
    params, grads = random_problem(1)
    before = {k: v.copy() for k, v in params.items()}
    make().step(params, grads[0])
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])     # lr = 0: nothing moves


def test_a_schedule_that_returns_nan_stops_fit_with_the_value_named():
    from scratchnade.train import fit

    class Quadratic:
        params = {"w": np.ones(2)}

        def loss_and_grads(self, batch):
            return float(self.params["w"] @ self.params["w"]), {"w": 2 * self.params["w"]}

    model = Quadratic()
    with pytest.raises(ValueError, match="SGD step 3: lr = nan is not allowed"):
        fit(model, [0] * 5, None, SGD(0.1), epochs=1, lr_schedule=lambda step: [1.0, 0.5, np.nan][min(step, 2)],
            progress=False)
    np.testing.assert_allclose(model.params["w"], 0.8 * 0.9 * np.ones(2))     # two good steps, then none


def test_load_state_dict_refuses_hyperparameters_out_of_range():
    params, grads = random_problem(1)
    opt = Adam()
    opt.step(params, grads[0])
    d = opt.state_dict()
    twin = Adam(0.5)
    for bad, match in (({"lr": float("nan")}, "lr = nan"), ({"betas": [0.9, 1.5]}, "beta2 = 1.5"),
                       ({"eps": -1.0}, "eps = -1.0")):
        with pytest.raises(ValueError, match=f"Adam state_dict: {match}"):
            twin.load_state_dict({**d, "hyper": {**d["hyper"], **bad}})
        assert twin.lr == 0.5 and twin.t == 0 and twin.state == {}   # nothing was loaded


# ----------------------------------------------------------------------------- devices

@pytest.mark.parametrize("make", [lambda: SGD(0.1, weight_decay=0.01, clip=1.0),
                                  lambda: Nesterov(0.1, weight_decay=0.01, clip=1.0),
                                  lambda: Adam(0.01, weight_decay=0.01, clip=1.0)])
@pytest.mark.parametrize("host_kernels", [True, False])
def test_optimizers_run_on_the_fake_device(make, host_kernels, fake_device):
    """Both tiers run on a device (the host kernels on whole arrays there), state stays there."""
    host_params, grads = random_problem(2)
    dev_params = {k: to_device(v, fake_device) for k, v in host_params.items()}
    host_opt, dev_opt = make(), make()
    dev_opt.host_kernels = host_kernels
    for g in grads[:3]:
        host_opt.step(host_params, {k: v.copy() for k, v in g.items()})
        dev_opt.step(dev_params, {k: to_device(v, fake_device) for k, v in g.items()})
    for k in host_params:
        assert isinstance(dev_params[k], DeviceArray)              # still on the device
        np.testing.assert_allclose(asnumpy(dev_params[k]), host_params[k], rtol=1e-13)
    for st_ in dev_opt.state.values():
        assert all(device_of(a) == fake_device for a in st_.values())
    d = dev_opt.state_dict()
    assert all(isinstance(a, np.ndarray) for a in d["arrays"].values())
    twin = make()
    twin.host_kernels = host_kernels
    twin.load_state_dict(d, params=dev_params)                     # back onto the device
    for st_ in twin.state.values():
        assert all(isinstance(a, DeviceArray) for a in st_.values())
    twin_params = {k: v.copy() for k, v in dev_params.items()}
    twin.step(twin_params, {k: to_device(v, fake_device) for k, v in grads[3].items()})
    dev_opt.step(dev_params, {k: to_device(v, fake_device) for k, v in grads[3].items()})
    for k in dev_params:
        np.testing.assert_array_equal(asnumpy(twin_params[k]), asnumpy(dev_params[k]))


# ----------------------------------------------------------------------------- the stable-then-decay schedule

@given(start=st.floats(0.0, 0.95), progress=st.floats(0.0, 1.0))
def test_linear_anneal_is_constant_then_linear_to_zero(start, progress):
    m = optim.linear_anneal(progress, start)
    if progress <= start:
        assert m == 1.0                                          # the stable part
    else:
        assert m == pytest.approx((1.0 - progress) / (1.0 - start))
    assert optim.linear_anneal(1.0, start) == 0.0                # ends at lr 0
    assert optim.linear_anneal(0.5 * (1.0 + start), start) == pytest.approx(0.5)   # halfway down the ramp


@pytest.mark.parametrize("start", [-0.1, 1.0, 2.0])
def test_linear_anneal_refuses_a_start_outside_0_1(start):
    with pytest.raises(ValueError, match=r"anneal start must be in \[0, 1\)"):
        optim.linear_anneal(0.3, start)
