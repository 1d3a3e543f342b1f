"""Adam(lazy=True): rows whose gradient is zero keep w, m and v bit for bit; rows with a gradient get
exactly what dense Adam gives them from the same state at the same step (both tiers, any device the
fake device stands for); the option is checked, saved and restored."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchnade import optim_host
from scratchnade.optim import Adam, adam_update


def sparse_grads(rng, shape, keep, steps):
    """`steps` gradients of `shape` whose rows (last axis) are zero except where keep(step) says."""
    gs = []
    for t in range(steps):
        g = rng.normal(size=shape)
        rows = g.reshape(-1, shape[-1])
        rows[~keep(t, rows.shape[0], rng)] = 0.0
        gs.append(g)
    return gs


def textbook_lazy(w, grads, lr, betas, eps, weight_decay=0.0):
    """The lazy rule row by row with the textbook adam_update: a row moves only at steps where its
    gradient is nonzero, with the global step count t."""
    w = w.copy().reshape(-1, w.shape[-1])
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        g = g.reshape(w.shape)
        for r in range(w.shape[0]):
            if np.any(g[r] != 0):
                adam_update(w[r], g[r] + weight_decay * w[r], m[r], v[r], t, lr, *betas, eps)
    return w, m, v


@pytest.mark.parametrize("host_kernels", [True, False])
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(6, 3), (2, 5, 4), (9, 1)]),
       weight_decay=st.sampled_from([0.0, 0.01]), share=st.sampled_from([0.4, 0.9]))
@settings(max_examples=15, deadline=None)
def test_lazy_adam_is_the_row_by_row_rule(host_kernels, seed, shape, weight_decay, share):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=shape)
    grads = sparse_grads(rng, shape, lambda t, R, r: r.random(R) < share, steps=6)
    opt = Adam(0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=weight_decay, lazy=True)
    opt.host_kernels = host_kernels
    params = {"W": w0.copy()}
    for g in grads:
        opt.step(params, {"W": g})
    want_w, want_m, want_v = textbook_lazy(w0, grads, 0.05, (0.8, 0.9), 1e-6, weight_decay)
    rtol = 0 if not host_kernels else 1e-13                 # the host kernel folds Adam's corrections
    np.testing.assert_allclose(params["W"].reshape(want_w.shape), want_w, rtol=rtol, atol=0)
    # the moments see g + wd * w: with weight decay, w's few ulps on the host reach them too
    rtol_state = rtol if weight_decay else 0
    np.testing.assert_allclose(opt.state["W"]["m"].reshape(want_m.shape), want_m, rtol=rtol_state, atol=0)
    np.testing.assert_allclose(opt.state["W"]["v"].reshape(want_v.shape), want_v, rtol=rtol_state, atol=0)


def test_rows_without_gradient_keep_their_bits_and_rows_with_one_move():
    rng = np.random.default_rng(0)
    params = {"E": rng.normal(size=(50, 8)).astype(np.float32)}
    opt = Adam(1e-2, lazy=True)
    opt.step(params, {"E": rng.normal(size=(50, 8)).astype(np.float32)})     # every row has state now
    before = {"w": params["E"].copy(), **{s: a.copy() for s, a in opt.state["E"].items()}}
    g = np.zeros((50, 8), np.float32)
    g[[3, 17]] = 1.0
    opt.step(params, {"E": g})
    untouched = np.setdiff1d(np.arange(50), [3, 17])
    for name, after in (("w", params["E"]), ("m", opt.state["E"]["m"]), ("v", opt.state["E"]["v"])):
        assert after[untouched].tobytes() == before[name][untouched].tobytes()
        assert not np.array_equal(after[[3, 17]], before[name][[3, 17]])


def test_with_a_gradient_in_every_row_lazy_is_dense_adam_bit_for_bit():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(3, optim_host.BLOCK_BYTES)).astype(np.float32)   # 3 x 4 blocks: the blocked host path
    dense, lazy = {"W": w0.copy()}, {"W": w0.copy()}
    a, b = Adam(1e-3), Adam(1e-3, lazy=True)
    for _ in range(4):
        g = rng.normal(size=w0.shape).astype(np.float32)
        a.step(dense, {"W": g})
        b.step(lazy, {"W": g})
    assert dense["W"].tobytes() == lazy["W"].tobytes()


@pytest.mark.parametrize("share", [0.3, 0.9])
def test_rows_with_a_gradient_get_dense_adams_bits_and_the_others_keep_theirs(share):
    # big enough for the blocked host path; 0.3: the gathered rows, 0.9: dense step, idle rows put back
    rng = np.random.default_rng(2)
    R = 3 * optim_host.BLOCK_BYTES // (4 * 64)                  # 3 blocks of float32 rows of 64
    w0 = rng.normal(size=(R, 64)).astype(np.float32)
    dense, lazy = {"W": w0.copy()}, {"W": w0.copy()}
    a, b = Adam(1e-3), Adam(1e-3, lazy=True)
    g = rng.normal(size=w0.shape).astype(np.float32)
    a.step(dense, {"W": g})
    b.step(lazy, {"W": g})                                      # every row has the same state now
    before = {"w": lazy["W"].copy(), **{s: x.copy() for s, x in b.state["W"].items()}}
    g = rng.normal(size=w0.shape).astype(np.float32)
    moved = rng.random(R) < share
    g[~moved] = 0.0
    a.step(dense, {"W": g})
    b.step(lazy, {"W": g})
    for name, got, want in (("w", lazy["W"], dense["W"]), ("m", b.state["W"]["m"], a.state["W"]["m"]),
                            ("v", b.state["W"]["v"], a.state["W"]["v"])):
        assert got[moved].tobytes() == want[moved].tobytes(), name
        assert got[~moved].tobytes() == before[name][~moved].tobytes(), name


def test_one_axis_parameters_are_dense_even_when_lazy():
    params, opt = {"b": np.ones(4)}, Adam(0.1, lazy=True)
    opt.step(params, {"b": np.ones(4)})
    opt.step(params, {"b": np.zeros(4)})                       # dense: the momentum still moves b
    dense, ref = {"b": np.ones(4)}, Adam(0.1)
    ref.step(dense, {"b": np.ones(4)})
    ref.step(dense, {"b": np.zeros(4)})
    assert np.array_equal(params["b"], dense["b"])


def test_lazy_is_checked_and_survives_a_state_dict():
    with pytest.raises(ValueError, match="lazy = 'yes' is not allowed; lazy must be True or False"):
        Adam(lazy="yes")
    opt = Adam(1e-3, lazy=True)
    params = {"W": np.ones((2, 3))}
    opt.step(params, {"W": np.ones((2, 3))})
    again = Adam(1e-3)
    again.load_state_dict(opt.state_dict())
    assert again.lazy is True
    old = opt.state_dict()
    del old["hyper"]["lazy"]                                    # a checkpoint from before the option
    Adam(1e-3).load_state_dict(old)


def test_a_strided_parameter_is_refused_by_name():
    w = np.ones((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="'W' and its gradient must be C-contiguous"):
        Adam(lazy=True).step({"W": w}, {"W": np.ones_like(w)})


def test_lazy_blocks_skip_idle_blocks_gather_few_rows_and_flush_like_dense_adam():
    # the host's one-pass lazy step (optim_host.update_blocked with row=k), four blocks of rows:
    # one with no gradient (skipped), one with a few rows (gathered), one with most rows (dense,
    # idle rows put back), one with every row; tiny gradients make the subnormal flush bite
    rng = np.random.default_rng(3)
    per_block = optim_host.BLOCK_BYTES // (4 * 64)              # float32 rows of 64 per block
    R = 4 * per_block
    w0 = rng.normal(size=(R, 64)).astype(np.float32)
    dense, lazy = {"W": w0.copy()}, {"W": w0.copy()}
    a, b = Adam(1e-3), Adam(1e-3, lazy=True)
    a.flush_every = b.flush_every = 1
    tiny = rng.random(w0.shape) < 0.2                           # there (1 - beta1) g is below the flush
    g = rng.normal(size=w0.shape).astype(np.float32)
    g[tiny] = 1e-37
    a.step(dense, {"W": g})
    b.step(lazy, {"W": g})                                      # every row has the same state now
    before = {"w": lazy["W"].copy(), **{s: x.copy() for s, x in b.state["W"].items()}}
    share = np.repeat([0.0, 0.1, 0.9, 1.0], per_block)
    moved = rng.random(R) < share
    g = rng.normal(size=w0.shape).astype(np.float32)
    g[tiny] = 1e-37
    g[~moved] = 0.0
    a.step(dense, {"W": g})
    b.step(lazy, {"W": g})
    assert (a.state["W"]["m"] == 0).any()                        # the flush did something
    for name, got, want in (("w", lazy["W"], dense["W"]), ("m", b.state["W"]["m"], a.state["W"]["m"]),
                            ("v", b.state["W"]["v"], a.state["W"]["v"])):
        assert got[moved].tobytes() == want[moved].tobytes(), name
        assert got[~moved].tobytes() == before[name][~moved].tobytes(), name
