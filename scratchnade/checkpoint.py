"""Checkpoints: one ``.npz`` file with the parameters, optimizer state and a JSON header.

Layout inside the archive (no pickles anywhere):

    meta.json        uint8 bytes of a JSON object: model class and config, epoch, history,
                     optimizer hyperparameters, RNG state, package version, anything else
    param/<name>     one array per model parameter (host copies)
    optim/<key>      one array per optimizer state array

Writes are atomic: the archive goes to a temporary file in the same directory, is flushed
to disk, then renamed over the old checkpoint, so a crash or Ctrl-C mid-write leaves the
previous checkpoint intact.

Reads validate before they allocate.  A checkpoint is a zip archive of ``.npy`` entries, and
both layers declare sizes that a damaged or hostile file can make up, so every entry is
checked from its headers alone (the zip directory's ZipInfo and the first bytes of the
``.npy``: :func:`numpy.lib.format.read_magic` / ``read_array_header_*``) before any array is
read or inflated:

    ZipInfo     the inflated size (file_size) is at most MAX_ENTRY_BYTES (8 GiB), and all
                entries together at most MAX_TOTAL_BYTES (8 GiB); meta.json at most
                MAX_META_BYTES (64 MiB); a stored entry's bytes lie inside the file; a
                compressed entry inflates at most MAX_INFLATION (100) times its compressed
                size once it is over INFLATION_FREE_BYTES (64 MiB): save_checkpoint never
                compresses, and a deflated entry of a few MB that claims GBs is a
                decompression bomb (deflate can reach ~1000x on constant data)
    .npy header version 1.0 or 2.0, header at most 10,000 bytes; a plain numeric dtype
                (bool, int, uint, float, complex: no objects, no records); non-negative
                dimensions; prod(shape) * itemsize equal to the bytes the entry holds
                after its header (a header claiming H = 10^9 in a small entry is refused)
    expected    with ``expect={name: shape}`` (the model being loaded), every parameter's
                name and shape, before the arrays are read

The limits are module constants (raise them for a model over 8 GiB).  Everything refused
raises :class:`CheckpointError` naming the file and the entry; memory use while checking is
a few KB per entry, whatever the headers claim.  NaN or inf values are not refused here
(a diverged checkpoint can still be inspected); :func:`check_finite` is what loaders that
*use* the parameters call (``scratchnade.runs``: evaluate, sample, resume).
"""
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from . import __version__
from .data.download import atomic_write, npy_header

GIB, MIB = 1 << 30, 1 << 20
MAX_ENTRY_BYTES = 8 * GIB           # one array, inflated
MAX_TOTAL_BYTES = 8 * GIB           # all arrays of one checkpoint, inflated
MAX_META_BYTES = 64 * MIB           # the JSON header (vocabulary and history included)
MAX_INFLATION = 100                 # inflated / compressed size of a deflated entry ...
INFLATION_FREE_BYTES = 64 * MIB     # ... once it inflates to more than this
MAX_ENTRIES = 100_000
NUMERIC_KINDS = "biufc"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, truncated or for another model."""


def save_checkpoint(path, params, meta, optim_arrays=None):
    """Write params (dict of host arrays), meta (JSON-able dict), optimizer arrays to `path`."""
    meta = {"scratchnade_version": __version__, **meta}
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    arrays = {"meta.json": blob}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in params.items()})
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in (optim_arrays or {}).items()})
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _size(n):
    """A byte count for messages: 1.6 GB, 80 bytes."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _npy_header(zf, info, path, name):
    """(shape, dtype, data bytes) of zip entry `info`, from its .npy header alone (data.download's
    reader), checked: plain numbers, a valid shape, and exactly the bytes that shape needs."""
    shape, dtype, header_end = npy_header(zf, info, path, name, error=CheckpointError)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in NUMERIC_KINDS:
        raise CheckpointError(f"{path}: entry {name!r} holds dtype {dtype}, not a plain numeric array")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise CheckpointError(f"{path}: entry {name!r} declares an invalid shape {shape}")
    declared = math.prod(shape) * dtype.itemsize               # Python ints: no overflow
    held = info.file_size - header_end
    if declared != held:
        raise CheckpointError(f"{path}: entry {name!r} declares shape {tuple(shape)} {dtype} "
                              f"({_size(declared)}) but holds {_size(max(held, 0))} of data: the file "
                              f"is corrupt or forged")
    return tuple(shape), dtype, declared


