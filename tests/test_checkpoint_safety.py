"""Checkpoint loaders validate before they allocate (issue 15, item 4).

Forged archives are written here by hand (zip entries holding hand-made .npy headers), and
each refusal is shown to take bounded memory: tracemalloc's peak (NumPy reports its array
allocations to it, zlib's output buffers are Python bytes) stays far below what the headers
claim.  Also: a JSON header that is not an object, non-numeric dtypes, and NaN / inf
parameters, refused by everything that loads a checkpoint for use.
"""
import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy_format

from scratchnade import checkpoint as ckpt
from scratchnade.checkpoint import (CheckpointError, inspect_checkpoint, load_checkpoint, read_meta,
                                   save_checkpoint)
from scratchnade.cli import main
from scratchnade.models.deep_nade import DeepNADE
from scratchnade.models.fvsbn import FVSBN
from scratchnade.models.gaussian_ar import LinearGaussianAR
from scratchnade.models.nade import NADE
from scratchnade.models.recurrent_nade import RecurrentNADE
from scratchnade.models.sequence_nade import SequenceNADE
from scratchnade.models.softmax_fvsbn import SoftmaxFVSBN
from scratchnade.registry import model_from_config
from scratchnade.runs import build_optimizer, load_params, model_from_checkpoint, restore

MB = 1 << 20
NADE_ARGS = ["--model", "nade", "--hidden", "6", "--dim", "6", "--n-train", "300", "--batch-size", "50",
             "--no-plot"]


# ----------------------------------------------------------------------------- hand-made archives

def npy_header(shape, descr="<f4"):
    """The bytes of a version 1.0 .npy header declaring `shape` and dtype `descr`."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def meta_entry(meta):
    """The .npy bytes of a checkpoint's meta.json entry (uint8 JSON text)."""
    blob = json.dumps(meta).encode("utf-8")
    return npy_header((len(blob),), "|u1") + blob


NADE_META = {"model": "NADE", "config": {"D": 6, "H": 4, "seed": 0, "dtype": "float32", "init_scale": 0.01}}


def write_zip(path, entries):
    """A zip archive of `entries` {name: bytes}, stored, written with zipfile."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def deflated_zeros(prefix, n_zeros):
    """A raw deflate stream of `prefix` + n_zeros zero bytes, built without compressing them all.

    After a full flush deflate starts afresh, so the block for 1 MiB of zeros is the same every
    time; repeating it gives any number of zeros for ~1 KiB of stream per MiB (~1000:1).
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH) == block      # independent, identical
    n, r = divmod(n_zeros, MB)
    return head + block * (n - 1) + c.compress(bytes(r)) + c.flush()        # n - 1: one block went to the assert


def write_bomb(path, inflated=1_600_000_000):
    """A NADE checkpoint whose param/W entry is ~1.6 MB deflated and inflates to 1.6 GB.

    The zip structures are written by hand (zipfile can only write deflated data by compressing
    all 1.6 GB itself, ~5 s); the CRC of the bomb entry is left 0: a loader that inflates before
    checking would spend the 1.6 GB before it could notice.
    """
    header = npy_header((inflated // 4,))                                    # float32 W, 4e8 values
    n_zeros = inflated - len(header)
    files = [("meta.json.npy", zipfile.ZIP_STORED, meta_entry(NADE_META), None, None),
             ("param/W.npy", zipfile.ZIP_DEFLATED, deflated_zeros(header, n_zeros), 0, inflated)]
    out, central = bytearray(), bytearray()
    for name, method, data, crc, size in files:
        name_b = name.encode()
        crc = zlib.crc32(data) if crc is None else crc
        size = len(data) if size is None else size
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size,
                           len(name_b), 0) + name_b + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                               size, len(name_b), 0, 0, 0, 0, 0, offset) + name_b
    cd_offset = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(files), len(files), len(central),
                                 cd_offset, 0)
    path.write_bytes(bytes(out))
    return path


def peak_bytes(fn, *args, **kw):
    """(exception raised by fn, tracemalloc peak in bytes while it ran)."""
    tracemalloc.start()
    try:
        fn(*args, **kw)
        raise AssertionError("not refused")
    except CheckpointError as err:
        return err, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- bombs and forged sizes

def test_decompression_bomb_is_refused_with_bounded_memory(tmp_path, capsys):
    path = write_bomb(tmp_path / "bomb.npz")
    info = zipfile.ZipFile(path).getinfo("param/W.npy")                      # a well-formed archive:
    assert info.file_size == 1_600_000_000 and info.compress_size < 2 * MB   # 1.6 MB that claims 1.6 GB
    for load in (load_checkpoint, inspect_checkpoint, model_from_checkpoint):
        err, peak = peak_bytes(load, path)
        assert "decompression bomb" in str(err) and "'param/W'" in str(err) and str(path) in str(err)
        assert peak < 20 * MB, peak                                           # vs 1.6 GB claimed
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "decompression bomb" in err and "Traceback" not in err


