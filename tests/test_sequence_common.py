"""What every token model shares: init_bias (unigram log-frequencies), logits into a given buffer,
and the speed helpers of scratchnade.models.sequence against their plain definitions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy
from scratchnade.models import DeepNADE, RecurrentNADE, SequenceNADE, SoftmaxFVSBN, Transformer
from scratchnade.models.sequence import cumsum_, flat_rows, grad_buffer, output_logits, reverse_cumsum_

F64 = np.float64
MODELS = {"rnn": lambda: RecurrentNADE(4, H=3, dtype=F64),
          "rnn-tied": lambda: RecurrentNADE(4, H=3, tied=True, dtype=F64),
          "softmax-fvsbn": lambda: SoftmaxFVSBN(4, p=3, dtype=F64),
          "nade": lambda: SequenceNADE(4, p=3, H=3, dtype=F64),
          "deep-nade": lambda: DeepNADE(4, p=3, H=3, layers=2, dtype=F64),
          "transformer": lambda: Transformer(4, context=3, d_model=4, layers=1, heads=2, dtype=F64),
          "transformer-tied": lambda: Transformer(4, context=3, d_model=4, layers=2, heads=1, tied=True, dtype=F64)}


@pytest.mark.parametrize("name", MODELS)
def test_with_zero_weights_every_position_predicts_the_smoothed_unigram(name):
    model = MODELS[name]()
    model.load_state_dict({k: np.zeros(v.shape) for k, v in model.params.items()})
    ids = np.array([0, 0, 0, 1, 1, 2, 0, 1])                     # counts 4, 3, 1, 0
    model.init_bias(ids, smoothing=0.5)
    expected = (np.array([4, 3, 1, 0]) + 0.5) / (8 + 4 * 0.5)
    x = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 1, 1]])      # (T=3, B=4)
    probs = np.exp(asnumpy(model.log_prob(x)))
    np.testing.assert_allclose(probs, expected[x], rtol=1e-12)


def test_bad_ids_are_refused_and_leave_the_bias_alone():
    model = RecurrentNADE(4, H=3, dtype=F64)
    before = np.array(asnumpy(model.params["b"]))
    with pytest.raises(ValueError, match="out of range"):
        model.init_bias(np.array([0, 4]))
    with pytest.raises(ValueError, match="token 3 never occurs"):
        model.init_bias(np.array([0, 1, 2]), smoothing=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        model.init_bias(np.array([], dtype=np.int64))
    np.testing.assert_array_equal(asnumpy(model.params["b"]), before)


@pytest.mark.parametrize("name", MODELS)
def test_logits_into_a_buffer_equal_the_fresh_ones_and_log_prob_is_unchanged(name):
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    model.load_state_dict({k: rng.normal(0.0, 0.7, v.shape) for k, v in model.params.items()})
    x = rng.integers(0, 4, size=(3, 5))
    fresh = np.array(asnumpy(model.logits(x)))
    buf = np.full((3, 5, 4), np.nan)
    out = model.logits(x, out=buf)
    assert np.shares_memory(out, buf)
    np.testing.assert_allclose(buf, fresh, rtol=1e-12)
    shifted = fresh - fresh.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))             # log softmax
    expected = np.take_along_axis(logp, x[..., None], axis=-1)[..., 0]
    for _ in range(2):                                   # the second call reuses the model's buffer
        np.testing.assert_allclose(asnumpy(model.log_prob(x)), expected, rtol=1e-10)


# ----------------------------------------------------------------------------- the speed helpers

@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 5), B=st.integers(1, 3), H=st.integers(1, 4), seed=st.integers(0, 99))
def test_running_sums_equal_their_definitions(T, B, H, seed):
    """cumsum_: a_t <- sum_{s<=t} a_s; reverse_cumsum_: a_s <- sum_{t>=s} a_t; both in place."""
    a = np.random.default_rng(seed).normal(size=(T, B, H))
    want = np.stack([sum(a[s] for s in range(t + 1)) for t in range(T)])
    want_rev = np.stack([sum(a[t] for t in range(s, T)) for s in range(T)])
    b = a.copy()
    assert cumsum_(b) is b
    np.testing.assert_allclose(b, want, rtol=1e-12)
    c = a.copy()
    assert reverse_cumsum_(c) is c
    np.testing.assert_allclose(c, want_rev, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(p=st.integers(1, 4), d=st.integers(1, 5), H=st.integers(1, 3), B=st.integers(1, 3),
       data=st.data())
def test_flat_rows_and_output_logits_equal_the_loops(p, d, H, B, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 99), label="seed"))
    T = data.draw(st.integers(1, p), label="T")
    x = rng.integers(0, d, size=(T, B))
    V = rng.normal(size=(p, d, H))
    rows = flat_rows(x, d)                                     # row s*d + x_s of the (p*d, H) view
    np.testing.assert_array_equal(V.reshape(p * d, H)[rows],
                                  np.stack([V[s, x[s]] for s in range(T)]).reshape(T * B, H))
    W, b, h = rng.normal(size=(p, d, H)), rng.normal(size=(p, d)), rng.normal(size=(T, B, H))
    want = np.stack([b[t] + sum(h[s] @ W[s].T for s in range(t + 1)) for t in range(T)])
    np.testing.assert_allclose(output_logits(W, b, h), want, rtol=1e-12, atol=1e-12)
    buf = np.full((T, B, d), np.nan)
    assert output_logits(W, b, h, out=buf) is buf
    np.testing.assert_allclose(buf, want, rtol=1e-12, atol=1e-12)


def test_grad_buffer_allocates_without_out_and_checks_a_given_one():
    like = np.zeros((2, 3))
    new = grad_buffer(None, "W", like)
    assert new.shape == like.shape and not np.shares_memory(new, like)
    assert grad_buffer({}, "W", like) is not like                   # no entry: allocate too
    buf = np.empty((2, 3))
    assert grad_buffer({"W": buf}, "W", like) is buf
    with pytest.raises(ValueError, match="gradient buffer 'W'"):
        grad_buffer({"W": np.empty((3, 2))}, "W", like)
    with pytest.raises(ValueError, match="gradient buffer 'W'"):
        grad_buffer({"W": np.empty((2, 3), dtype=np.float32)}, "W", like)
