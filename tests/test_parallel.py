"""scratchnade.parallel: the row blocks of the elementwise passes on several threads, with the same bits
as the serial loop (softmax cross-entropy, its gradient, token log-probabilities, the optimizers' blocked
updates), every block exactly once, errors raised in the caller, and the thread setting checked."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchnade import functional as F
from scratchnade import optim_host, parallel
from scratchnade.optim import SGD, Adam, Nesterov


@pytest.fixture(autouse=True)
def restore_threads():
    previous = parallel.set_threads(None)
    yield
    parallel.set_threads(previous)


def with_threads(n, fn, *args):
    parallel.set_threads(n)
    try:
        return fn(*args)
    finally:
        parallel.set_threads(None)


def logits_and_targets(N=300, V=4000, dtype=np.float32, seed=0):
    """(N, V) logits spanning ~1 MB blocks several times over (N * V * 4 bytes = 4.8 MB)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (N, V)).astype(dtype), rng.integers(0, V, N))


@given(n=st.integers(2, 5))
@settings(max_examples=4, deadline=None)
def test_block_runs_cover_every_block_once_in_order(n):
    for count in range(0, 23):
        blocks = list(range(count))
        runs = parallel.runs(blocks, n)
        assert [b for run in runs for b in run] == blocks
        assert len(runs) <= n and all(runs)
        if runs:
            assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_every_block_runs_once_and_on_more_than_one_thread():
    seen, where, lock = [], set(), threading.Lock()

    def work(b):
        with lock:
            seen.append(b)
            where.add(threading.get_ident())
        np.exp(np.ones(200_000))                                  # long enough for the other thread to start
    with_threads(3, parallel.for_each_block, work, list(range(40)))
    assert sorted(seen) == list(range(40))
    assert len(where) > 1


def test_one_thread_is_the_plain_loop_in_order_on_the_caller():
    seen = []
    with_threads(1, parallel.for_each_block, lambda b: seen.append((b, threading.get_ident())), list(range(9)))
    assert seen == [(b, threading.get_ident()) for b in range(9)]


def test_an_error_in_a_block_is_raised_in_the_caller_after_every_run_stops():
    done = []

    def work(b):
        if b == 5:                                                # in the caller's own run (blocks 0-19)
            raise FloatingPointError("block 5")
        np.exp(np.ones(100_000))                                  # the other run is still busy then
        done.append(b)
    with pytest.raises(FloatingPointError, match="block 5"):
        with_threads(2, parallel.for_each_block, work, list(range(40)))
    assert sorted(done) == [0, 1, 2, 3, 4, *range(20, 40)]       # no thread still writing afterwards


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_has_the_serial_bits_on_any_thread_count(threads, dtype):
    f, y = logits_and_targets(dtype=dtype)
    mask = (np.arange(f.shape[0]) % 3 > 0).astype(dtype)
    serial_loss, serial_cache = with_threads(1, F.softmax_cross_entropy, f, y, mask)
    serial_d = with_threads(1, F.softmax_cross_entropy_backward, 0.7, serial_cache)
    loss, cache = with_threads(threads, F.softmax_cross_entropy, f.copy(), y, mask, True)
    probs = cache.probs.copy()
    d = with_threads(threads, F.softmax_cross_entropy_backward, 0.7, cache, cache.probs)    # into probs
    assert loss.tobytes() == serial_loss.tobytes()
    assert probs.tobytes() == serial_cache.probs.tobytes() and d.tobytes() == serial_d.tobytes()
    lp = with_threads(threads, F.token_log_prob, f, y)
    assert np.array_equal(lp, with_threads(1, F.token_log_prob, f, y))
    _, c1 = F.softmax_cross_entropy(f.copy(), y, mask, True)
    _, c2 = F.softmax_cross_entropy(f.copy(), y, mask, True)
    d1, db1 = with_threads(1, F.softmax_cross_entropy_backward, 0.7, c1, c1.probs, True)
    d2, db2 = with_threads(threads, F.softmax_cross_entropy_backward, 0.7, c2, c2.probs, True)
    assert d1.tobytes() == d2.tobytes() == serial_d.tobytes() and db1.tobytes() == db2.tobytes()


@pytest.mark.parametrize("threads", [2, 3])
def test_the_output_layer_pass_has_the_serial_bits_on_any_thread_count(threads):
    """The bias, exp2 and the grouped column sums of linear_softmax_cross_entropy: the same bits
    as one thread (the groups of row blocks are fixed, not per thread; 33 blocks, 5 groups)."""
    f, y = logits_and_targets(N=2100, dtype=np.float32)
    rng = np.random.default_rng(5)
    h = rng.standard_normal((f.shape[0], 8)).astype(np.float32)
    W = rng.standard_normal((f.shape[1], 8)).astype(np.float32)
    b = rng.standard_normal(f.shape[1]).astype(np.float32)
    l1, c1 = with_threads(1, F.linear_softmax_cross_entropy, h, W, b, y)
    l2, c2 = with_threads(threads, F.linear_softmax_cross_entropy, h, W, b, y)
    assert l1.tobytes() == l2.tobytes() and c1.probs.tobytes() == c2.probs.tobytes()
    assert c1.prob_sum.tobytes() == c2.prob_sum.tobytes()


