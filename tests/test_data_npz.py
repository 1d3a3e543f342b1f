""".npz data files are validated from their headers before anything is read or inflated:
decompression bombs, headers that claim huge shapes, forged or damaged archives."""
import io
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy_format

from scratchnade.cli import main
from scratchnade.data import binary, download as dl
from scratchnade.data.binary import load_binarized_mnist

MB = 1 << 20
SPLITS = binary.SPLITS
PEAK_LIMIT = 16 * MB            # what a check from headers may use; the bombs below inflate to > 1 GB


# ----------------------------------------------------------------------------- hand-made archives

def npy_header(shape, dtype=np.uint8):
    """The bytes of a .npy (version 1.0) header for an array of `shape` and `dtype`."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                            "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def deflated_zeros_npy(shape, dtype=np.uint8):
    """(raw deflate stream, inflated size, CRC-32) of a .npy of zeros, built in milliseconds.

    After Z_FULL_FLUSH the compressor starts afresh, so every MB of zeros compresses to the same
    ~1 KB block: a 1 GB entry costs one block repeated, not a gigabyte of compression.  The CRC
    is computed for small entries only (0 for the bombs: a loader that inflated one would hold
    the gigabyte before the CRC check at the end could fail).
    """
    head = npy_header(shape, dtype)
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH)
    q, r = divmod(n, MB)
    crc = zlib.crc32(bytes(n), zlib.crc32(head)) if n <= 64 * MB else 0
    return first + block * q + c.compress(bytes(r)) + c.flush(), len(head) + n, crc, zipfile.ZIP_DEFLATED


def stored_npy(header, data):
    """(bytes, size, CRC-32, method) of a stored (uncompressed) entry: any header, any data."""
    raw = header + data
    return raw, len(raw), zlib.crc32(raw), zipfile.ZIP_STORED


def write_zip(path, members):
    """A zip archive of `members` {name: (bytes as stored, declared inflated size, CRC-32, method)},
    written by hand: zipfile cannot store pre-compressed data."""
    out, central = bytearray(), bytearray()
    for name, (data, size, crc, method) in members.items():
        nb = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(nb), 0)
        out += nb + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(nb), 0, 0, 0, 0, 0, offset) + nb
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out + central + eocd))
    return path


def small_members(n=3):
    return {f"{s}.npy": deflated_zeros_npy((n, 784)) for s in SPLITS}


def refused_within(limit, call, match, error=dl.DataFileError):
    """Run `call`, expect `error` matching `match`, and return tracemalloc's peak (bytes)."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match) as err:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"refusing took {peak / MB:.0f} MB"
    return err.value


# ----------------------------------------------------------------------------- the bomb

@pytest.fixture(scope="module")
def bomb():
    """train.npy: a 1.04 MB deflated entry that inflates to 1.1 GB (1.4 million images of zeros)."""
    return deflated_zeros_npy((1_400_000, 784))


def test_the_bomb_is_real(bomb):
    data, size, _, _ = bomb
    assert len(data) < 2 * MB and size > 10 ** 9
    d = zlib.decompressobj(-15)
    out = d.decompress(data[:64 * 1024], 8 * MB)                      # its first MBs inflate as declared
    assert out.startswith(b"\x93NUMPY") and len(out) == 8 * MB and not any(out[200:])


@pytest.mark.parametrize("check_counts", [True, False])
def test_decompression_bomb_is_refused_with_bounded_memory(tmp_path, bomb, check_counts):
    path = write_zip(binary.binarized_mnist_path(tmp_path), {**small_members(), "train.npy": bomb})
    assert zipfile.ZipFile(path).getinfo("train.npy").file_size > 10 ** 9
    err = refused_within(PEAK_LIMIT, lambda: load_binarized_mnist(tmp_path, verify=False, check_counts=check_counts),
                         "'train' would inflate to 1.02 GiB .* decompression bomb")
    assert str(path) in str(err) and "\n" not in str(err)


def test_inspect_npz_refuses_a_bomb_with_no_shape_check(tmp_path, bomb):
    """The generic reader (no caller's shape check) stops it at the zip directory's size."""
    path = write_zip(tmp_path / "any.npz", {"x.npy": bomb})
    refused_within(PEAK_LIMIT, lambda: dl.read_npz(path, ["x"]), "'x' would inflate to .* over the 1 GiB limit")
    fine = write_zip(tmp_path / "fine.npz", {"x.npy": deflated_zeros_npy((5, 7))})
    assert dl.read_npz(fine, ["x"])["x"].shape == (5, 7)


