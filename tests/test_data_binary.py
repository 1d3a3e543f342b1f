"""Downloads (file:// URLs only, no network), the binarized-MNIST loader and converter, mini-batches."""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.data import binary, download as dl
from scratchnade.data.binary import load_binarized_mnist, minibatches, parse_amat
from scratchnade.data.download import ChecksumError, DownloadError, MissingDataError


def leftovers(folder):
    """Temporary download files left in `folder`."""
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".part")]


# ----------------------------------------------------------------------------- data_dir, hashes

def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNADE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert dl.data_dir() == tmp_path / "env"
    monkeypatch.delenv("SCRATCHNADE_DATA")
    assert dl.data_dir() == tmp_path / "xdg" / "scratchnade"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.data_dir() == tmp_path / "home" / ".cache" / "scratchnade"


def test_sha256_file_and_array(tmp_path, fake_device):
    payload = bytes(range(256)) * 5000                     # 1.28 MB: more than one 1 MiB chunk
    (tmp_path / "f.bin").write_bytes(payload)
    assert dl.sha256_file(tmp_path / "f.bin") == hashlib.sha256(payload).hexdigest()
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert dl.sha256_array(a) == hashlib.sha256(bytes(range(12))).hexdigest()
    assert dl.sha256_array(a.T) == hashlib.sha256(np.ascontiguousarray(a.T).tobytes()).hexdigest()
    assert dl.sha256_array(a.T) != dl.sha256_array(a)       # C order of the logical array
    assert dl.sha256_array(a.astype(np.float32)) != dl.sha256_array(a)   # dtype matters
    assert dl.sha256_array(to_device(a, fake_device)) == dl.sha256_array(a)


# ----------------------------------------------------------------------------- download

@pytest.fixture
def source(tmp_path):
    """A local file served through a file:// URL, and its sha256."""
    src = tmp_path / "src" / "payload.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3000))
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_download_file_url(tmp_path, source):
    src, digest = source
    dest = tmp_path / "out" / "sub" / "payload.bin"
    assert dl.download(src.as_uri(), dest, sha256=digest.upper(), progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert leftovers(dest.parent) == []
    dl.download(src.as_uri(), dest, progress=False)         # no hash: replaces the existing file
    assert dest.read_bytes() == src.read_bytes()


def test_download_hash_mismatch_leaves_nothing(tmp_path, source):
    src, digest = source
    dest = tmp_path / "out" / "payload.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        dl.download(src.as_uri(), dest, sha256=wrong, progress=False)
    msg = str(err.value)
    assert "payload.bin" in msg and wrong in msg and digest in msg
    assert not dest.exists() and leftovers(dest.parent) == []
    dest.write_bytes(b"old")                                # an existing file survives a failed update
    with pytest.raises(ChecksumError):
        dl.download(src.as_uri(), dest, sha256=wrong, progress=False)
    assert dest.read_bytes() == b"old" and leftovers(dest.parent) == []


def test_download_failing_url_leaves_nothing(tmp_path):
    url = (tmp_path / "does-not-exist.bin").as_uri()
    dest = tmp_path / "out" / "x.bin"
    with pytest.raises(DownloadError) as err:
        dl.download(url, dest, progress=False)
    assert isinstance(err.value, OSError)
    assert url in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_missing_data_error_message(tmp_path):
    err = MissingDataError(tmp_path / "set" / "f.npz", "call get_it()")
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert str(tmp_path / "set" / "f.npz") in msg and "SCRATCHNADE_DATA" in msg and "get_it()" in msg


# ----------------------------------------------------------------------------- the real data

def test_load_real_binarized_mnist(data_dir):
    if not binary.binarized_mnist_path(data_dir).is_file():
        pytest.skip("binarized-mnist/binarized_mnist.npz not in the data directory")
    d = load_binarized_mnist(data_dir)                      # verify=True: the published hashes
    assert {k: v.shape for k, v in d.items()} == {"train": (50000, 784), "valid": (10000, 784),
                                                  "test": (10000, 784)}
    assert all(v.dtype == np.uint8 for v in d.values())
    assert d["train"].mean() == pytest.approx(0.130562, abs=1e-6)
    assert d["test"].mean() == pytest.approx(0.132512, abs=1e-6)


# ----------------------------------------------------------------------------- loader errors on fakes

def fake_splits(rng, n=(6, 4, 3)):
    return {s: (rng.random((k, 784)) < 0.2).astype(np.uint8) for s, k in zip(binary.SPLITS, n)}


def write_npz(root, **arrays):
    path = binary.binarized_mnist_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def test_load_fake(tmp_path, rng, monkeypatch):
    data = fake_splits(rng)
    write_npz(tmp_path, **data)
    got = load_binarized_mnist(tmp_path, dtype=np.float32, verify=False, check_counts=False)
    for s in binary.SPLITS:
        assert got[s].dtype == np.float32 and np.array_equal(got[s], data[s])
    with pytest.raises(ValueError, match="'train' has 6 images; expected 50000"):
        load_binarized_mnist(tmp_path, verify=False)
    with pytest.raises(ChecksumError, match="'train'"):
        load_binarized_mnist(tmp_path, check_counts=False)
    monkeypatch.setenv("SCRATCHNADE_DATA", str(tmp_path))   # found through the environment variable
    monkeypatch.setattr(binary, "SHA256", {s: dl.sha256_array(x) for s, x in data.items()})
    got = load_binarized_mnist(check_counts=False)          # verify=True passes with the right hashes
    assert np.array_equal(got["test"], data["test"])


def test_load_missing_file(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError) as err:
        load_binarized_mnist(tmp_path)
    msg = str(err.value)
    assert "binarized_mnist.npz" in msg and str(tmp_path / "binarized-mnist") in msg
    assert "SCRATCHNADE_DATA" in msg and "download_binarized_mnist" in msg and "download=True" in msg


@pytest.mark.parametrize("split, bad, match", [
    ("valid", lambda x: x[:, :783], r"'valid' has shape \(4, 783\); expected \(N, 784\)"),
    ("test", lambda x: x.reshape(3, 28, 28), r"'test' has shape \(3, 28, 28\)"),
    ("valid", lambda x: np.where(np.arange(784) == 5, 2, x).astype(np.uint8), "'valid' has 4 non-binary"),
    ("train", lambda x: x * 0.5, "'train' has dtype float64; expected uint8"),   # refused from the header
])
def test_load_rejects_bad_splits(tmp_path, rng, split, bad, match):
    data = fake_splits(rng)
    data[split] = bad(data[split])
    write_npz(tmp_path, **data)
    with pytest.raises(ValueError, match=match):
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)


