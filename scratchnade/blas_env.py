"""Settings for the BLAS library NumPy loads.  They count only when made BEFORE NumPy is imported
(the library reads them once, when it loads), so this module imports nothing but ``os``: the
command line (``python -m scratchnade``) and the benchmarks call :func:`prepare_blas` first thing.

Why a thread timeout.  After each matmul, OpenBLAS keeps its worker threads spinning for 2^28
cycles (~0.1 s) in case another matmul follows.  In a training step another matmul rarely follows
at once: the softmax over the logits does, or Adam's blocks, and those run on every core through
:mod:`scratchnade.parallel`, where the spinning threads steal the cores.  With
``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles, OpenBLAS's smallest) they go to sleep at once.  At 2
threads the step takes 0.96x the time for the recurrent NADE (untied and tied), 0.92x for the
order-p NADE and 0.99x for the binary NADE (``benchmarks/revision_speed.py --base HEAD
--new-env OPENBLAS_THREAD_TIMEOUT=4``, four rounds each).  One thread has no workers to spin.
Library users who import NumPy first can set the variable in their shell.
"""
import os

THREAD_TIMEOUT = "4"         # log2 of the cycles OpenBLAS's idle threads spin (its default: 28)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_in(argv):
    """The N of ``--threads N`` or ``--threads=N`` in a command line when it is a count >= 1, else
    None (the command line's parser then says what is wrong with it)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        return int(value) if value.strip().isdigit() and int(value) >= 1 else None
    return None


def prepare_blas(threads=None):
    """Before NumPy is imported: OPENBLAS_THREAD_TIMEOUT = 4 unless the environment sets it, and with
    `threads` (a count, or None to leave them alone) the BLAS thread variables set to it."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
    if threads:
        for var in THREAD_VARIABLES:
            os.environ[var] = str(threads)
