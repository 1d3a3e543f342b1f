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

Reading a ``.npz`` data file validates before it allocates (:func:`read_npz`). A ``.npz`` is a
zip archive of ``.npy`` entries, and both layers declare sizes a damaged or hostile file can
make up, so every entry is checked from its headers alone before any array is read or
inflated: the entry names; the inflated size the zip directory declares (``ZipInfo.file_size``,
at most MAX_NPZ_ENTRY_BYTES per entry and MAX_NPZ_TOTAL_BYTES in all); the ``.npy`` header
(:func:`numpy.lib.format.read_magic` / ``read_array_header_1_0`` / ``_2_0``): a plain numeric
dtype, the shape the caller expects, and shape x itemsize equal to the bytes the entry holds.
A decompression bomb (a small deflated entry that inflates to gigabytes) or a header claiming
a huge shape is refused with :class:`DataFileError` naming the file and the entry, using a few
KB of memory. Text files that are not UTF-8 get the same error naming the file and the byte
(:func:`read_text`).
"""
import hashlib
import inspect
import math
import os
import tempfile
import zipfile
import zlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..backend import asnumpy

ENV_VAR = "SCRATCHNADE_DATA"
CHUNK = 1 << 20  # bytes read per step when streaming and hashing

MIB, GIB = 1 << 20, 1 << 30
MAX_NPZ_ENTRY_BYTES = 1 * GIB   # one array of a .npz data file, inflated (binary.py sets its own)
MAX_NPZ_TOTAL_BYTES = 2 * GIB   # all arrays of one .npz data file, inflated
MAX_NPZ_ENTRIES = 64
MAX_NPY_HEADER = 10_000         # numpy's own default limit since 1.24
_HEADER_KW = ({"max_header_size": MAX_NPY_HEADER}
              if "max_header_size" in inspect.signature(npy_format.read_array_header_1_0).parameters else {})
_READ_KW = ({"max_header_size": MAX_NPY_HEADER}
            if "max_header_size" in inspect.signature(npy_format.read_array).parameters else {})


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


class DataFileError(ValueError):
    """A data file that is there but cannot be used: corrupt, forged, over a size limit, or
    text that is not UTF-8.  The message (one line) names the file, and the entry or byte."""


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


# ----------------------------------------------------------------------------- safe reads

def _size(n):
    """A byte count for messages: 1.02 GiB, 256 MiB, 80 bytes."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def npy_header(zf, info, path, name, error=None):
    """(shape, dtype, header bytes) of the .npy zip entry `info`, reading only its header.

    The version must be 1.0 or 2.0 (numpy's header-size limit applies); anything unreadable
    raises `error` (default DataFileError; the checkpoint reader passes CheckpointError) naming
    `path` and the entry.  The caller validates shape and dtype against its own limits.
    """
    error = error or DataFileError
    try:
        with zf.open(info) as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f, **_HEADER_KW)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(f, **_HEADER_KW)
            else:
                raise error(f"{path}: entry {name!r} is a .npy file of version {version}, not 1.0 or 2.0")
            return tuple(shape), dtype, f.tell()
    except error:
        raise
    except (zipfile.BadZipFile, zlib.error) as err:           # a small entry is read whole, CRC included
        raise error(f"{path}: entry {name!r} is damaged ({err}); delete the file and download or "
                    f"convert it again") from err
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, NotImplementedError, RuntimeError) as err:
        raise error(f"{path}: entry {name!r} has no readable .npy header ({err})") from err


