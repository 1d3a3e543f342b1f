"""Binarized MNIST (Larochelle & Murray 2011), the NADE benchmark, and mini-batches of binary vectors.

Each image is one fixed Bernoulli sample of an MNIST digit: a row x in {0, 1}^D, D = 784 = 28 x 28
pixels in row-major order. The splits are the ones behind the published numbers (about 88.9 nats
average test NLL for NADE, 97.5 for FVSBN):

    train  (50000, 784)    fraction of ones 0.1306
    valid  (10000, 784)                     0.1311
    test   (10000, 784)                     0.1325

Stored form: ``<data_dir>/binarized-mnist/binarized_mnist.npz`` holding uint8 arrays ``train``,
``valid`` and ``test`` (see :func:`scratchnade.data.download.data_dir` for where ``data_dir`` points).
The loader checks shapes, 0/1 values and the sha256 of each array's bytes, so every user trains on
exactly the same bits. Without the .npz, :func:`download_binarized_mnist` fetches Larochelle's
original ``binarized_mnist_{train,valid,test}.amat`` text files and converts them.

The test split is sorted by digit class (all 0s, then all 1s, ...); train and valid are not. Shuffle
before mini-batching -- :func:`minibatches` does by default. With :func:`scratchnade.train.fit`, pass
an epoch -> batches callable so every epoch gets a fresh, reproducible order::

    x, seed = load_binarized_mnist(dtype=np.float32), 0
    train = lambda epoch: minibatches(x["train"], 100, rng=np.random.default_rng(seed + epoch))
    valid = list(minibatches(x["valid"], 1000, shuffle=False))   # a list: re-iterated every evaluation
    history = fit(model, train, valid, optimizer, epochs=100, patience=10)
"""
import io

import numpy as np

from ..backend import device_of, to_device
from . import download as dl

SPLITS = ("train", "valid", "test")
D = 784                                                   # pixels per image (28 x 28)
COUNTS = {"train": 50000, "valid": 10000, "test": 10000}  # images per split
SHA256 = {  # sha256 of each uint8 array's raw C-order bytes (shared/data/binarized-mnist/SOURCE.md)
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}
MAX_SPLIT_BYTES = 256 << 20  # a split is refused from its header above this (train: 50000 x 784 = 37 MiB)
SUBDIR, FILENAME = "binarized-mnist", "binarized_mnist.npz"
AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"


def binarized_mnist_path(data_dir=None):
    """Path of the .npz: ``<data_dir>/binarized-mnist/binarized_mnist.npz``."""
    return dl.data_dir(data_dir) / SUBDIR / FILENAME


def check_split(split, x, check_counts=True, verify=True):
    """Raise ValueError unless `x` is a valid `split` of binarized MNIST.

    Checks: x is (N, 784); N is the split's count (`check_counts`); every value is 0 or 1; the
    sha256 of its uint8 bytes is the published one (`verify`; raises dl.ChecksumError).
    """
    if x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"binarized MNIST split {split!r} has shape {x.shape}; expected (N, {D})")
    if check_counts and x.shape[0] != COUNTS[split]:
        raise ValueError(f"binarized MNIST split {split!r} has {x.shape[0]} images; "
                         f"expected {COUNTS[split]}")
    if x.size == 0:
        binary = True
    elif x.dtype in (np.uint8, np.bool_):
        binary = x.max() <= 1                              # fast path for the stored dtype
    else:
        binary = ((x == 0) | (x == 1)).all()
    if not binary:
        bad = x[(x != 0) & (x != 1)]
        raise ValueError(f"binarized MNIST split {split!r} has {bad.size} non-binary values "
                         f"(e.g. {bad[0].item()!r}); every pixel must be 0 or 1")
    if verify:
        actual = dl.sha256_array(x.astype(np.uint8, copy=False))
        if actual != SHA256[split]:
            raise dl.ChecksumError(f"binarized MNIST split {split!r} does not match the published "
                                   f"data: sha256 {actual}, expected {SHA256[split]}")


def check_header(split, shape, dtype, check_counts=True):
    """Raise ValueError unless a .npy header's `shape` and `dtype` fit `split` (before it is read).

    uint8 (or bool) of shape (N, 784); N the published count when `check_counts`, else at most
    MAX_SPLIT_BYTES // 784 images.
    """
    if dtype not in (np.dtype(np.uint8), np.dtype(np.bool_)):
        raise ValueError(f"binarized MNIST split {split!r} has dtype {dtype}; expected uint8 (0/1 pixels)")
    if len(shape) != 2 or shape[1] != D:
        raise ValueError(f"binarized MNIST split {split!r} has shape {shape}; expected (N, {D})")
    if check_counts and shape[0] != COUNTS[split]:
        raise ValueError(f"binarized MNIST split {split!r} has {shape[0]} images; expected {COUNTS[split]}")
    if shape[0] * D > MAX_SPLIT_BYTES:
        raise ValueError(f"binarized MNIST split {split!r} declares {shape[0]:,} images, more than the "
                         f"{MAX_SPLIT_BYTES // D:,} a split may have (MAX_SPLIT_BYTES)")


