"""``python -m scratchnade ...``: the command line of :mod:`scratchnade.cli`."""
import sys

from .blas_env import prepare_blas

prepare_blas()               # before NumPy loads its BLAS (scratchnade.blas_env says why)

from .cli import main  # noqa: E402

sys.exit(main())
