"""scratchnade.blas_env: BLAS settings made before NumPy loads (the CLI and the benchmarks call it first)."""
import subprocess
import sys

from scratchnade import blas_env


def test_the_thread_timeout_is_a_default_that_the_environment_overrides(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    blas_env.prepare_blas()
    assert blas_env.os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    blas_env.prepare_blas()
    assert blas_env.os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"


def test_a_thread_count_sets_every_blas_variable_and_none_leaves_them(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)     # restored afterwards, as the others
    for var in blas_env.THREAD_VARIABLES:
        monkeypatch.setenv(var, "7")
    blas_env.prepare_blas(None)
    assert all(blas_env.os.environ[var] == "7" for var in blas_env.THREAD_VARIABLES)
    blas_env.prepare_blas(2)
    assert all(blas_env.os.environ[var] == "2" for var in blas_env.THREAD_VARIABLES)


def test_the_entry_point_sets_it_before_numpy_is_imported():
    # in a fresh interpreter: the module loads no NumPy, and `python -m scratchnade` calls it first
    code = ("import os, sys; os.environ.pop('OPENBLAS_THREAD_TIMEOUT', None)\n"
            "import scratchnade.blas_env\n"
            "assert 'numpy' not in sys.modules, 'blas_env imported NumPy'\n"
            "import runpy; sys.argv = ['scratchnade', '--version']\n"
            "try:\n    runpy.run_module('scratchnade', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "4"


def test_threads_are_read_from_the_command_line_only_when_they_are_a_count():
    assert blas_env.threads_in(["train", "--threads", "3", "--model", "nade"]) == 3
    assert blas_env.threads_in(["--threads=2", "gradcheck"]) == 2
    assert blas_env.threads_in(["train", "--threads", "0"]) is None       # the parser names the error
    assert blas_env.threads_in(["train", "--threads", "two"]) is None
    assert blas_env.threads_in(["train", "--threads"]) is None
    assert blas_env.threads_in(["train", "--model", "nade"]) is None


def test_the_command_lines_threads_size_the_pool_before_or_after_the_command(capsys):
    from scratchnade import parallel
    from scratchnade.cli import main
    previous = parallel.set_threads(None)
    try:
        assert main(["gradcheck", "--model", "fvsbn", "--threads", "3"]) == 0
        assert parallel.threads() == 3
        assert main(["--threads", "2", "gradcheck", "--model", "fvsbn"]) == 0
        assert parallel.threads() == 2
    finally:
        parallel.set_threads(previous)
