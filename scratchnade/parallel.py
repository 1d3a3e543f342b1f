"""Elementwise work on every core: a small thread pool that runs independent row blocks at once.

NumPy's matmuls already use every core (BLAS has its own threads), but a ufunc runs on one.  A
training step at a word-level vocabulary spends a third of its time in elementwise passes: the
softmax over a (N, V) logits buffer and its gradient, Adam's dozen passes over every parameter.
Those passes already walk cache-sized blocks of rows one after the other
(:func:`scratchnade.functional.softmax_cross_entropy`, :func:`scratchnade.optim_host.update_blocked`).
NumPy releases the GIL inside a ufunc, so the blocks can simply be handed to threads:

    for_each_block(work, blocks)    # work(block) for every block; each thread takes a run of blocks

Each block sees exactly the operations it saw in the serial loop, so the result has the same bits
for any number of threads (tests/test_parallel.py).  Only independent blocks may go through here:
``work`` must not write what another block reads.

How many threads: :func:`set_threads` (the benchmarks' and the CLI's ``--threads``), else the
environment variable ``SCRATCHNADE_THREADS``, else the BLAS thread count (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` when set, else the cores this process may use), so that
the elementwise passes use the cores the matmuls use.  One thread turns the pool off: the plain
serial loop runs.  Work on a GPU never comes here (one block per array there).

Right after a matmul, OpenBLAS's idle threads spin on those same cores for ~0.1 s unless
``OPENBLAS_THREAD_TIMEOUT`` is small: :mod:`scratchnade.blas_env` sets it for the command line
and the benchmarks.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from numpy import ndarray as _ndarray

MIN_BLOCKS_PER_THREAD = 2    # fewer blocks than this per thread: not worth a hand-off (~10 us each)

_threads = None              # set_threads(n); None: from the environment
_pool = None                 # the executor, created on first use and resized with set_threads
_pool_size = 0


def _env_threads():
    """The thread count the environment asks for: SCRATCHNADE_THREADS, then the BLAS variables."""
    for var in ("SCRATCHNADE_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{var} must be a whole number of threads, got {value!r}") from None
            if n < 1:
                raise ValueError(f"{var} must be at least 1, got {n}")
            return n
    try:
        return len(os.sched_getaffinity(0))    # the cores this process may run on
    except AttributeError:                     # macOS, Windows
        return os.cpu_count() or 1


def threads():
    """The number of threads the elementwise passes use (1: serial)."""
    return _threads if _threads is not None else _env_threads()


def set_threads(n):
    """Use `n` threads for the elementwise passes from now on (None: back to the environment's).

    Returns the previous setting (None when it came from the environment), for a ``finally``.
    """
    global _threads
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"threads must be a whole number >= 1, got {n!r}")
    previous, _threads = _threads, (None if n is None else int(n))
    return previous


def _executor(n):
    """The shared pool, with n workers (made again when n changes)."""
    global _pool, _pool_size
    if _pool is None or _pool_size != n:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="scratchnade"), n
    return _pool


def runs(blocks, n):
    """`blocks` cut into at most n contiguous runs of nearly equal length (the runs one thread each
    walks in order, so that neighbouring blocks stay with one core)."""
    q, r = divmod(len(blocks), n)
    cuts = [i * q + min(i, r) for i in range(n + 1)]
    return [blocks[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def for_each_block(work, blocks):
    """Call ``work(b)`` for every b in `blocks`, on :func:`threads` threads when that pays.

    Serial (a plain loop, in order) with one thread or fewer than MIN_BLOCKS_PER_THREAD blocks per
    thread.  Otherwise each thread walks one contiguous run of blocks (:func:`runs`); the calling
    thread takes the first run itself.  An exception in any block is raised here, after every run
    has stopped (no thread is left writing when the caller sees it).
    """
    n = min(threads(), len(blocks) // MIN_BLOCKS_PER_THREAD)
    if n <= 1:
        for b in blocks:
            work(b)
        return

    def walk(run):
        for b in run:
            work(b)

    first, *rest = runs(list(blocks), n)
    futures = [_executor(n - 1).submit(walk, run) for run in rest]
    try:
        walk(first)
    finally:
        errors = [f.exception() for f in futures]          # waits for every run
    for err in errors:
        if err is not None:
            raise err


_blas = None                 # threadpoolctl's handle on the loaded BLAS libraries (made on first use)


def _blas_libraries():
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


def blas_controllable():
    """True when :func:`blas_one_thread` can set the BLAS library's thread count."""
    return bool(_blas_libraries().lib_controllers)


@contextmanager
def blas_one_thread():
    """``with blas_one_thread():`` each BLAS call of the block runs on its calling thread alone, for
    work that makes small matmuls inside :func:`for_each_block` (each pool thread one at a time).
    Does nothing where the BLAS library's threads cannot be set (see :func:`blas_controllable`).

    Why: a matmul called from two pool threads at once, each asking BLAS for two threads,
    runs ~2.5x slower than on one thread each (1 MB blocks of the order-p NADE's dW_s = dG_s^T
    h_s on 2 cores: 106 ms against 39 ms for the whole).  threadpoolctl (a dependency) finds
    the BLAS library NumPy loaded and sets its thread count, ~15 us.
    """
    if not blas_controllable():
        yield
        return
    limiter = _blas_libraries().limit(limits=1)
    try:
        yield
    finally:
        limiter.restore_original_limits()


# ----------------------------------------------------------------------------- helpers for the models

BLOCK_BYTES = 1 << 20        # ~1 MB pieces for the helpers below


def column_blocks(a):
    """Slices of axis 1 of `a` (T, N, ...) cutting each slab a[t] into ~BLOCK_BYTES pieces: the
    blocks of a running sum over axis 0, which are independent column by column.  One slice for a
    small array or a GPU array (NumPy's ndarray only; a GPU runs the whole slab in one kernel)."""
    n = a.shape[1] if a.ndim >= 2 else 1
    if type(a) is not _ndarray or a.ndim < 2 or a.shape[0] == 0 or a[0].nbytes < 2 * BLOCK_BYTES:
        return [slice(None)]
    step = max(1, n * BLOCK_BYTES // a[0].nbytes)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def zero_(a):
    """a[...] = 0 in place, a C-contiguous host array cut into ~BLOCK_BYTES pieces on every core
    (a (p, d, H) gradient buffer of the order-p NADE is 272 MB).  Returns a."""
    if type(a) is not _ndarray or a.nbytes < 2 * BLOCK_BYTES or not a.flags.c_contiguous:
        a[...] = 0
        return a
    flat, step = a.reshape(-1), max(1, BLOCK_BYTES // a.itemsize)
    for_each_block(lambda b: flat[b].fill(0), [slice(i, i + step) for i in range(0, flat.size, step)])
    return a