def test_huge_declared_shape_is_refused_with_bounded_memory(tmp_path):
    # the .npy header claims W is (10^9, 6) float32 (24 GB); the entry holds 80 bytes
    path = write_zip(tmp_path / "huge.npz", {"meta.json.npy": meta_entry(NADE_META),
                                             "param/W.npy": npy_header((10 ** 9, 6)) + bytes(80)})
    for load in (load_checkpoint, model_from_checkpoint):
        err, peak = peak_bytes(load, path)
        assert "declares shape (1000000000, 6)" in str(err) and "holds 80 bytes" in str(err)
        assert peak < 5 * MB


def test_zip_entry_claiming_more_bytes_than_the_file_has_is_refused(tmp_path):
    path = write_zip(tmp_path / "c.npz", {"meta.json.npy": meta_entry(NADE_META),
                                          "param/W.npy": npy_header((4, 6)) + bytes(96)})
    data = bytearray(path.read_bytes())
    record = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"][1]   # param/W's central record
    struct.pack_into("<II", data, record + 20, 0x7FFFFFFF, 0x7FFFFFFF)          # sizes: 2 GiB, stored
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).getinfo("param/W.npy").file_size == 0x7FFFFFFF
    err, peak = peak_bytes(load_checkpoint, path)
    assert "corrupt or truncated" in str(err) and "'param/W' claims 2.0 GiB" in str(err) and peak < 5 * MB


def test_sizes_in_the_json_header_are_checked_before_the_model_is_built(tmp_path):
    # real 6x4 arrays, but the header's config asks model_from_checkpoint to build H = 10^9 (24 GB)
    model = NADE(D=6, H=4)
    meta = {"model": "NADE", "config": {**model.config, "H": 10 ** 9}}
    save_checkpoint(tmp_path / "h.npz", model.state_dict(), meta)
    err, peak = peak_bytes(model_from_checkpoint, tmp_path / "h.npz")
    assert "H = 1,000,000,000" in str(err) and "before building the model" in str(err)
    assert peak < 5 * MB
    meta["config"].update(H=6, D=6)                                   # each size fits, the product does not
    save_checkpoint(tmp_path / "p.npz", {"W": np.zeros((6, 6)), "b": np.zeros(6)}, meta)
    model_from_checkpoint_refuses = pytest.raises(CheckpointError, match="does not fit|far larger")
    with model_from_checkpoint_refuses:
        model_from_checkpoint(tmp_path / "p.npz")


def test_expected_shapes_are_compared_before_any_array_is_read(tmp_path):
    save_checkpoint(tmp_path / "big.npz", {"W": np.zeros((2500, 2000), np.float32), "b": np.zeros(2)}, NADE_META)
    err, peak = peak_bytes(load_checkpoint, tmp_path / "big.npz", expect={"W": (4, 6), "b": (6,)})
    assert "parameter 'W' has shape (2500, 2000), model expects (4, 6)" in str(err)
    assert peak < 2 * MB                                               # the entry is 20 MB
    with pytest.raises(CheckpointError, match="parameter names differ"):
        load_checkpoint(tmp_path / "big.npz", expect={"W": (2500, 2000)})
    meta, params, _ = load_checkpoint(tmp_path / "big.npz", expect={"W": (2500, 2000), "b": (2,)})
    assert params["W"].shape == (2500, 2000) and meta["model"] == "NADE"
    tracemalloc.start()
    try:
        assert read_meta(tmp_path / "big.npz")["model"] == "NADE"      # the header alone
        assert tracemalloc.get_traced_memory()[1] < 2 * MB
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("descr, what", [("|O", "dtype object"), ([("a", "<f4")], "not a plain numeric"),
                                         ("<U3", "dtype <U3")])
def test_entries_that_are_not_plain_numeric_arrays_are_refused(tmp_path, descr, what):
    path = write_zip(tmp_path / "o.npz", {"meta.json.npy": meta_entry(NADE_META),
                                          "param/W.npy": npy_header((2,), descr) + bytes(16)})
    with pytest.raises(CheckpointError, match="not a plain numeric array"):
        load_checkpoint(path)


