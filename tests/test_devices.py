"""Every model gives the same numbers on another device as on the host.

The strict fake device runs on every machine (it catches host arrays sneaking into the
device path); the real GPU run is marked `gpu` and skips without CuPy and a GPU.
"""
import numpy as np
import pytest

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.registry import MODELS, gradcheck_case

CASES = [(name, variant) for name, spec in MODELS.items() for variant in spec.variants]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in variant.items()) or 'default'}" for name, variant in CASES]


def _same_on(device, name, variant, seed=0):
    """Build one small float64 model on the host and on `device`; compare loss, grads, log_prob."""
    host, batch = gradcheck_case(MODELS[name], variant, np.random.default_rng(seed))
    dev, _ = gradcheck_case(MODELS[name], variant, np.random.default_rng(seed), device=device)
    dev.load_state_dict(host.state_dict())
    x = to_device(batch, device)
    loss, grads = dev.loss_and_grads(x)
    ref_loss, ref_grads = host.loss_and_grads(batch)
    assert abs(float(loss) - float(ref_loss)) <= 1e-10 * max(1.0, abs(float(ref_loss)))
    for k, g in grads.items():
        assert device_of(g) == device, k
        np.testing.assert_allclose(asnumpy(g), asnumpy(ref_grads[k]), rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(asnumpy(dev.log_prob(x)), asnumpy(host.log_prob(batch)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,variant", CASES, ids=IDS)
def test_every_model_on_the_strict_fake_device(fake_device, name, variant):
    _same_on(fake_device, name, variant)


@pytest.mark.gpu
@pytest.mark.parametrize("name,variant", CASES, ids=IDS)
def test_every_model_on_the_gpu(name, variant):
    _same_on("gpu", name, variant)