def inspect_npz(path, names, check=None, max_entry_bytes=MAX_NPZ_ENTRY_BYTES,
                max_total_bytes=MAX_NPZ_TOTAL_BYTES):
    """The validated table of contents of the .npz at `path`, read from its headers only.

    Parameters
    ----------
    path : the .npz file
    names : the array names it must hold, and nothing else
    check : optional ``check(name, shape, dtype)`` that raises ValueError for a shape or dtype the
            caller does not accept (its message gets the file name in front)
    max_entry_bytes, max_total_bytes : limits on the inflated size of one array and of all

    Returns {name: (shape, dtype)}.  Raises :class:`DataFileError` (a ValueError) naming the file
    and the entry for: not a zip archive; other, missing or repeated entries; an entry over the
    limits (a decompression bomb); an unreadable .npy header; a dtype that is not plain numbers
    (no objects, so nothing is ever unpickled); a shape `check` refuses; a shape whose bytes differ
    from the bytes the entry holds.  Nothing larger than a .npy header is read.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return _inspect_npz(zf, path, list(names), check, max_entry_bytes, max_total_bytes)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataFileError(f"{path} is not a readable .npz archive ({err}); delete it and download or "
                            f"convert it again") from err


def _inspect_npz(zf, path, names, check, max_entry_bytes, max_total_bytes):
    infos = zf.infolist()
    if len(infos) > MAX_NPZ_ENTRIES:
        raise DataFileError(f"{path} has {len(infos):,} entries; a data file has at most {MAX_NPZ_ENTRIES}")
    found = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
    repeated = sorted({n for n in found if found.count(n) > 1})
    if repeated:
        raise DataFileError(f"{path} holds the entries {repeated} more than once: the file is corrupt or forged")
    missing, extra = [n for n in names if n not in found], [n for n in found if n not in names]
    if missing:
        raise DataFileError(f"{path} lacks the arrays {missing}; it has {found}")
    if extra:
        raise DataFileError(f"{path} holds unexpected entries {extra}; it should hold only {names}")
    entries, total = {}, 0
    for info, name in zip(infos, found):
        if not info.filename.endswith(".npy"):
            raise DataFileError(f"{path}: entry {info.filename!r} is not a .npy array")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataFileError(f"{path}: entry {name!r} uses zip compression method {info.compress_type}, "
                                f"not stored or deflated")
        if info.file_size > max_entry_bytes:
            raise DataFileError(f"{path}: entry {name!r} would inflate to {_size(info.file_size)} "
                                f"({_size(info.compress_size)} compressed), over the {_size(max_entry_bytes)} "
                                f"limit for one array: the file is corrupt or a decompression bomb")
        total += info.file_size
        if total > max_total_bytes:
            raise DataFileError(f"{path}: its arrays would inflate to more than {_size(max_total_bytes)} in "
                                f"all: the file is corrupt or a decompression bomb")
        shape, dtype, header = npy_header(zf, info, path, name)
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
            raise DataFileError(f"{path}: entry {name!r} holds dtype {dtype}, not plain numbers (Python "
                                f"objects are never unpickled)")
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise DataFileError(f"{path}: entry {name!r} declares an invalid shape {shape}")
        if check is not None:
            try:
                check(name, shape, dtype)
            except ValueError as err:
                raise DataFileError(f"{path}: {err}") from err
        declared = math.prod(shape) * dtype.itemsize              # Python ints: no overflow
        held = info.file_size - header
        if declared != held:
            raise DataFileError(f"{path}: entry {name!r} declares shape {shape} {dtype} ({_size(declared)}) "
                                f"but holds {_size(max(held, 0))} of data: the file is corrupt or forged")
        entries[name] = (shape, dtype)
    return entries


def read_npz(path, names, check=None, max_entry_bytes=MAX_NPZ_ENTRY_BYTES,
             max_total_bytes=MAX_NPZ_TOTAL_BYTES):
    """The arrays `names` of the .npz at `path` as {name: host ndarray}, validated before they are read.

    Every entry is first checked from its headers (:func:`inspect_npz`: same arguments, same
    errors), so no array larger than the limits, or of another shape than `check` accepts, is
    ever allocated or inflated.  A damaged entry (bad CRC, truncated data) also raises
    :class:`DataFileError` naming the file and the entry.
    """
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:                    # one handle: the entries read are those checked
            _inspect_npz(zf, path, list(names), check, max_entry_bytes, max_total_bytes)
            for name in names:
                try:
                    with zf.open(name + ".npy") as f:
                        arrays[name] = npy_format.read_array(f, allow_pickle=False, **_READ_KW)
                except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                    raise DataFileError(f"{path}: entry {name!r} is damaged ({err}); delete the file and "
                                        f"download or convert it again") from err
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataFileError(f"{path} is not a readable .npz archive ({err}); delete it and download or "
                            f"convert it again") from err
    return arrays


def read_text(path, newline=None):
    """The text of the UTF-8 file at `path`; `newline` as for :func:`open` (None: universal newlines).

    A file that is not UTF-8 raises :class:`DataFileError` (a ValueError) naming the file, the
    byte offset and the line of the first bad byte, instead of a bare UnicodeDecodeError.
    """
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as err:
        raw = Path(path).read_bytes()                       # the offset in err is within one chunk
        try:
            raw.decode("utf-8")
            start, reason = 0, err.reason
        except UnicodeDecodeError as whole:
            start, reason = whole.start, whole.reason
        line = raw.count(b"\n", 0, start) + 1
        raise DataFileError(f"{path} is not UTF-8 text: byte {start:,} (line {line}) is {raw[start:start + 1]!r} "
                            f"({reason}); save the file as UTF-8") from err