def test_bomb_through_the_command_line_is_one_line_and_exit_2(tmp_path, bomb, capsys):
    write_zip(binary.binarized_mnist_path(tmp_path / "data"), {**small_members(), "train.npy": bomb})
    out = tmp_path / "run"
    code = main(["train", "--model", "nade", "--data", "mnist", "--data-dir", str(tmp_path / "data"),
                 "--epochs", "1", "--run-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "decompression bomb" in err and "binarized_mnist.npz" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ----------------------------------------------------------------------------- headers that lie

@pytest.mark.parametrize("check_counts, match", [
    (True, "'train' has 1000000000 images; expected 50000"),
    (False, "'train' declares 1,000,000,000 images, more than the 342,392 a split may have"),
])
def test_header_claiming_a_huge_shape_is_refused(tmp_path, check_counts, match):
    """A tiny stored entry whose .npy header says (10^9, 784): refused from the header."""
    members = small_members()
    members["train.npy"] = stored_npy(npy_header((10 ** 9, 784)), bytes(784))
    path = write_zip(binary.binarized_mnist_path(tmp_path), members)
    err = refused_within(PEAK_LIMIT, lambda: load_binarized_mnist(tmp_path, verify=False,
                                                                  check_counts=check_counts), match)
    assert str(path) in str(err)


def test_header_shape_must_match_the_bytes_held(tmp_path):
    """(60000, 784) is a plausible shape under the cap, but the entry holds one image: refused
    before numpy would allocate 47 MB for it."""
    members = small_members()
    members["valid.npy"] = stored_npy(npy_header((60000, 784)), bytes(784))
    write_zip(binary.binarized_mnist_path(tmp_path), members)
    refused_within(8 * MB, lambda: load_binarized_mnist(tmp_path, verify=False, check_counts=False),
                   r"'valid' declares shape \(60000, 784\) uint8 \(44.9 MiB\) but holds 784 bytes")


@pytest.mark.parametrize("make, match", [
    (lambda m: {**m, "extra.npy": m["test.npy"]}, r"unexpected entries \['extra'\]"),
    (lambda m: {k: v for k, v in m.items() if k != "valid.npy"}, r"lacks the arrays \['valid'\]"),
    (lambda m: {**m, "test.npy": stored_npy(npy_header((3, 784), np.float64), bytes(3 * 784 * 8))},
     "'test' has dtype float64; expected uint8"),
    (lambda m: {**m, "test.npy": stored_npy(npy_header((3, 784), "V8"), bytes(3 * 784 * 8))},
     "'test' holds dtype \\|V8, not plain numbers"),
    (lambda m: {**m, "test.npy": stored_npy(npy_header((3, 28, 28)), bytes(3 * 784))},
     r"'test' has shape \(3, 28, 28\); expected \(N, 784\)"),
    (lambda m: {**m, "test.npy": stored_npy(b"\x93NUMPY\x07\x00" + bytes(100), bytes(10))},
     "'test' is a .npy file of version \\(7, 0\\)"),
    (lambda m: {**m, "test.npy": stored_npy(b"not a npy file at all", b"")}, "'test' has no readable .npy header"),
])
def test_forged_entries_are_refused_naming_file_and_entry(tmp_path, make, match):
    members = {k: stored_npy(npy_header((3, 784)), bytes(3 * 784)) for k in small_members()}
    path = write_zip(binary.binarized_mnist_path(tmp_path), make(members))
    with pytest.raises(dl.DataFileError, match=match) as err:
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_not_a_zip_is_refused_naming_the_file(tmp_path):
    path = binary.binarized_mnist_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(dl.DataFileError, match="binarized_mnist.npz is not a readable .npz archive"):
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)


@pytest.mark.parametrize("n, at", [(4, 200), (100, 50_000)])   # the flip read with the header / after it
def test_damaged_data_is_refused_naming_file_and_entry(tmp_path, rng, n, at):
    path = binary.binarized_mnist_path(tmp_path)
    path.parent.mkdir(parents=True)
    x = (rng.random((n, 784)) < 0.5).astype(np.uint8)
    np.savez(path, train=x, valid=x, test=x)                         # stored: flip one data byte of test
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"\x93NUMPY", zipfile.ZipFile(path).getinfo("test.npy").header_offset) + at] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(dl.DataFileError, match="binarized_mnist.npz: entry 'test' is damaged .*CRC"):
        load_binarized_mnist(tmp_path, verify=False, check_counts=False)


def test_valid_files_still_load(tmp_path, rng):
    x = {s: (rng.random((n, 784)) < 0.2).astype(np.uint8) for s, n in zip(SPLITS, (5, 3, 2))}
    for save in (np.savez, np.savez_compressed):
        path = binary.binarized_mnist_path(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save(path, **x)
        got = load_binarized_mnist(tmp_path, verify=False, check_counts=False)
        assert all(np.array_equal(got[s], x[s]) for s in SPLITS)
    assert dl.inspect_npz(path, SPLITS) == {s: ((n, 784), np.dtype(np.uint8)) for s, n in zip(SPLITS, (5, 3, 2))}
