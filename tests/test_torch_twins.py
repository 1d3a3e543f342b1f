"""The PyTorch twins of benchmarks/torch_twins.py (used by benchmarks/wikitext2.py to compare speed and
learning curves) compute our loss and our gradients from the same parameter values.  Skipped without torch."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from torch_twins import TorchTransformer, twin  # noqa: E402

from scratchnade.gradcheck import assert_grads_close  # noqa: E402
from scratchnade.models import Transformer  # noqa: E402


def random_transformer(tied, layers, heads, d=6, V=7, context=5, seed=0, dtype=np.float64):
    """A small model with every parameter random (gains around 1), so no gradient is trivially 0."""
    m = Transformer(V, context=context, d_model=d, layers=layers, heads=heads, tied=tied, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    m.load_state_dict({k: rng.normal(0.0, 0.5, v.shape) + (1.0 if k[0] == "g" else 0.0)
                       for k, v in m.params.items()})
    return m


@pytest.mark.parametrize("tied,layers,heads,T", [(False, 1, 2, 5), (True, 2, 3, 5), (False, 2, 1, 3)])
def test_the_transformer_twin_gives_our_loss_and_gradients(tied, layers, heads, T):
    m = random_transformer(tied, layers, heads)
    x = np.random.default_rng(2).integers(0, 7, (T, 4))
    loss, grads = m.loss_and_grads(x)
    net = twin(m)
    assert isinstance(net, TorchTransformer)
    twin_loss, state = net(torch.from_numpy(x))
    twin_loss.backward()
    assert state is None
    assert twin_loss.item() == pytest.approx(loss, rel=1e-12)
    assert_grads_close(net.grads(), grads, rtol=1e-10, atol=1e-14)


def test_the_twin_keeps_float32_and_agrees_to_its_round_off():
    m = random_transformer(False, 2, 2, d=8, dtype=np.float32)
    x = np.random.default_rng(3).integers(0, 7, (5, 3))
    loss, grads = m.loss_and_grads(x)
    net = twin(m)
    twin_loss, _ = net(torch.from_numpy(x))
    twin_loss.backward()
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert twin_loss.item() == pytest.approx(loss, rel=1e-5)
    assert_grads_close(net.grads(), grads, rtol=1e-4)


def test_the_twins_dropout_is_on_only_while_training():
    m = random_transformer(False, 2, 2)
    m.dropout = 0.5
    x = torch.from_numpy(np.random.default_rng(4).integers(0, 7, (5, 4)))
    net = twin(m)
    clean = Transformer.loss(m, x.numpy())                           # log_prob runs in eval mode
    assert net(x)[0].item() != pytest.approx(clean)                   # training: dropped
    net.eval()
    assert net(x)[0].item() == pytest.approx(clean, rel=1e-12)