def inspect_checkpoint(path):
    """The validated table of contents of a checkpoint, read from its headers only.

    Returns {entry name: (shape, dtype)} with names as saved ("meta.json", "param/W", ...).
    Raises CheckpointError for anything over the limits of the module docstring.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            return _inspect(zf, path, os.path.getsize(path))
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({err})") from err


def _inspect(zf, path, file_bytes):
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"{path} has {len(infos):,} entries (more than {MAX_ENTRIES:,})")
    entries, total = {}, 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            continue                                            # not ours: never read
        name = info.filename[:-len(".npy")]
        limit = MAX_META_BYTES if name == "meta.json" else MAX_ENTRY_BYTES
        if info.file_size > limit:
            raise CheckpointError(f"{path}: entry {name!r} inflates to {_size(info.file_size)}, more than "
                                  f"the {_size(limit)} allowed (checkpoint.MAX_ENTRY_BYTES)")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size or info.header_offset + info.compress_size > file_bytes:
                raise CheckpointError(f"checkpoint {path} is corrupt or truncated (entry {name!r} claims "
                                      f"{_size(info.file_size)}, the file has {_size(file_bytes)})")
        elif info.file_size > INFLATION_FREE_BYTES and \
                info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise CheckpointError(f"{path}: entry {name!r} would inflate from {_size(info.compress_size)} to "
                                  f"{_size(info.file_size)} (more than {MAX_INFLATION}x): refused as a "
                                  f"decompression bomb (save_checkpoint never compresses)")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise CheckpointError(f"{path}: its entries inflate to more than {_size(MAX_TOTAL_BYTES)} in all "
                                  f"(checkpoint.MAX_TOTAL_BYTES)")
        shape, dtype, _ = _npy_header(zf, info, path, name)
        entries[name] = (shape, dtype)
    return entries


def _check_expected(entries, expect, path):
    """CheckpointError unless the param/ entries have exactly the names and shapes of `expect`."""
    have = {k[len("param/"):]: shape for k, (shape, _) in entries.items() if k.startswith("param/")}
    if set(have) != set(expect):
        raise CheckpointError(f"{path} does not fit the model: parameter names differ: expected "
                              f"{sorted(expect)}, got {sorted(have)}")
    for k, shape in expect.items():
        if tuple(have[k]) != tuple(shape):
            raise CheckpointError(f"{path} does not fit the model: parameter {k!r} has shape "
                                  f"{tuple(have[k])}, model expects {tuple(shape)}")


def _read_meta(zf, path):
    try:
        with zf.open("meta.json.npy") as f:
            blob = npy_format.read_array(f, allow_pickle=False)
    except KeyError:
        raise CheckpointError(f"{path} is not a scratchnade checkpoint (no meta.json entry)") from None
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable header ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has a header that is not a JSON object "
                              f"(got {type(meta).__name__})")
    return meta


def read_meta(path):
    """The JSON header of a checkpoint (every entry validated first; no array is read)."""
    return load_checkpoint(path, arrays=False)[0]


def load_checkpoint(path, expect=None, arrays=True):
    """Read a checkpoint.  Returns (meta dict, params dict, optimizer arrays dict).

    expect: optional {parameter name: shape} (e.g. ``{k: v.shape for k, v in model.params.items()}``):
    the entries must match it, checked before any array is read.  arrays=False: read only the
    header (params and optimizer dicts come back empty).
    Raises CheckpointError naming the problem for a missing, truncated, corrupt, oversized or
    forged file (see the module docstring).
    """
    path = Path(path)
    entries = inspect_checkpoint(path)
    if "meta.json" not in entries:
        raise CheckpointError(f"{path} is not a scratchnade checkpoint (no meta.json entry)")
    if expect is not None:
        _check_expected(entries, expect, path)
    params, optim = {}, {}
    try:
        with zipfile.ZipFile(path) as zf:
            meta = _read_meta(zf, path)
            if arrays:
                for name in entries:
                    if name.startswith(("param/", "optim/")):
                        with zf.open(name + ".npy") as f:
                            a = npy_format.read_array(f, allow_pickle=False)
                        (params if name.startswith("param/") else optim)[name.split("/", 1)[1]] = a
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({err})") from err
    return meta, params, optim


def check_finite(arrays, path, what="parameter"):
    """CheckpointError naming the file and the first array holding NaN or inf (host arrays)."""
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int(a.size - np.isfinite(a).sum())
            raise CheckpointError(f"{path}: {what} {k!r} holds NaN or inf ({bad:,} of {a.size:,} values): the "
                                  f"run that saved it had diverged; use an earlier checkpoint (best.npz) "
                                  f"or retrain")


def check_compatible(meta, model, path="checkpoint"):
    """Raise CheckpointError unless `meta` describes a model of the same class and config."""
    want = type(model).__name__
    got = meta.get("model")
    if got != want:
        raise CheckpointError(f"{path} holds a {got} model, not a {want}")
    saved = meta.get("config", {})
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} has no model config in its header")
    diff = {k: (saved.get(k), v) for k, v in model.config.items()
            if k not in ("seed", "dtype") and saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} was saved from a differently sized {want} ({detail})")