@pytest.mark.parametrize("make", [lambda: Adam(1e-3), lambda: Nesterov(0.01, weight_decay=1e-3),
                                  lambda: SGD(0.1)], ids=["adam", "nesterov", "sgd"])
def test_the_blocked_optimizer_step_has_the_serial_bits_on_two_threads(make):
    rng = np.random.default_rng(1)
    step = optim_host.BLOCK_BYTES // 4
    w0 = {"W": rng.normal(size=(40 * step // 64, 64)).astype(np.float32),     # 40 blocks
          "b": rng.normal(size=7).astype(np.float32)}                          # one small array

    def run(threads):
        params, opt = {k: v.copy() for k, v in w0.items()}, make()
        opt.flush_every = 2                                                    # the flush runs too
        for t in range(5):
            g = {k: rng_t.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
            g["W"][: g["W"].shape[0] // 2] = 0                                 # zero blocks
            with_threads(threads, opt.step, params, g)
        return params, opt.state

    rng_t = np.random.default_rng(2)
    serial, serial_state = run(1)
    rng_t = np.random.default_rng(2)
    threaded, threaded_state = run(2)
    for k in w0:
        assert serial[k].tobytes() == threaded[k].tobytes()
        for s in serial_state.get(k, {}):
            assert serial_state[k][s].tobytes() == threaded_state[k][s].tobytes()


def test_set_threads_refuses_what_is_not_a_count():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises((ValueError, TypeError)):
            parallel.set_threads(bad)
    assert parallel.set_threads(3) is None and parallel.threads() == 3


def test_the_environment_sets_the_default_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("SCRATCHNADE_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.threads() == 3                                # ours before BLAS's
    monkeypatch.delenv("SCRATCHNADE_THREADS")
    assert parallel.threads() == 1                                # else the BLAS setting
    monkeypatch.setenv("SCRATCHNADE_THREADS", "many")
    with pytest.raises(ValueError, match="SCRATCHNADE_THREADS"):
        parallel.threads()


def test_running_sums_and_zeroing_have_the_serial_bits_on_two_threads():
    from scratchnade.models.sequence import cumsum_, reverse_cumsum_
    a = np.random.default_rng(3).normal(size=(6, 64, 9000)).astype(np.float32)   # 2.3 MB slabs
    assert len(parallel.column_blocks(a)) > 2
    for fn in (cumsum_, reverse_cumsum_):
        serial = with_threads(1, fn, a.copy())
        assert with_threads(2, fn, a.copy()).tobytes() == serial.tobytes()
        assert np.allclose(serial, np.cumsum(a, axis=0) if fn is cumsum_ else np.cumsum(a[::-1], axis=0)[::-1],
                           rtol=1e-5, atol=1e-5)
    z = a.copy()
    assert not with_threads(2, parallel.zero_, z).any()


@pytest.mark.parametrize("T, B, d", [(4, 32, 33_278), (3, 7, 90_001), (2, 3, 5), (1, 4, 40_000)])   # blocks, ragged, small, T = 1
def test_output_logits_on_the_host_is_matmul_running_sum_and_bias_on_any_thread_count(T, B, d):
    """The host's order-p output layer (transposed copy, running sum and bias fused in column
    blocks on the pool) gives the bits of the plain sequence: G_s = h_s W_s^T, cumsum, + b."""
    from scratchnade.models.sequence import output_logits
    rng = np.random.default_rng(5)
    W = rng.normal(size=(T + 1, d, 3)).astype(np.float32)
    b, h = rng.normal(size=(T + 1, d)).astype(np.float32), rng.normal(size=(T, B, 3)).astype(np.float32)
    want = np.empty((T, B, d), np.float32)
    for s in range(T):
        want[s] = np.ascontiguousarray(np.matmul(W[s], h[s].T).T)     # the same matmul, transposed
    for s in range(1, T):
        want[s] += want[s - 1]
    want += b[:T, None]
    for n in (1, 2):
        got = with_threads(n, output_logits, W, b, h, np.full((T, B, d), np.nan, np.float32))
        assert got.tobytes() == want.tobytes(), n


def test_the_order_p_nade_step_has_the_serial_bits_on_two_threads():
    from scratchnade.models import SequenceNADE
    x = np.random.default_rng(4).integers(0, 70_000, (4, 8))

    def step(threads):
        m = SequenceNADE(70_000, p=4, H=16, seed=0, dtype="float32")
        m.reuse_buffers = True
        opt = Adam(1e-2)
        parallel.set_threads(threads)
        try:
            for _ in range(2):
                loss, g = m.loss_and_grads(x)
                opt.step(m.params, g)
        finally:
            parallel.set_threads(None)
        return loss, m.params
    (l1, p1), (l2, p2) = step(1), step(2)
    assert l1 == l2 and all(p1[k].tobytes() == p2[k].tobytes() for k in p1)
