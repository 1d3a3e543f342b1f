"""One writer per run directory and clean faults: the lock (two processes, stale locks), the fresh-start
check, *.part files of a killed save, SIGTERM and the Ctrl-C message.  A few tests need a real second
process (subprocess); everything else runs in-process."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scratchnade import rundir
from scratchnade.checkpoint import load_checkpoint
from scratchnade.cli import main
from scratchnade.rundir import (LOCK_NAME, RUN_FILES, RunDirError, RunDirLock, RunDirLocked, check_fresh,
                                checkpoint_epoch, clean_partials)

ROOT = Path(__file__).resolve().parent.parent
NADE = ["--model", "nade", "--hidden", "4", "--dim", "6", "--n-train", "300", "--batch-size", "50", "--no-plot"]


def dead_pid():
    """A pid that runs no process on this host (above the kernel's pid_max)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 2 ** 22 + 1


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def python(script, *args, **kw):
    """Start `script` (Python source) in a fresh interpreter with the package importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def one_line_error(capsys, *names):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


# ----------------------------------------------------------------------------- the lock itself

def test_lock_holds_pid_host_command_and_is_released(tmp_path):
    with RunDirLock(tmp_path, "train --run-dir x"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "train --run-dir x"
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()} on {socket.gethostname()}.*train --run-dir x"):
            RunDirLock(tmp_path, "another").acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunDirLock(tmp_path):                                   # free again
        pass


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                                  "command": "killed train", "time": 0, "token": "t"}))
    notes = []
    with RunDirLock(tmp_path, "me", note=notes.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "me"
    assert len(notes) == 1 and "stale lock" in notes[0] and "killed train" in notes[0]
    assert not list(tmp_path.iterdir())                          # no lock, no set-aside copy


def test_a_lock_of_another_host_or_a_fresh_empty_one_is_obeyed(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere", "command": "c"}))
    with pytest.raises(RunDirLocked, match="on elsewhere.*delete .*\\.lock"):
        RunDirLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("")                        # a holder between create and write
    with pytest.raises(RunDirLocked, match="starting"):
        RunDirLock(tmp_path).acquire()
    old = time.time() - 2 * rundir.UNREADABLE_GRACE_S            # ... killed there long ago: stale
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with RunDirLock(tmp_path, note=lambda text: None):
        pass


@pytest.mark.parametrize("name", [*RUN_FILES, "last.npz.k2j3.part"])
def test_check_fresh_refuses_any_run_file(tmp_path, name):
    check_fresh(tmp_path)                                        # empty: fine
    (tmp_path / LOCK_NAME).write_text("")                        # a lock alone is no run (locked=True: ours)
    check_fresh(tmp_path, locked=True)
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(RunDirError, match=f"{name}.*--resume"):
        check_fresh(tmp_path, locked=True)


def test_clean_partials_and_checkpoint_epoch(tmp_path):
    (tmp_path / "last.npz.abc.part").write_bytes(b"PK half")
    (tmp_path / "keep.txt").write_text("x")
    assert clean_partials(tmp_path) == ["last.npz.abc.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert checkpoint_epoch(tmp_path / "missing.npz") is None
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert checkpoint_epoch(tmp_path / "junk.npz") is None


# ----------------------------------------------------------------------------- the command line

def test_fresh_train_into_a_directory_holding_only_best_npz_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *NADE, "--epochs", "1", "--run-dir", str(run)]) == 0
    for name in ("last.npz", "config.json", "history.csv", "history.json"):
        (run / name).unlink()
    before = snapshot(run)
    assert list(before) == [Path("best.npz")]
    capsys.readouterr()
    assert main(["train", *NADE, "--epochs", "1", "--run-dir", str(run)]) == 2
    one_line_error(capsys, "best.npz", f"--resume {run}", "--run-dir")
    assert snapshot(run) == before


def test_a_resume_takes_over_a_stale_lock_and_releases_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *NADE, "--epochs", "1", "--run-dir", str(run)]) == 0
    assert not (run / LOCK_NAME).exists()                        # released at the end of the run
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                             "command": "python -m scratchnade train (killed)"}))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "took over the stale lock" in capsys.readouterr().err
    assert not (run / LOCK_NAME).exists() and load_checkpoint(run / "last.npz")[0]["epoch"] == 2


HOLD = """
    import sys, time
    from pathlib import Path
    from scratchnade.cli import main
    from scratchnade.models.nade import NADE
    real, calls, go = NADE.loss_and_grads, [0], Path(sys.argv[2])

    def held(self, x):                     # in epoch 2: tell the test, then wait for its go
        calls[0] += 1
        if calls[0] == 8:
            Path(sys.argv[3]).touch()
            while not go.exists():
                time.sleep(0.02)
        return real(self, x)
    NADE.loss_and_grads = held
    sys.exit(main(["train", *sys.argv[4:], "--epochs", "2", "--run-dir", sys.argv[1]]))
"""


def test_a_second_writer_is_refused_while_a_run_holds_the_directory(tmp_path, capsys):
    run, go, ready = tmp_path / "run", tmp_path / "go", tmp_path / "ready"
    first = python(HOLD, run, go, ready, *NADE)
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline
            time.sleep(0.02)
        before = snapshot(run)
        holder = f"pid {first.pid}"
        assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
        one_line_error(capsys, holder, str(run))
        assert main(["train", *NADE, "--epochs", "1", "--run-dir", str(run)]) == 2
        one_line_error(capsys, holder)
        assert main(["sample", str(run), "-n", "2"]) == 2          # would write samples.png into the run
        one_line_error(capsys, holder)
        assert snapshot(run) == before                             # nothing of the first run changed
    finally:
        go.touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 2 and not (run / LOCK_NAME).exists()
    assert main(["sample", str(run), "-n", "2"]) == 0              # free now


KILL_DURING_SAVE = """
    import os, signal, sys
    import numpy as np
    from scratchnade.cli import main
    real, saves = np.savez, [0]

    def killed(f, **arrays):               # the 3rd save (epoch 1's last.npz; best.npz came 2nd): half, then SIGKILL
        saves[0] += 1
        if saves[0] == 3:
            f.write(b"PK\\x03\\x04 half an archive")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(f, **arrays)
    np.savez = killed
    sys.exit(main(["train", *sys.argv[2:], "--epochs", "2", "--run-dir", sys.argv[1]]))
"""


def test_a_kill_during_a_save_leaves_parts_that_the_next_start_removes(tmp_path, capsys):
    run = tmp_path / "run"
    killed = python(KILL_DURING_SAVE, run, *NADE)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert list(run.glob("*.part")) and (run / LOCK_NAME).exists()  # what the kill left behind
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 0       # the save was never renamed in
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert "took over the stale lock" in err and "removed 1 temporary file" in err
    assert not list(run.glob("*.part")) and not (run / LOCK_NAME).exists()
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 2


SIGTERM_AT_STEP = """
    import os, signal, sys
    from scratchnade.cli import main
    from scratchnade.models.nade import NADE
    real, calls = NADE.loss_and_grads, [0]

    def terminated(self, x):               # step 9 is in epoch 2 (6 steps an epoch)
        calls[0] += 1
        if calls[0] == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, x)
    NADE.loss_and_grads = terminated
    sys.exit(main(["train", *sys.argv[2:], "--epochs", "3", "--run-dir", sys.argv[1]]))
"""


def test_sigterm_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    proc = python(SIGTERM_AT_STEP, run, *NADE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM) during epoch 2" in err and "last.npz holds the end of epoch 1" in err
    assert f"python -m scratchnade train --resume {run}" in err and "Traceback" not in err
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 1 and not (run / LOCK_NAME).exists()
    assert not list(run.glob("*.part"))
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0


def test_ctrl_c_during_a_save_names_the_epoch_last_npz_really_holds(tmp_path, monkeypatch, capsys):
    """Epoch 2 is trained and its best.npz written when Ctrl-C lands in the save of last.npz: the run state
    says 2 epochs, last.npz still holds epoch 1, and the message must say so."""
    import scratchnade.runs as runs_module
    real = runs_module.save_run

    def interrupted(path, model, optimizer, state, *args):
        if state.epoch == 2 and Path(path).name == "last.npz":
            raise KeyboardInterrupt
        return real(path, model, optimizer, state, *args)
    monkeypatch.setattr(runs_module, "save_run", interrupted)
    run = tmp_path / "run"
    assert main(["train", *NADE, "--epochs", "3", "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 1
    assert "interrupted during epoch 2" in err and "last.npz holds the end of epoch 1" in err
    assert not (run / LOCK_NAME).exists()