def load_binarized_mnist(data_dir=None, download=False, dtype=np.uint8, verify=True, check_counts=True):
    """Load binarized MNIST as a dict of host arrays.

    Parameters
    ----------
    data_dir : folder holding ``binarized-mnist/binarized_mnist.npz`` (default: see dl.data_dir)
    download : bool, fetch and convert the data (:func:`download_binarized_mnist`) when missing
    dtype : dtype of the returned arrays (uint8 as stored; np.float32 to feed a model)
    verify : bool, check each array's sha256 against the published data (False for small fakes)
    check_counts : bool, check the 50000 / 10000 / 10000 image counts

    Returns
    -------
    dict with 'train' (50000, 784), 'valid' (10000, 784), 'test' (10000, 784), values in {0, 1}.
    Raises MissingDataError when the file is absent and `download` is False.

    The .npz is checked from its headers before any array is read or inflated
    (:func:`scratchnade.data.download.read_npz` with :func:`check_header`): exactly the arrays
    train, valid and test, uint8, (N, 784), N the published count (`check_counts`) and at most
    MAX_SPLIT_BYTES inflated, so a damaged file, a decompression bomb or a header claiming a
    huge shape raises DataFileError (a ValueError) naming the file, without the memory.
    """
    path = binarized_mnist_path(data_dir)
    if not path.is_file():
        if not download:
            raise dl.MissingDataError(path, "call scratchnade.data.binary.download_binarized_mnist"
                                            "(data_dir) or load_binarized_mnist(download=True)")
        download_binarized_mnist(data_dir)
    data = dl.read_npz(path, SPLITS, lambda split, shape, dtype: check_header(split, shape, dtype, check_counts),
                       max_entry_bytes=MAX_SPLIT_BYTES, max_total_bytes=3 * MAX_SPLIT_BYTES)
    for split, x in data.items():
        check_split(split, x, check_counts, verify)
    return {split: x.astype(dtype, copy=False) for split, x in data.items()}


def parse_amat(raw, ncols=D):
    """Parse .amat text (one image per line, `ncols` values 0/1 separated by spaces) into uint8 (N, ncols).

    Vectorised over the bytes: every '0'/'1' byte is one pixel, so the 78 MB train file parses
    in well under a second. Text with other numbers ("0.0", "1e0") falls back to np.loadtxt.
    """
    b = np.frombuffer(raw, dtype=np.uint8)
    digit = (b == ord("0")) | (b == ord("1"))
    space = (b == ord(" ")) | (b == ord("\t")) | (b == ord("\r")) | (b == ord("\n"))
    if not (digit | space).all() or (digit[1:] & digit[:-1]).any():  # not single 0/1 tokens
        x = np.loadtxt(io.BytesIO(bytes(raw)), ndmin=2)
        check = x.shape[1] == ncols and ((x == 0) | (x == 1)).all()
        if not check:
            raise ValueError(f"not an .amat file of {ncols} binary values per line (got shape {x.shape})")
        return x.astype(np.uint8)
    starts = np.r_[0, np.flatnonzero(b == ord("\n")) + 1]
    starts = starts[starts < b.size]
    per_line = np.add.reduceat(digit.view(np.uint8), starts, dtype=np.int64) if b.size else starts
    per_line = per_line[per_line > 0]                     # blank lines carry no image
    if (per_line != ncols).any():
        bad = int(np.flatnonzero(per_line != ncols)[0])
        raise ValueError(f"image {bad} of the .amat file has {per_line[bad]} values; expected {ncols}")
    return (b[digit] - ord("0")).reshape(-1, ncols)


def download_binarized_mnist(data_dir=None, keep_amat=False, progress=True):
    """Download Larochelle's .amat files, check them, and write ``binarized_mnist.npz``; return its Path.

    Each ``binarized_mnist_{split}.amat`` is fetched from AMAT_URL into the data folder (an
    .amat already there is reused), parsed, and checked against the published counts and
    per-array sha256. The .npz is written atomically; the .amat files (about 110 MB of text) are
    then deleted unless `keep_amat`. An existing .npz is rebuilt.
    """
    path = binarized_mnist_path(data_dir)
    amats = {s: path.parent / f"binarized_mnist_{s}.amat" for s in SPLITS}
    data = {}
    for split, amat in amats.items():
        if not amat.is_file():
            dl.download(AMAT_URL.format(split=split), amat, progress=progress)
        data[split] = parse_amat(amat.read_bytes())
        try:
            check_split(split, data[split])
        except ValueError as err:
            raise type(err)(f"{err}\n  (parsed from {amat}; delete it to download it again)") from err
    dl.atomic_write(path, lambda f: np.savez_compressed(f, **data))
    if not keep_amat:
        for amat in amats.values():
            amat.unlink()
    return path


def minibatches(x, batch_size, rng=None, shuffle=True, drop_last=False, dtype=None):
    """Yield the rows of `x` in mini-batches, in a random order by default.

    Parameters
    ----------
    x : (N, D) array on any device
    batch_size : int B
    rng : numpy Generator, int seed or None (fresh entropy); the permutation is drawn on the
          host and moved to x's device, so one seed gives the same batches on every device
    shuffle : bool, False keeps the stored order (fine for evaluation)
    drop_last : bool, skip a last batch smaller than B
    dtype : cast each batch (e.g. np.float32 for a model); None keeps x's dtype

    Yields
    ------
    (B, D) arrays on x's device (the last one (N mod B, D) unless drop_last). One call is one
    epoch; for a fresh, reproducible order each epoch pass :func:`scratchnade.train.fit`
    ``lambda epoch: minibatches(x, B, rng=np.random.default_rng(seed + epoch))``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    order = None
    if shuffle:
        order = to_device(np.random.default_rng(rng).permutation(x.shape[0]), device_of(x))
    return _batches(x, int(batch_size), order, drop_last, dtype)


def _batches(x, B, order, drop_last, dtype):
    """The generator behind :func:`minibatches` (arguments already checked)."""
    N = x.shape[0]
    stop = N - N % B if drop_last else N
    for start in range(0, stop, B):
        rows = slice(start, start + B) if order is None else order[start:start + B]
        batch = x[rows]                                   # (B, D)
        yield batch if dtype is None else batch.astype(dtype, copy=False)
