"""SequenceModel.init_bias: the output bias of every token model starts at the unigram log-frequencies."""
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
    with pytest.raises(ValueError, match="non-empty"):
        model.init_bias(np.array([], dtype=np.int64))
    np.testing.assert_array_equal(asnumpy(model.params["b"]), before)
