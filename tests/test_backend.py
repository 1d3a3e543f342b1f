"""The array-module shim and the strict fake device that stands in for a GPU on CI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchnade import backend, functional as F
from scratchnade.backend import asnumpy, device_of, get_xp, to_device
from fakedevice import DeviceArray, MixedDeviceError

ROOT = Path(__file__).resolve().parent.parent


def test_get_xp_is_numpy_for_host_arrays_and_scalars():
    assert get_xp(np.zeros(2), 3.0, np.float32(1)) is np
    assert get_xp() is np


def test_to_device_round_trip_on_fake_device(fake_device):
    a = np.arange(6.0).reshape(2, 3)
    d = to_device(a, fake_device)
    assert isinstance(d, DeviceArray) and device_of(d) == fake_device
    assert get_xp(d).zeros(2).__class__ is DeviceArray
    np.testing.assert_array_equal(asnumpy(d), a)
    assert to_device(d, fake_device) is d            # already there: no copy
    assert isinstance(to_device(d, "cpu"), np.ndarray)


def test_fake_device_refuses_host_arrays(fake_device):
    d = to_device(np.ones(3), fake_device)
    with pytest.raises(MixedDeviceError):
        d + np.ones(3)                               # host array in device arithmetic
    with pytest.raises(MixedDeviceError):
        np.zeros(3) * d
    with pytest.raises(MixedDeviceError):
        np.exp(np.asarray(d))                        # implicit conversion
    with pytest.raises(MixedDeviceError):
        np.sum(d)                                    # numpy function on a device array
    with pytest.raises(MixedDeviceError):
        get_xp(d).dot(d, np.ones(3))
    assert float((d * 2.0 + np.float32(1)).sum()) == 9.0   # scalars are fine


def test_default_device_from_environment(monkeypatch):
    monkeypatch.delenv("SCRATCHNADE_DEVICE", raising=False)
    assert backend.default_device() == "cpu"
    monkeypatch.setenv("SCRATCHNADE_DEVICE", "fake")
    assert device_of(to_device(np.ones(2))) == "fake"


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        to_device(np.ones(2), "tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present")
def test_gpu_without_cupy_or_gpu_gives_clear_error():
    with pytest.raises(backend.DeviceUnavailableError, match="cupy-cuda12x|no GPU|CUDA"):
        to_device(np.ones(2), "gpu")


def test_resolve_dtype():
    assert backend.resolve_dtype() == np.float32
    assert backend.resolve_dtype("float64") == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        backend.resolve_dtype(np.int32)


def test_scatter_add_accumulates_repeats(device):
    a = to_device(np.zeros(4), device)
    backend.scatter_add(a, to_device(np.array([1, 1, 3]), device), to_device(np.array([1.0, 2.0, 5.0]), device))
    np.testing.assert_array_equal(asnumpy(a), [0, 3, 0, 5])


def test_functional_ops_run_end_to_end_on_fake_device(fake_device, rng):
    """Every op, forward and backward, stays on the device (any host temporary would raise)."""
    put = lambda a: to_device(a, fake_device)
    x = put(rng.normal(size=(4, 5)) * 1e4)
    ids = put(np.array([0, 2, 2, 4]))
    for fwd, bwd in [(F.softplus, F.softplus_backward), (F.log_sigmoid, F.log_sigmoid_backward),
                     (F.relu, F.relu_backward)]:
        y = fwd(x)
        assert isinstance(y, DeviceArray) and isinstance(bwd(y, x), DeviceArray)
    y = F.sigmoid(x)
    assert isinstance(F.sigmoid_backward(y, y), DeviceArray)
    logp = F.log_softmax(x)
    assert isinstance(F.log_softmax_backward(logp, logp), DeviceArray)
    loss, cache = F.softmax_cross_entropy(x, ids, mask=put(np.array([1.0, 1, 0, 1])))
    assert isinstance(F.softmax_cross_entropy_backward(1.0, cache), DeviceArray)
    assert np.isfinite(float(loss))
    assert isinstance(F.token_log_prob(x, ids), DeviceArray)
    xb = put((rng.random((4, 5)) < 0.5).astype(float))
    F.check_binary(xb)
    assert isinstance(F.bernoulli_nll_backward(F.bernoulli_nll(x, xb), x, xb), DeviceArray)
    E = put(rng.normal(size=(5, 3)))
    dE = F.embedding_backward(F.embedding(E, ids), ids, 5)
    assert isinstance(dE, DeviceArray)
    yd, mask = F.dropout(x, 0.5, np.random.default_rng(1))
    assert isinstance(F.dropout_backward(yd, mask), DeviceArray)


def test_only_backend_imports_cupy():
    hits = subprocess.run(["grep", "-rlE", r"^\s*(import cupy|from cupy)", str(ROOT / "scratchnade")],
                          capture_output=True, text=True).stdout.split()
    assert [Path(h).name for h in hits] in ([], ["backend.py"])


def test_importing_the_package_does_not_import_cupy():
    code = "import sys, scratchnade, scratchnade.functional, scratchnade.backend; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.gpu
def test_functional_ops_on_real_gpu(rng):
    x = to_device(rng.normal(size=(8, 7)), "gpu")
    ids = to_device(rng.integers(0, 7, size=8), "gpu")
    loss, cache = F.softmax_cross_entropy(x, ids)
    ref, _ = F.softmax_cross_entropy(asnumpy(x), asnumpy(ids))
    assert abs(float(loss) - float(ref)) < 1e-12
    np.testing.assert_allclose(asnumpy(F.softmax_cross_entropy_backward(1.0, cache)),
                               F.softmax_cross_entropy_backward(1.0, F.softmax_cross_entropy(asnumpy(x), asnumpy(ids))[1]))


@pytest.mark.parametrize("N", [0, 1, 13, 400])
def test_sum_rows_by_id_is_the_scatter_add_of_each_distinct_id(N):
    rng = np.random.default_rng(N)
    ids, values = rng.integers(0, 9, size=N), rng.standard_normal((N, 5))
    values[:1] = -0.0                                       # a lone -0.0 row sums to +0.0, as into zeros
    distinct, sums = backend.sum_rows_by_id(ids, values)
    assert distinct.tolist() == sorted(set(ids.tolist())) and sums.shape == (len(distinct), 5)
    want = backend.scatter_add(np.zeros((9, 5)), ids, values)
    np.testing.assert_allclose(sums, want[distinct], rtol=1e-13, atol=1e-15)
    assert not np.signbit(sums[sums == 0]).any()
