"""Recurrent NADE: the two tiers agree, gradients, normalisation, autoregressive property,
state carrying, safe gradient arrays, sampling."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade import functional
from scratchnade.backend import asnumpy, to_device
from scratchnade.gradcheck import assert_grads_close, check_grads, check_model
from scratchnade.models import recurrent_nade
from scratchnade.models.recurrent_nade import RecurrentNADE, forward, reference_backward, reference_forward
from scratchnade.models.sequence import SequenceModel
from tiers import assert_tiers_agree, on

F64 = np.float64


def make(V=5, H=4, tied=False, scale=0.8, seed=0, **kw):
    """A float64 model with every parameter random (W_init, c, b too), so no gradient is trivially 0."""
    m = RecurrentNADE(V, H=H, tied=tied, dtype=F64, seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    for v in m.params.values():
        v[...] = rng.normal(0.0, scale, v.shape)
    return m


def host_grads(grads):
    return {k: np.array(asnumpy(g)) for k, g in grads.items()}


def all_sequences(V, T):
    """Every sequence of length T over V tokens, as a (T, V^T) batch."""
    return np.array(list(itertools.product(range(V), repeat=T))).T


# ----------------------------------------------------------------------------- the two tiers

def tier_case(T, B, H, d, tied, carried, dropout, fed, seed):
    """Random float64 params and inputs on the host: (params, x, h0, masks, fed)."""
    m = make(d, H, tied, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, d, (T, B))
    h0 = rng.random((B, H)) if carried else None                      # a state in (0, 1)
    masks = (rng.random((T, B, H)) >= 0.3) / 0.7 if dropout else None   # fixed inverted dropout
    fed = rng.integers(0, d, (T, B)) if fed else None
    return m.params, x, h0, masks, fed


@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 4), H=st.integers(1, 5), d=st.integers(2, 7),
       tied=st.booleans(), carried=st.booleans(), dropout=st.booleans(), fed=st.booleans(),
       seed=st.integers(0, 10_000))
def test_fast_pair_equals_the_reference(device, T, B, H, d, tied, carried, dropout, fed, seed):
    params, x, h0, masks, fed = tier_case(T, B, H, d, tied, carried, dropout, fed, seed)
    params, x, h0, masks, fed = on(device, params, x, h0, masks, fed)
    assert_tiers_agree(recurrent_nade, params, x, h0, masks, fed=fed)
    ref = reference_backward(1.0, reference_forward(params, x, h0, masks, fed=fed)[1])
    if carried:
        assert not asnumpy(ref["W_init"]).any()                    # h_0 was a constant


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("carried", [False, True])
def test_reference_matches_finite_differences(tied, carried):
    params, x, h0, masks, fed = tier_case(4, 3, 3, 5, tied, carried, True, True, seed=11)
    loss, cache = reference_forward(params, x, h0, masks, fed=fed)
    grads = reference_backward(1.0, cache)
    errors = check_grads(lambda: float(reference_forward(params, x, h0, masks, fed=fed)[0]), params, grads)
    assert set(errors) == set(params)
    assert max(errors.values()) < 1e-6, errors


def test_reference_scales_with_dloss():
    params, x, *_ = tier_case(3, 2, 3, 4, False, False, False, False, seed=3)
    one = reference_backward(1.0, reference_forward(params, x)[1])
    half = reference_backward(0.5, reference_forward(params, x)[1])
    assert_grads_close(half, {k: 0.5 * v for k, v in one.items()}, rtol=1e-12)


# ----------------------------------------------------------------------------- gradients

@settings(max_examples=15, deadline=None)
@given(V=st.integers(2, 7), T=st.integers(1, 5), H=st.integers(1, 5), B=st.integers(1, 3),
       tied=st.booleans(), seed=st.integers(0, 1000))
def test_gradients_match_finite_differences(V, T, H, B, tied, seed):
    m = make(V, H, tied, seed=seed)
    x = np.random.default_rng(seed).integers(0, V, (T, B))
    errors = check_model(m, x)
    assert set(errors) == set(m.params)
    assert max(errors.values()) < 1e-6, errors


@settings(max_examples=8, deadline=None)
@given(V=st.integers(2, 6), T=st.integers(2, 5), H=st.integers(1, 4), B=st.integers(1, 3),
       tied=st.booleans(), p=st.sampled_from([0.2, 0.5]), seed=st.integers(0, 1000))
def test_gradients_with_a_fixed_dropout_mask(V, T, H, B, tied, p, seed):
    m = make(V, H, tied, seed=seed, dropout=p)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B))
    masks = (rng.random((T, B, H)) >= p) / (1.0 - p)
    loss, grads = m.loss_and_grads(x, masks=masks)
    errors = check_grads(lambda: m.loss_and_grads(x, masks=masks)[0], m.params, host_grads(grads))
    assert max(errors.values()) < 1e-6, errors
    assert loss != pytest.approx(m.loss(x))          # the mask did change the loss


def test_tied_model_has_one_shared_array_and_both_uses_see_it():
    m = make(V=5, H=3, tied=True)
    assert "W_x" not in m.params and m.params["W_o"].shape == (5, 3)
    x = np.array([[2, 2], [0, 4], [1, 3]])
    f0 = m.logits(x)
    m.params["W_o"][2] += 0.5                        # row of token 2 = x_1 of both windows
    f1 = m.logits(x)
    others = [0, 1, 3, 4]
    assert not np.allclose(f1[0, :, 2], f0[0, :, 2])          # output use: f_1 = b + W_o h_0
    np.testing.assert_allclose(f1[0][:, others], f0[0][:, others])   # h_0 = W_init: unchanged
    assert not np.allclose(f1[1][:, others], f0[1][:, others])        # input use: h_1 moved


def test_tied_gradient_is_the_sum_of_both_uses():
    m = make(V=4, H=3, tied=True)
    x = np.array([[1, 3], [2, 1], [0, 0]])
    _, grads = m.loss_and_grads(x)
    dW = np.array(grads["W_o"])
    m.params["W_o"][1, 0] += 1e-6                    # same perturbation seen by both paths
    lp = m.loss_and_grads(x)[0]
    m.params["W_o"][1, 0] -= 2e-6
    lm = m.loss_and_grads(x)[0]
    assert abs((lp - lm) / 2e-6 - dW[1, 0]) < 1e-7


def test_float32_default_and_init():
    m = RecurrentNADE(50, H=20, init_scale=0.1, seed=3)
    assert m.dtype == np.float32 and set(m.params) == {"W_init", "W_h", "W_x", "c", "W_o", "b"}
    assert m.params["W_x"].shape == (20, 50) and m.params["W_o"].shape == (50, 20)
    for k in ("W_init", "c", "b"):
        assert not m.params[k].any()
    assert abs(m.params["W_o"].std() - 0.1) < 0.01
    again = RecurrentNADE(50, H=20, init_scale=0.1, seed=3)
    assert all(np.array_equal(v, again.params[k]) for k, v in m.params.items())
    loss, grads = m.loss_and_grads(np.random.default_rng(0).integers(0, 50, (6, 3)))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert loss == pytest.approx(np.log(50), rel=0.05)        # near uniform at init


# ----------------------------------------------------------------------------- probabilities

@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("V,T", [(3, 3), (2, 4)])
def test_normalised_over_every_sequence(V, T, tied):
    m = make(V, H=3, tied=tied, scale=1.5)
    x = all_sequences(V, T)
    total = np.exp(m.log_prob(x).sum(axis=0)).sum()
    assert abs(total - 1.0) < 1e-10


def test_autoregressive_property():
    m = make(V=6, H=4)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, (5, 3))
    f = m.logits(x)
    for t in range(5):
        y = x.copy()
        y[t:] = (y[t:] + 1 + rng.integers(0, 5, y[t:].shape)) % 6   # change every token >= t
        g = m.logits(y)
        np.testing.assert_array_equal(g[:t + 1], f[:t + 1])     # f_1..f_{t+1} see x_<=t only
        if t > 0:
            z = x.copy()
            z[t - 1] = (z[t - 1] + 1) % 6
            assert np.all(np.abs(m.logits(z)[t] - f[t]).max(axis=1) > 1e-8)   # sees x_{t-1}


def test_first_logits_come_from_W_init():
    m = make(V=5, H=3)
    f = m.logits(np.array([[1, 4]]))
    expect = m.params["b"] + m.params["W_o"] @ m.params["W_init"]
    np.testing.assert_allclose(f[0], np.stack([expect, expect]))


def test_next_token_logits_match_logits():
    m = make(V=5, H=3)
    x = np.random.default_rng(2).integers(0, 5, (4, 2))
    f = m.logits(x)
    for t in range(4):
        np.testing.assert_allclose(m.next_token_logits(x[:t]), f[t], atol=1e-12)


def test_blocked_softmax_equals_one_block(monkeypatch):
    m = make(V=7, H=3)
    x = np.random.default_rng(3).integers(0, 7, (5, 3))       # 15 rows
    loss, grads = m.loss_and_grads(x)
    grads = host_grads(grads)
    monkeypatch.setattr(functional, "BLOCK_BYTES", 2 * 7 * 8)  # 2 rows per block, last one short
    assert len(functional._row_blocks(np.zeros((15, 7)))) == 8
    loss2, grads2 = m.loss_and_grads(x)
    assert loss2 == pytest.approx(loss, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads2[k], grads[k], rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("tied", [False, True])
def test_reused_buffers_follow_the_window_shape(tied):
    m = make(V=5, H=3, tied=tied)
    m.reuse_buffers = True
    rng = np.random.default_rng(4)
    for shape in [(3, 2), (5, 2), (3, 4), (1, 3), (3, 2)]:
        x = rng.integers(0, 5, shape)
        loss, grads = m.loss_and_grads(x)
        ref_loss, cache = reference_forward(m.params, x)
        ref = reference_backward(1.0, cache)
        assert_grads_close(loss, ref_loss, rtol=1e-12, what="loss")
        assert_grads_close(grads, ref, rtol=1e-10)


# ----------------------------------------------------------------------------- carried state

def test_carried_state_two_windows_equal_one_long_window():
    V, p, B = 6, 3, 2
    stream = np.random.default_rng(5).integers(0, V, (2 * p, B))
    m = make(V, H=4, carry_state=True)
    l1, _ = m.loss_and_grads(stream[:p])
    h_carried = m._state.copy()
    l2, grads = m.loss_and_grads(stream[p:])
    assert (l1 + l2) / 2 == pytest.approx(m.loss(stream), rel=1e-12)   # loss() starts from W_init
    grads = host_grads(grads)
    assert not grads["W_init"].any()                   # h_0 of window 2 is a constant

    def loss2():                                       # window 2 with the carried state held fixed
        return float(forward(m.params, stream[p:], h0=h_carried)[0])
    errors = check_grads(loss2, m.params, grads)
    assert max(errors.values()) < 1e-6, errors


def test_state_resets_on_request_and_on_batch_size_change():
    m = make(V=5, H=3, carry_state=True)
    rng = np.random.default_rng(6)
    x = rng.integers(0, 5, (3, 2))
    fresh = m.loss_and_grads(x)[0]
    carried = m.loss_and_grads(x)[0]
    assert carried != pytest.approx(fresh)             # second call started from the carried h_3
    m.reset_state()
    loss, grads = m.loss_and_grads(x)
    assert loss == pytest.approx(fresh, rel=1e-12)
    assert np.abs(grads["W_init"]).max() > 1e-6        # first window after a reset: h_0 = W_init
    assert not m.loss_and_grads(x)[1]["W_init"].any()  # later windows: h_0 carried, no gradient
    m.load_state_dict(m.state_dict())                  # new weights: forget the old state
    assert m.loss_and_grads(x)[0] == pytest.approx(float(forward(m.params, x)[0]), rel=1e-12)
    y = rng.integers(0, 5, (3, 4))                     # new batch size: start from W_init
    assert m.loss_and_grads(y)[0] == pytest.approx(float(forward(m.params, y)[0]), rel=1e-12)
    off = make(V=5, H=3, carry_state=False)
    assert off.loss_and_grads(x)[0] == pytest.approx(off.loss_and_grads(x)[0], rel=1e-14)


# ----------------------------------------------------------------------------- dropout

def test_dropout_only_while_training():
    m = make(V=5, H=4, dropout=0.5)
    x = np.random.default_rng(7).integers(0, 5, (4, 3))
    clean = float(forward(m.params, x)[0])
    assert m.loss_and_grads(x)[0] != pytest.approx(clean)          # training: a mask was drawn
    with m.eval_mode():
        assert m.loss_and_grads(x)[0] == pytest.approx(clean, rel=1e-13)
    assert m.loss(x) == pytest.approx(clean, rel=1e-13)            # log_prob runs in eval mode
    with pytest.raises(ValueError, match="dropout"):
        RecurrentNADE(5, dropout=1.0)


# ----------------------------------------------------------------------------- sampling

def test_sample_frequencies_match_log_prob():
    V, T, n = 3, 2, 20000
    m = make(V, H=3, scale=1.2)
    s = m.sample(n, T, seed=0)
    assert s.shape == (T, n) and s.dtype.kind == "i"
    seqs = all_sequences(V, T)
    p = np.exp(m.log_prob(seqs).sum(axis=0))
    codes = s[0] * V + s[1]
    freq = np.bincount(codes, minlength=V ** T) / n
    assert 0.5 * np.abs(freq - p).sum() < 0.02


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7, "top_k": 2}, {"prompt": [1, 4, 0]}])
def test_stepwise_sample_equals_the_base_class_sample(kw):
    m = make(V=5, H=3)
    ours = m.sample(6, 7, seed=11, **kw)
    base = SequenceModel.sample(m, 6, 7, seed=11, **kw)        # re-runs the history each step
    np.testing.assert_array_equal(ours, base)
    if "prompt" in kw:
        np.testing.assert_array_equal(ours[:3], np.repeat(np.array(kw["prompt"])[:, None], 6, axis=1))
    assert m.sample(6, 2, seed=1, prompt=[1, 4, 0]).shape == (2, 6)


# ----------------------------------------------------------------------------- errors

def test_clear_errors():
    m = make(V=5, H=3)
    with pytest.raises(ValueError, match="out of range"):
        m.loss_and_grads(np.array([[0, 5]]))
    with pytest.raises(ValueError, match="out of range"):
        m.log_prob(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="time-major"):
        m.loss_and_grads(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="time-major"):
        m.loss_and_grads(np.zeros((2, 0), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        m.loss_and_grads(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="masks"):
        m.loss_and_grads(np.zeros((2, 2), dtype=int), masks=np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match="h0"):
        forward(m.params, np.zeros((2, 2), dtype=int), h0=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="h0"):
        reference_forward(m.params, np.zeros((2, 2), dtype=int), h0=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="fed"):
        reference_forward(m.params, np.zeros((2, 2), dtype=int), fed=np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="temperature"):
        m.sample(2, 3, temperature=0)
    with pytest.raises(ValueError, match="prompt"):
        m.sample(2, 3, prompt=[7])
    with pytest.raises(ValueError, match="prompt"):
        m.sample(2, 3, prompt=np.zeros((1, 3), dtype=int))


# ----------------------------------------------------------------------------- fake GPU

@pytest.mark.parametrize("tied", [False, True])
def test_runs_on_the_strict_fake_device(fake_device, tied):
    cpu = make(V=5, H=3, tied=tied, carry_state=True, dropout=0.3)
    dev = make(V=5, H=3, tied=tied, carry_state=True, dropout=0.3).to(fake_device)
    x = np.random.default_rng(8).integers(0, 5, (4, 2))
    xd = to_device(x, fake_device)
    for _ in range(2):                                  # second call uses the carried state
        l_cpu, g_cpu = cpu.loss_and_grads(x)
        l_dev, g_dev = dev.loss_and_grads(xd)
        assert l_dev == pytest.approx(l_cpu, rel=1e-12)     # same seed: same dropout masks
        for k in g_cpu:
            np.testing.assert_allclose(asnumpy(g_dev[k]), g_cpu[k], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(asnumpy(dev.log_prob(xd)), cpu.log_prob(x), rtol=1e-12)
    np.testing.assert_array_equal(dev.sample(4, 5, seed=3, prompt=[2]), cpu.sample(4, 5, seed=3, prompt=[2]))


def test_stream_perplexity_carries_the_state_through_each_stream():
    """mode='stream' equals scoring each whole stream as one long window from W_init."""
    from scratchnade.evaluate import perplexity
    m = make(V=6, H=4)
    ids = np.random.default_rng(7).integers(0, 6, size=47)
    B, p = 3, 4
    r = perplexity(m, ids, p=p, batch_size=B, mode="stream")
    L = ids.size // B
    streams = ids[:L * B].reshape(B, L).T                       # (L, B): column j is stream j
    want = float(m.log_prob(streams).sum()) / streams.size
    assert r["tokens"] == streams.size
    assert r["nll"] == pytest.approx(-want, rel=1e-12)
    chunked = perplexity(m, ids[:L * B], p=p, batch_size=B, mode="chunked")
    assert chunked["nll"] != pytest.approx(r["nll"], rel=1e-6)  # windows from W_init differ


def test_stream_mode_needs_a_recurrent_model():
    from scratchnade.evaluate import perplexity
    from scratchnade.models import SequenceNADE
    with pytest.raises(ValueError, match="stream"):
        perplexity(SequenceNADE(5, p=3, H=2), np.arange(20) % 5, mode="stream")