def test_load_rejects_missing_arrays_and_pickles(tmp_path, rng):
    data = fake_splits(rng)
    write_npz(tmp_path, train=data["train"], valid=data["valid"])
    with pytest.raises(dl.DataFileError, match=r"lacks the arrays \['test'\]"):
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)
    write_npz(tmp_path, train=np.array([{"evil": 1}], dtype=object), valid=data["valid"], test=data["test"])
    with pytest.raises(dl.DataFileError, match="'train' holds dtype object, not plain numbers"):   # never unpickled
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)


# ----------------------------------------------------------------------------- .amat conversion

def to_amat(x, newline="\n", sep=" ", trailing=True):
    text = newline.join(sep.join(str(v) for v in row) for row in x)
    return (text + (newline if trailing else "")).encode()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 5), ncols=st.integers(1, 7), newline=st.sampled_from(["\n", "\r\n"]),
       sep=st.sampled_from([" ", "\t", "  "]), trailing=st.booleans(), seed=st.integers(0, 2**16))
def test_parse_amat_round_trip(n, ncols, newline, sep, trailing, seed):
    x = (np.random.default_rng(seed).random((n, ncols)) < 0.5).astype(np.uint8)
    got = parse_amat(to_amat(x, newline, sep, trailing), ncols)
    assert got.dtype == np.uint8 and got.shape == (n, ncols) and np.array_equal(got, x)


def test_parse_amat_formats_and_errors():
    assert np.array_equal(parse_amat(b"0 1 1\n\n1 0 0\n", 3), [[0, 1, 1], [1, 0, 0]])   # blank line
    assert np.array_equal(parse_amat(b"0.0 1.0 1\n1e0 0 0\n", 3), [[0, 1, 1], [1, 0, 0]])  # loadtxt path
    with pytest.raises(ValueError, match="image 1 .* has 2 values; expected 3"):
        parse_amat(b"0 1 1\n1 0\n", 3)
    with pytest.raises(ValueError):
        parse_amat(b"0 1 10\n1 0 0\n", 3)                    # "10" is not a pixel
    with pytest.raises(ValueError):
        parse_amat(b"0 1 0.5\n1 0 0\n", 3)


