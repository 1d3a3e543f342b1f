"""The PyTorch twins of benchmarks/torch_twins.py (used by benchmarks/wikitext2.py and nade_speed.py to
compare speed and learning curves) compute our loss and our gradients from the same parameter values.
Skipped without torch."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from torch_twins import TorchNADE, TorchTransformer, twin  # noqa: E402

from scratchnade.gradcheck import assert_grads_close  # noqa: E402
from scratchnade.models import Transformer  # noqa: E402
from scratchnade.models.nade import NADE  # noqa: E402


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


def random_nade(D, H, seed=0, dtype=np.float64):
    """A small binary NADE with every parameter random and of order 1, so no gradient is trivially 0."""
    m = NADE(D, H=H, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    m.load_state_dict({k: rng.normal(0.0, 1.0, v.shape) for k, v in m.params.items()})
    return m


@pytest.mark.parametrize("D,H,B,density", [(6, 3, 5, 0.5), (11, 4, 7, 0.2), (1, 2, 3, 0.5)])
def test_the_nade_twin_gives_our_loss_and_gradients(D, H, B, density):
    m = random_nade(D, H)
    x = (np.random.default_rng(2).random((B, D)) < density).astype(np.float64)
    x[0] = 1.0                                                      # every pixel on in one image: all of dW
    loss, grads = m.loss_and_grads(x)
    net = twin(m)
    assert isinstance(net, TorchNADE)
    twin_loss, state = net(torch.from_numpy(x))
    twin_loss.backward()
    assert state is None
    assert twin_loss.item() == pytest.approx(loss, rel=1e-12)
    assert_grads_close(net.grads(), grads, rtol=1e-12, atol=1e-14)


def test_the_nade_twin_keeps_float32_and_agrees_to_its_round_off():
    m = random_nade(30, 8, dtype=np.float32)
    x = (np.random.default_rng(3).random((6, 30)) < 0.3).astype(np.float32)
    loss, grads = m.loss_and_grads(x)
    net = twin(m)
    twin_loss, _ = net(torch.from_numpy(x))
    twin_loss.backward()
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(g.dtype == np.float32 for g in net.grads().values())
    assert twin_loss.item() == pytest.approx(loss, rel=1e-5)
    assert_grads_close(net.grads(), grads, rtol=1e-4)


def test_nade_speed_runs_our_side_alone_and_reports_its_peak_memory(data_dir):
    """benchmarks/nade_speed.py --side ours: one JSON line with images/s and max RSS, torch never imported."""
    if not (data_dir / "binarized-mnist" / "binarized_mnist.npz").is_file():
        pytest.skip("binarized MNIST not in the data folder")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "nade_speed.py"
    out = subprocess.run([sys.executable, str(script), "--side", "ours", "--hidden", "8", "--steps", "2",
                          "--threads", "1", "--data-dir", str(data_dir)],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert (r["side"], r["H"], r["B"], r["steps"], r["threads"]) == ("ours", 8, 100, 2, 1)
    assert r["images_s"] > 0
    assert 10 < r["max_rss_setup_mib"] <= r["max_rss_mib"] < 4096          # MiB, not KiB or bytes
    assert r["steps_mib"] == pytest.approx(r["max_rss_mib"] - r["rss_before_steps_mib"], abs=0.11)
