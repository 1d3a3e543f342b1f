"""Compact gradients (scratchnade.compact): what they stand for, the order-p NADE's compact backward
pass against its dense one, and every optimizer's step with them against the step with the dense
arrays (both tiers, clipping, weight decay, lazy Adam, 1 and 2 threads)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchnade import optim_host, parallel
from scratchnade.backend import scatter_add
from scratchnade.functional import embedding_backward
from scratchnade.compact import ColumnGrad, OuterGrad, RowGrad, column_grad, is_compact, row_grad
from scratchnade.models import recurrent_nade
from scratchnade.models.sequence_nade import SequenceNADE, backward, forward
from scratchnade.optim import SGD, Adam, Nesterov, check_finite, grad_norm


def dense(g):
    return g.toarray() if is_compact(g) else g


# ----------------------------------------------------------------------------- the forms

def written(g, start, stop, k):
    """g.rows_into(start, stop, ...) into a NaN-filled buffer; when it answers None (a block it
    says is zero), the buffer must be untouched, and zeros stand for the block."""
    out = np.full((stop - start, k), np.nan)
    got = g.rows_into(start, stop, out)
    if got is None:
        assert np.isnan(out).all()
        return np.zeros_like(out)
    assert got is out
    return got


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 3), extra=st.integers(0, 2), n=st.integers(1, 5),
       d=st.integers(1, 9), k=st.integers(1, 4), cut=st.integers(1, 7))
def test_outer_grad_is_its_products_in_any_block_of_rows(seed, T, extra, n, d, k, cut):
    rng = np.random.default_rng(seed)
    A, Bh = rng.standard_normal((T, n, d)), rng.standard_normal((T, n, k))
    g = OuterGrad(A, Bh, (T + extra, d, k))
    want = np.zeros((T + extra, d, k))
    for s in range(T):
        want[s] = A[s].T @ Bh[s]                                     # G[s] = A_s^T Bh_s
    np.testing.assert_allclose(g.toarray(), want, rtol=1e-13, atol=1e-13)
    rows = want.reshape(-1, k)
    for start in range(0, rows.shape[0], cut):                       # blocks across positions
        stop = min(start + cut, rows.shape[0])
        np.testing.assert_allclose(written(g, start, stop, k), rows[start:stop], rtol=1e-13, atol=1e-13)
    assert g.sum_squares() == pytest.approx((want ** 2).sum(), rel=1e-10, abs=1e-12)
    g *= 0.5
    np.testing.assert_allclose(g.toarray(), 0.5 * want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(written(g, 0, rows.shape[0], k), 0.5 * rows, rtol=1e-13, atol=1e-13)
    assert g.sum_squares() == pytest.approx(0.25 * (want ** 2).sum(), rel=1e-10, abs=1e-12)


def assert_held_values_write_out(g, want, cut):
    """A RowGrad or ColumnGrad g against its dense array want (R, k): written out whole, into a
    buffer, block by block of `cut` rows (bit for bit); its norm; scaled."""
    R, k = want.shape
    assert g.toarray().tobytes() == want.tobytes()
    assert g.toarray(out=np.full((R, k), np.nan)).tobytes() == want.tobytes()
    for start in range(0, R, cut):
        stop = min(start + cut, R)
        assert written(g, start, stop, k).tobytes() == want[start:stop].tobytes()
    assert g.sum_squares() == pytest.approx((want ** 2).sum(), rel=1e-12)
    g *= 3.0
    np.testing.assert_array_equal(g.toarray(), want * 3.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), R=st.integers(1, 12), k=st.integers(1, 4), N=st.integers(1, 20),
       cut=st.integers(1, 7))
def test_row_grad_is_the_dense_scatter_add_into_zeros_bit_for_bit(seed, R, k, N, cut):
    rng = np.random.default_rng(seed)
    ids, values = rng.integers(0, R, size=N), rng.standard_normal((N, k))
    want = embedding_backward(values, ids, out=np.zeros((R, k)))    # the dense backward's sums
    np.testing.assert_allclose(want, scatter_add(np.zeros((R, k)), ids, values), rtol=1e-13, atol=1e-14)
    g = row_grad(ids, values, (R, k))
    assert list(g.rows) == sorted(set(ids.tolist()))
    assert_held_values_write_out(g, want, cut)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), C=st.integers(1, 9), N=st.integers(1, 20),
       cut=st.integers(1, 7))
def test_column_grad_is_the_dense_scatter_add_into_zeroed_columns_bit_for_bit(seed, k, C, N, cut):
    rng = np.random.default_rng(seed)
    ids, values = rng.integers(0, C, size=N), rng.standard_normal((N, k))
    want = np.zeros((k, C))
    embedding_backward(values, ids, out=want.T)                      # as the dense backward: into W.T
    np.testing.assert_allclose(want.T, scatter_add(np.zeros((C, k)), ids, values), rtol=1e-13, atol=1e-14)
    g = column_grad(ids, values, (k, C))
    assert list(g.cols) == sorted(set(ids.tolist()))
    assert_held_values_write_out(g, want, cut)
    assert g.finite()
    g.values[0, 0] = np.nan
    assert not g.finite()
    empty = ColumnGrad(np.zeros(0, int), np.zeros((0, k)), (k, C))   # no column held: G = 0
    assert written(empty, 0, k, C).tobytes() == np.zeros((k, C)).tobytes()


# ----------------------------------------------------------------------------- the model's compact backward

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T", [4, 2])
def test_order_p_nade_compact_backward_writes_out_to_the_dense_bits(dtype, T):
    rng = np.random.default_rng(0)
    m = SequenceNADE(40, p=4, H=6, dtype=dtype, seed=1)
    x = rng.integers(0, 40, size=(T, 9))
    x[:, :3] = 5                                                     # repeated ids
    mask = (rng.random((T, 9, 6)) < 0.7) / 0.7
    want = backward(1.0, forward(m.params, x, mask)[1])
    got = backward(1.0, forward(m.params, x, mask)[1], compact=True)
    assert isinstance(got["W"], OuterGrad) and isinstance(got["V"], RowGrad)
    for name in want:
        assert dense(got[name]).tobytes() == want[name].tobytes(), name


def test_tied_order_p_nade_stays_dense_and_models_hand_out_compact_only_when_asked():
    x = np.random.default_rng(0).integers(0, 30, size=(3, 5))
    tied = SequenceNADE(30, p=3, H=4, tied=True, dtype="float64")
    tied.compact_grads = True
    assert not any(is_compact(g) for g in tied.loss_and_grads(x)[1].values())
    m = SequenceNADE(30, p=3, H=4, dtype="float64")
    assert not any(is_compact(g) for g in m.loss_and_grads(x)[1].values())   # the default
    m.compact_grads = True
    assert is_compact(m.loss_and_grads(x)[1]["W"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dropout", [False, True])
def test_recurrent_nade_compact_backward_writes_out_to_the_dense_bits(dtype, dropout):
    rng = np.random.default_rng(0)
    m = recurrent_nade.RecurrentNADE(40, H=6, dtype=dtype, seed=1)
    x = rng.integers(0, 40, size=(5, 9))
    x[:, :3] = 7                                                     # repeated ids
    masks = ((rng.random((5, 9, 6)) < 0.7) / 0.7).astype(dtype) if dropout else None
    fed = rng.integers(0, 40, size=(5, 9))                           # scheduled sampling's inputs
    for inputs in (None, fed):
        want = recurrent_nade.backward(1.0, recurrent_nade.forward(m.params, x, None, masks, fed=inputs)[1])
        got = recurrent_nade.backward(1.0, recurrent_nade.forward(m.params, x, None, masks, fed=inputs)[1],
                                      compact=True)
        assert isinstance(got["W_x"], ColumnGrad)
        assert list(got["W_x"].cols) == sorted(set((x if inputs is None else fed)[:-1].ravel().tolist()))
        for name in want:
            assert dense(got[name]).tobytes() == want[name].tobytes(), name


def test_recurrent_nade_hands_out_a_column_grad_only_untied_and_asked():
    x = np.random.default_rng(0).integers(0, 30, size=(4, 5))
    tied = recurrent_nade.RecurrentNADE(30, H=4, tied=True, dtype="float64")
    tied.compact_grads = True
    assert not any(is_compact(g) for g in tied.loss_and_grads(x)[1].values())
    m = recurrent_nade.RecurrentNADE(30, H=4, dtype="float64")
    assert not any(is_compact(g) for g in m.loss_and_grads(x)[1].values())   # the default
    m.compact_grads = m.reuse_buffers = True
    assert isinstance(m.loss_and_grads(x)[1]["W_x"], ColumnGrad)
    assert "dW_x" not in m.__dict__.get("_buffers", {})               # no (H, d) buffer asked for


# ----------------------------------------------------------------------------- optimizers

MAKERS = {"sgd": lambda **k: SGD(0.1, **k), "nesterov": lambda **k: Nesterov(0.05, **k),
          "adam": lambda **k: Adam(1e-3, **k), "lazy": lambda **k: Adam(1e-3, lazy=True, **k),
          "adam-wd": lambda **k: Adam(1e-3, weight_decay=0.01, **k),
          "lazy-wd": lambda **k: Adam(1e-3, lazy=True, weight_decay=0.01, **k)}


def compact_problem(rng, dtype, p=4, T=3, n=8, d=None, k=64):
    """{W, V, b, X}: W and V (p, d, k) of ~2.5 host blocks, X (40, 3 d) of whole rows across blocks,
    and one step's compact gradients of them (dW = OuterGrad over T < p positions, dV = RowGrad of
    n T rows, dX = ColumnGrad of n T columns), plus a small dense one."""
    d = d or 5 * optim_host.BLOCK_BYTES // (8 * p * k) + 3          # blocks across positions
    params = {"W": rng.standard_normal((p, d, k)).astype(dtype),
              "V": rng.standard_normal((p, d, k)).astype(dtype),
              "b": rng.standard_normal((p, d)).astype(dtype),
              "X": rng.standard_normal((40, 3 * d)).astype(dtype)}        # a W_x (k, C): columns

    def grads():
        A = (rng.standard_normal((T, n, d)) * 0.1).astype(dtype)
        Bh = rng.random((T, n, k)).astype(dtype)
        ids = (np.arange(T)[:, None] * d + rng.integers(0, d, size=(T, n))).reshape(-1)
        values = rng.standard_normal((T * n, k)).astype(dtype)
        values[:2] = 0.0                                             # rows whose gradient is zero
        cols = rng.integers(0, 3 * d, size=T * n)
        return {"W": OuterGrad(A, Bh, (p, d, k)), "V": row_grad(ids, values, (p, d, k)),
                "b": rng.standard_normal((p, d)).astype(dtype),
                "X": column_grad(cols, rng.standard_normal((T * n, 40)).astype(dtype), (40, 3 * d))}
    return params, grads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("host_kernels", [True, False])
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_step_with_compact_gradients_is_the_step_with_their_dense_arrays(kind, clip, host_kernels, threads):
    """Four steps: the same params, state and (clipped in place) gradients as the same optimizer
    given g.toarray(), to rounding: a block's small matmul and the Gram-trick norm round apart
    from the batched matmul and the norm of the written-out array (the Gram trick's sum has terms
    of both signs: relative 1e-11 in the clip scale here, which the state carries on)."""
    rng = np.random.default_rng(7)
    params, make_grads = compact_problem(rng, np.float64)
    got, want = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    a, b = MAKERS[kind](clip=clip), MAKERS[kind](clip=clip)
    a.host_kernels = b.host_kernels = host_kernels
    previous = parallel.set_threads(threads)
    try:
        for _ in range(4):
            g = make_grads()
            g_dense = {k: dense(v).copy() for k, v in g.items()}
            a.step(got, g)
            b.step(want, g_dense)
            if clip is None:
                assert a.last_grad_norm is None and b.last_grad_norm is None
            else:
                assert a.last_grad_norm == pytest.approx(b.last_grad_norm, rel=1e-12)
            for k in g:
                np.testing.assert_allclose(dense(g[k]), g_dense[k], rtol=1e-9, atol=1e-15, err_msg=k)
    finally:
        parallel.set_threads(previous)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-15, err_msg=k)
        assert not np.array_equal(got[k], params[k])                 # it moved
    for name, state in a.state.items():
        for s, arr in state.items():
            np.testing.assert_allclose(arr, b.state[name][s], rtol=1e-9, atol=1e-300, err_msg=f"{s}/{name}")


def test_lazy_adam_with_a_row_grad_moves_only_its_rows_and_gives_their_dense_bits():
    """Lazy Adam with a RowGrad touches only the rows it holds with a nonzero value: the others keep
    w, m and v bit for bit, and the moved rows get exactly the bits of the dense lazy step."""
    rng = np.random.default_rng(3)
    params, make_grads = compact_problem(rng, np.float32)
    got, want = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    a, b = Adam(1e-3, lazy=True), Adam(1e-3, lazy=True)
    a.flush_every = b.flush_every = 1
    for _ in range(3):
        g = make_grads()
        g_v = g["V"].toarray()
        before = got["V"].copy()
        a.step({"V": got["V"]}, {"V": g["V"]})
        b.step({"V": want["V"]}, {"V": g_v})
        assert got["V"].tobytes() == want["V"].tobytes()
        idle = ~optim_host.rows_with_gradient(g_v.reshape(-1, g_v.shape[-1]))
        assert idle.sum() > 0 and (before.reshape(-1, 64)[idle] == got["V"].reshape(-1, 64)[idle]).all()
    # rows held with all-zero values that have moved before (so their m, v are not zero): they stay
    old = g["V"]
    values = rng.standard_normal(old.values.shape).astype(np.float32)
    values[::2] = 0.0
    before = got["V"].copy()
    a.step({"V": got["V"]}, {"V": RowGrad(old.rows, values, old.shape)})
    b.step({"V": want["V"]}, {"V": RowGrad(old.rows, values.copy(), old.shape).toarray()})
    assert got["V"].tobytes() == want["V"].tobytes()
    held_zero = old.rows[::2]
    assert (got["V"].reshape(-1, 64)[held_zero] == before.reshape(-1, 64)[held_zero]).all()
    for s in ("m", "v"):
        assert a.state["V"][s].tobytes() == b.state["V"][s].tobytes(), s


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_compact_gradient_is_refused_by_name_before_anything_moves(clip, bad):
    rng = np.random.default_rng(0)
    for name in ("W", "V", "X"):
        params, make_grads = compact_problem(rng, np.float64, d=50, k=4)
        g = make_grads()
        (g[name].A if name == "W" else g[name].values)[0, 1] = bad
        before = {k: v.copy() for k, v in params.items()}
        with pytest.raises(ValueError, match=f"gradient of '{name}' contains NaN or inf"):
            Adam(1e-3, clip=clip).step(params, g)
        for k in params:
            assert params[k].tobytes() == before[k].tobytes()


def test_the_norm_is_recorded_when_clipping_and_not_computed_without():
    rng = np.random.default_rng(0)
    params, make_grads = compact_problem(rng, np.float64, d=50, k=4)
    g = make_grads()
    norm = grad_norm({k: dense(v) for k, v in g.items()})
    opt = Adam(1e-3, clip=1e9)
    opt.step(params, g)
    assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
    opt.clip = None
    opt.step(params, make_grads())
    assert opt.last_grad_norm is None


def test_the_norm_of_huge_compact_gradients_does_not_overflow():
    A, Bh = np.full((1, 2, 3), 1e15, np.float32), np.full((1, 2, 4), 1e15, np.float32)   # G: 2e30
    g = OuterGrad(A, Bh, (1, 3, 4))
    check_finite({"W": g})                                            # its squares overflow: no error
    assert grad_norm({"W": g}) == pytest.approx(float(np.linalg.norm(g.toarray().astype(np.float64))), rel=1e-6)


def test_blas_one_thread_sets_and_restores_the_blas_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not parallel.blas_controllable():
        pytest.skip("no BLAS library that threadpoolctl can set")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with parallel.blas_one_thread():
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert inside == [1] * len(before) and after == before


def test_fit_trains_with_compact_gradients_to_the_dense_loop_s_result():
    """fit() turns compact gradients on for scratchnade's optimizers (and back off after): the same
    losses and parameters, to rounding, as a plain loop over loss_and_grads with dense gradients."""
    from scratchnade.train import fit
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 30, size=(3, 6)) for _ in range(5)]
    a, b = (SequenceNADE(30, p=3, H=5, dtype="float64", seed=2) for _ in range(2))
    calls = []
    real = a.loss_and_grads

    def spy(x):
        loss, grads = real(x)
        calls.append(is_compact(grads["W"]) and is_compact(grads["V"]))
        return loss, grads
    a.loss_and_grads = spy
    history = fit(a, batches, None, Adam(0.01, lazy=True, clip=0.5), epochs=1, progress=False)
    assert calls == [True] * 5 and a.compact_grads is False
    opt, losses = Adam(0.01, lazy=True, clip=0.5), []
    for x in batches:
        loss, grads = b.loss_and_grads(x)
        opt.step(b.params, grads)
        losses.append(loss)
    np.testing.assert_allclose(history.step_loss, losses, rtol=1e-12)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("lazy", [False, True])
def test_compact_gradients_on_the_strict_fake_device_step_like_the_host(fake_device, lazy):
    """On another device (the strict fake one stands for a GPU) the compact gradients are made,
    normed, clipped and written out there, and the step matches the host's dense one."""
    from scratchnade.backend import asnumpy, device_of, to_device
    x = np.random.default_rng(0).integers(0, 30, size=(3, 6))
    host, dev = SequenceNADE(30, p=3, H=5, dtype="float64", seed=2), \
        SequenceNADE(30, p=3, H=5, dtype="float64", seed=2, device=fake_device)
    dev.compact_grads = True
    _, g_dev = dev.loss_and_grads(to_device(x, fake_device))
    assert is_compact(g_dev["W"]) and is_compact(g_dev["V"])
    assert device_of(g_dev["W"].toarray()) == fake_device and device_of(g_dev["V"].toarray()) == fake_device
    Adam(0.01, lazy=lazy, clip=0.1).step(dev.params, g_dev)
    _, g_host = host.loss_and_grads(x)
    Adam(0.01, lazy=lazy, clip=0.1).step(host.params, g_host)
    for k in host.params:
        assert device_of(dev.params[k]) == fake_device
        np.testing.assert_allclose(asnumpy(dev.params[k]), host.params[k], rtol=1e-10, atol=1e-14, err_msg=k)
