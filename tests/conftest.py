"""Shared fixtures: the strict fake device, the real GPU marker, the data directory."""
import os
from pathlib import Path

import numpy as np
import pytest

from scratchnade import backend
from fakedevice import DeviceArray, fake_xp, from_fake, to_fake

backend.register_device("fake", fake_xp, DeviceArray, to_fake, from_fake)


@pytest.fixture
def fake_device():
    """Name of the strict fake GPU device: arrays on it refuse to mix with NumPy arrays."""
    return "fake"


@pytest.fixture(params=["cpu", "fake"])
def device(request):
    """Run a test on the host and on the strict fake device."""
    return request.param


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests cleanly when CuPy or a GPU is missing."""
    if backend.gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _default_data_dir():
    here = Path(__file__).resolve().parent.parent
    for candidate in (os.environ.get("SCRATCHNADE_DATA"), here.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir():
    """Directory with the real data sets (SCRATCHNADE_DATA, else ../shared/data); skip if absent."""
    path = _default_data_dir()
    if path is None:
        pytest.skip("real data not found: set SCRATCHNADE_DATA to a folder with the data sets")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