@pytest.fixture
def amat_source(tmp_path, rng, monkeypatch):
    """Tiny fake .amat files behind file:// URLs, with COUNTS and SHA256 patched to match them."""
    data = fake_splits(rng)
    src = tmp_path / "server"
    src.mkdir()
    for s, x in data.items():
        (src / f"binarized_mnist_{s}.amat").write_bytes(to_amat(x))
    monkeypatch.setattr(binary, "AMAT_URL", src.as_uri() + "/binarized_mnist_{split}.amat")
    monkeypatch.setattr(binary, "COUNTS", {s: len(x) for s, x in data.items()})
    monkeypatch.setattr(binary, "SHA256", {s: dl.sha256_array(x) for s, x in data.items()})
    return src, data


def test_download_binarized_mnist(tmp_path, amat_source):
    src, data = amat_source
    root = tmp_path / "data"
    path = binary.download_binarized_mnist(root, progress=False)
    assert path == binary.binarized_mnist_path(root)
    assert sorted(p.name for p in path.parent.iterdir()) == ["binarized_mnist.npz"]  # .amat removed
    got = load_binarized_mnist(root)                        # counts and hashes checked (patched)
    assert all(np.array_equal(got[s], data[s]) for s in binary.SPLITS)
    binary.download_binarized_mnist(root, keep_amat=True, progress=False)
    assert len(list(path.parent.glob("*.amat"))) == 3


def test_load_with_download(tmp_path, amat_source):
    src, data = amat_source
    got = load_binarized_mnist(tmp_path / "data", download=True)
    assert np.array_equal(got["valid"], data["valid"])


def test_download_binarized_mnist_failures(tmp_path, amat_source, monkeypatch):
    src, data = amat_source
    root = tmp_path / "data"
    monkeypatch.setitem(binary.SHA256, "valid", "f" * 64)
    with pytest.raises(ChecksumError, match=r"'valid'.*\n.*binarized_mnist_valid.amat; delete it"):
        binary.download_binarized_mnist(root, progress=False)
    assert not binary.binarized_mnist_path(root).exists()
    (src / "binarized_mnist_test.amat").unlink()
    for p in binary.binarized_mnist_path(root).parent.glob("*.amat"):
        p.unlink()
    monkeypatch.setitem(binary.SHA256, "valid", dl.sha256_array(data["valid"]))
    with pytest.raises(DownloadError, match="binarized_mnist_test.amat"):
        binary.download_binarized_mnist(root, progress=False)
    folder = binary.binarized_mnist_path(root).parent
    assert not binary.binarized_mnist_path(root).exists() and leftovers(folder) == []


# ----------------------------------------------------------------------------- mini-batches

def test_minibatches_cover_each_row_once():
    x = np.repeat(np.arange(23)[:, None], 4, axis=1)        # row i is all i
    batches = list(minibatches(x, 5, rng=0))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    ids = np.concatenate([b[:, 0] for b in batches])
    assert sorted(ids) == list(range(23)) and not np.array_equal(ids, np.arange(23))
    assert [len(b) for b in minibatches(x, 5, rng=0, drop_last=True)] == [5, 5, 5, 5]
    ordered = np.concatenate(list(minibatches(x, 5, shuffle=False)))
    assert np.array_equal(ordered, x)
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(x, 0)


def test_minibatches_seed_dtype_and_epochs():
    x = (np.random.default_rng(1).random((40, 784)) < 0.3).astype(np.uint8)
    seed = 7
    def epoch_batches(epoch):                              # the pattern for train.fit
        return minibatches(x, 10, rng=np.random.default_rng(seed + epoch), dtype=np.float32)
    e1, e1_again, e2 = (np.concatenate(list(epoch_batches(e))) for e in (1, 1, 2))
    assert e1.dtype == np.float32 and e1.shape == (40, 784)
    assert np.array_equal(e1, e1_again) and not np.array_equal(e1, e2)
    assert np.array_equal(np.sort(e1, axis=0), np.sort(x.astype(np.float32), axis=0))


def test_minibatches_on_device(fake_device):
    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    on_device = list(minibatches(to_device(x, fake_device), 4, rng=3, dtype=np.float64))
    on_host = list(minibatches(x, 4, rng=3, dtype=np.float64))
    assert all(device_of(b) == fake_device for b in on_device)
    assert all(np.array_equal(asnumpy(b), h) for b, h in zip(on_device, on_host))
