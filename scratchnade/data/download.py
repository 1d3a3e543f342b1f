"""Where the data sets live, sha256 checks, and downloads that never leave half a file behind.

The data directory is, in order of preference:

1. the ``path`` / ``data_dir`` argument of a loader;
2. the ``SCRATCHNADE_DATA`` environment variable;
3. a user cache directory: ``$XDG_CACHE_HOME/scratchnade``, else ``~/.cache/scratchnade``.

Each data set has its own sub-folder there (``binarized-mnist/``, ``wikitext-2/`` ...).

A download streams to a temporary ``<name>.<random>.part`` file in the destination folder,
checks its sha256 when one is given, and only then renames it into place with ``os.replace``
(atomic on one file system). So a file that exists under its final name is complete; an
interrupted or corrupted download leaves nothing behind.
"""
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..backend import asnumpy

ENV_VAR = "SCRATCHNADE_DATA"
CHUNK = 1 << 20  # bytes read per step when streaming and hashing


class MissingDataError(FileNotFoundError):
    """A data file is not where a loader looked for it.

    The message names the missing file, the directory searched, how to point the package
    at another directory (``SCRATCHNADE_DATA``) and how to download the file.
    """

    def __init__(self, path, how_to_download=""):
        self.path = Path(path)
        where = f"{self.path.parent.name}/{self.path.name}"        # <data_dir>/<data set>/<file>
        message = (f"data file not found: {self.path}\n"
                   f"  looked in: {self.path.parent}\n"
                   f"  put the file there, or point the package at a folder holding {where}: pass "
                   f"data_dir=... or set the {ENV_VAR} environment variable")
        if how_to_download:
            message += f"\n  to download it: {how_to_download}"
        super().__init__(message)


class DownloadError(OSError):
    """A URL could not be fetched (no network, wrong URL, server error)."""


class ChecksumError(ValueError):
    """A file or an array does not have the sha256 it should have."""


def data_dir(path=None):
    """The data directory as a Path: `path`, else $SCRATCHNADE_DATA, else the user cache directory.

    The cache directory is ``$XDG_CACHE_HOME/scratchnade`` (``~/.cache/scratchnade`` when
    XDG_CACHE_HOME is unset). Nothing is created here; downloads create what they need.
    """
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "scratchnade"


def sha256_file(path):
    """Hex sha256 of the bytes of the file at `path` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_array(a):
    """Hex sha256 of the raw C-order bytes of array `a` (device arrays are copied to the host).

    Depends on the dtype and the values, not on the shape: a (2, 3) and a (6,) array with the
    same uint8 values hash the same, so check shapes separately.
    """
    a = np.ascontiguousarray(asnumpy(a))
    return hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()


def _progress_bar(total, name, enabled):
    """A tqdm bar in bytes (a no-op object when disabled)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not enabled, leave=False)


def _stream(url, f, name, progress):
    """Copy the body of `url` into the open binary file `f`; return the hex sha256 of the bytes."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response:
        length = response.headers.get("Content-Length")
        with _progress_bar(int(length) if length else None, name, progress) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
    return h.hexdigest()


def download(url, dest, sha256=None, progress=True):
    """Download `url` to the file `dest`, atomically, checking its sha256 when given.

    Parameters
    ----------
    url : str, http(s):// or file:// URL
    dest : str or Path, the final file name (its folder is created if needed)
    sha256 : str or None, the expected hex digest of the file
    progress : bool, show a byte progress bar (tqdm)

    Returns the destination Path. An existing `dest` is replaced only after the new file is
    complete and checked. Raises DownloadError when the URL cannot be read (the message says
    where to put the file by hand) and ChecksumError on a hash mismatch; in both cases no
    new file is left behind.
    """
    dest = Path(dest)

    def write(f):
        try:
            actual = _stream(url, f, dest.name, progress)
        except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: malformed URL
            raise DownloadError(
                f"could not download {url}: {getattr(err, 'reason', err)}\n"
                f"  without network, get the file some other way and put it at {dest}") from err
        if sha256 is not None and actual != sha256.lower():
            raise ChecksumError(f"sha256 mismatch for {dest.name} downloaded from {url}:\n"
                                f"  expected {sha256.lower()}\n  actual   {actual}\n"
                                f"  nothing was saved; try again, or check the URL and the hash")
    return atomic_write(dest, write)


def atomic_write(dest, write):
    """Call ``write(f)`` on a temporary binary file next to `dest`, then rename it to `dest`.

    The temporary file is deleted when ``write`` raises (or on Ctrl-C), so a crash never leaves
    a truncated file under the final name. Returns the destination Path.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut keeps old or new
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); data files are for everyone
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
