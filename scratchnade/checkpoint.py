"""Checkpoints: one ``.npz`` file with the parameters, optimizer state and a JSON header.

Layout inside the archive (no pickles anywhere; loading uses ``allow_pickle=False``):

    meta.json        uint8 bytes of a JSON object: model class and config, epoch, history,
                     optimizer hyperparameters, RNG state, package version, anything else
    param/<name>     one array per model parameter (host copies)
    optim/<key>      one array per optimizer state array

Writes are atomic: the archive goes to a temporary file in the same directory, is flushed
to disk, then renamed over the old checkpoint, so a crash or Ctrl-C mid-write leaves the
previous checkpoint intact.
"""
import json
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .data.download import atomic_write


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


def load_checkpoint(path):
    """Read a checkpoint.  Returns (meta dict, params dict, optimizer arrays dict).

    Raises CheckpointError naming the problem for a missing, truncated or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({err})") from err
    if "meta.json" not in arrays:
        raise CheckpointError(f"{path} is not a scratchnade checkpoint (no meta.json entry)")
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable header ({err})") from err
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return meta, params, optim


def check_compatible(meta, model, path="checkpoint"):
    """Raise CheckpointError unless `meta` describes a model of the same class and config."""
    want = type(model).__name__
    got = meta.get("model")
    if got != want:
        raise CheckpointError(f"{path} holds a {got} model, not a {want}")
    saved = meta.get("config", {})
    diff = {k: (saved.get(k), v) for k, v in model.config.items()
            if k not in ("seed", "dtype") and saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} was saved from a differently sized {want} ({detail})")