def test_compressed_checkpoints_within_the_limits_still_load(tmp_path):
    model = NADE(D=6, H=4)
    arrays = {"meta.json": np.frombuffer(json.dumps(NADE_META).encode(), np.uint8),
              **{f"param/{k}": v for k, v in model.state_dict().items()}}
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    _, loaded = model_from_checkpoint(tmp_path / "z.npz")
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_the_limits_are_module_constants(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "a.npz", {"W": np.zeros((64, 64))}, NADE_META)       # 32 KiB entry
    monkeypatch.setattr(ckpt, "MAX_ENTRY_BYTES", 16 << 10)
    with pytest.raises(CheckpointError, match="inflates to 32.1 KiB, more than the 16.0 KiB allowed"):
        load_checkpoint(tmp_path / "a.npz")
    monkeypatch.setattr(ckpt, "MAX_ENTRY_BYTES", 1 << 30)
    monkeypatch.setattr(ckpt, "MAX_TOTAL_BYTES", 16 << 10)
    with pytest.raises(CheckpointError, match="more than 16.0 KiB in all"):
        load_checkpoint(tmp_path / "a.npz")


# ----------------------------------------------------------------------------- the JSON header

@pytest.mark.parametrize("header", ["[1, 2]", '"a string"', "3", "null", "true"])
def test_a_json_header_that_is_not_an_object_is_refused(tmp_path, capsys, header):
    blob = header.encode()
    path = write_zip(tmp_path / "j.npz", {"meta.json.npy": npy_header((len(blob),), "|u1") + blob,
                                          "param/W.npy": npy_header((4, 6)) + bytes(96)})
    with pytest.raises(CheckpointError, match="not a JSON object"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a JSON object"):
        model_from_checkpoint(path)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a JSON object" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- every model round-trips

@pytest.mark.parametrize("model", [
    NADE(D=7, H=5), FVSBN(D=6), FVSBN(D=6, form="vector"), LinearGaussianAR(p=3),
    SoftmaxFVSBN(5, p=4), SoftmaxFVSBN(5, p=4, encoding="embedding", embed_dim=3),
    SequenceNADE(6, p=3, H=4), SequenceNADE(6, p=3, H=4, tied=True), DeepNADE(6, p=3, H=4, layers=3),
    DeepNADE(6, p=2, H=3, layers=1), RecurrentNADE(6, H=4), RecurrentNADE(6, H=4, tied=True)],
    ids=lambda m: repr(m)[:40])
def test_every_model_still_round_trips(tmp_path, model):
    save_checkpoint(tmp_path / "m.npz", model.state_dict(), {"model": type(model).__name__, "config": model.config})
    _, loaded = model_from_checkpoint(tmp_path / "m.npz")
    assert type(loaded) is type(model) and loaded.config == model.config
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


# ----------------------------------------------------------------------------- NaN and inf parameters

def test_nan_or_inf_parameters_are_refused_by_every_loader_that_uses_them(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *NADE_ARGS, "--epochs", "1", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    good_last = (run / "last.npz").read_bytes()
    for name in ("best.npz", "last.npz"):
        meta, params, optim = load_checkpoint(run / name)
        params["W"][1, 2] = np.nan
        params["c"][0] = np.inf
        meta.pop("scratchnade_version")
        save_checkpoint(run / name, params, meta, optim)
    for argv in (["evaluate", str(run)], ["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.png")],
                 ["train", "--resume", str(run), "--epochs", "2"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "parameter 'W' holds NaN or inf (1 of 36 values)" in err, (argv, err)
        assert ".npz" in err and "Traceback" not in err
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(CheckpointError, match=r"best\.npz: parameter 'W' holds NaN"):
        model_from_checkpoint(run / "best.npz")
    with pytest.raises(CheckpointError, match="parameter 'c' holds NaN or inf"):
        load_params(NADE(D=6, H=6), {"W": np.zeros((6, 6)), "V": np.zeros((6, 6)), "b": np.zeros(6),
                                     "c": np.full(6, -np.inf)}, "x.npz")
    (run / "last.npz").write_bytes(good_last)                           # the optimizer state, too
    meta, params, optim = load_checkpoint(run / "last.npz")
    key = next(k for k, v in optim.items() if v.dtype.kind == "f" and v.size)
    optim[key] = np.full_like(optim[key], np.nan)
    meta.pop("scratchnade_version")
    save_checkpoint(run / "last.npz", params, meta, optim)
    _, model = model_from_config(meta["model"], meta["config"])
    opt = build_optimizer(meta["run_config"])
    with pytest.raises(CheckpointError, match=f"optimizer array '{key}' holds NaN or inf"):
        restore(run / "last.npz", model, opt, _Data())


class _Data:
    vocab = None
