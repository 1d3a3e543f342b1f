"""``python -m scratchnade ...`` and the ``scratchnade`` command: the command line of :mod:`scratchnade.cli`,
after the BLAS settings that count only before NumPy loads (:mod:`scratchnade.blas_env`)."""
import sys

from .blas_env import prepare_blas, threads_in


def run():
    """The entry point: OPENBLAS_THREAD_TIMEOUT and ``--threads`` for BLAS first, then the command."""
    prepare_blas(threads_in(sys.argv[1:]))
    from .cli import main                   # imports NumPy
    return main()


if __name__ == "__main__":
    sys.exit(run())
