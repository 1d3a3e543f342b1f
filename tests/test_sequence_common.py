"""What every token model shares: init_bias (unigram log-frequencies) and logits into a given buffer."""
import numpy as np
import pytest

from scratchnade.backend import asnumpy
from scratchnade.models import DeepNADE, RecurrentNADE, SequenceNADE, SoftmaxFVSBN

F64 = np.float64
MODELS = {"rnn": lambda: RecurrentNADE(4, H=3, dtype=F64),
          "rnn-tied": lambda: RecurrentNADE(4, H=3, tied=True, dtype=F64),
          "softmax-fvsbn": lambda: SoftmaxFVSBN(4, p=3, dtype=F64),
          "nade": lambda: SequenceNADE(4, p=3, H=3, dtype=F64),
          "deep-nade": lambda: DeepNADE(4, p=3, H=3, layers=2, dtype=F64)}


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
