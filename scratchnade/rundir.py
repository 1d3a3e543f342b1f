"""One writer per run directory: a lock file, the fresh-start check, and leftovers of killed saves.

    with RunDirLock(run_dir, "train"):       # refuses a second writer, naming the holder
        clean_partials(run_dir)              # *.part files a killed save left behind
        ...                                  # train / resume / write figures

The lock is a file ``RUN_DIR/.lock`` created with ``os.open(O_CREAT | O_EXCL)`` (atomic on
local file systems), holding one JSON object: the holder's pid, host, command line, start
time and a random token.  It is removed on exit (the token says it is still ours).  A lock
whose pid no longer runs on this host is stale (its process was killed): it is taken over,
with a note on stderr.  A lock from another host cannot be checked and is always obeyed;
the message says which file to delete if that run is known to be gone.

A fresh ``train`` never writes into a directory that already holds a run file
(:data:`RUN_FILES`, or a ``*.part`` temporary): :func:`check_fresh` refuses it.
"""
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

LOCK_NAME = ".lock"
RUN_FILES = ("last.npz", "best.npz", "config.json", "history.csv", "history.json", "learning_curve.png")
UNREADABLE_GRACE_S = 10.0       # a lock file without content, younger than this, is being written


class RunDirError(ValueError):
    """A run directory that cannot be used now (locked, or holding another run)."""


class RunDirLocked(RunDirError):
    """Another live process holds the run directory's lock."""


def _pid_running(pid):
    """True if a process with this pid exists on this host (or we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                                        # exists, belongs to someone else
    except OSError:
        return True
    return True


def _read_holder(path):
    """The lock file's JSON object, or None if it is empty, partial or gone."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder):
    """'pid 123 on host, since 12:00:01: python -m scratchnade train ...' for a message."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}: {holder.get('command')}"


def _is_stale(holder, path):
    """A lock whose holder is known to be gone: same host, pid not running; or empty and old."""
    if holder is None:                                     # killed between create and write
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_GRACE_S
        except OSError:
            return True
    return holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
        and not _pid_running(holder["pid"])


class RunDirLock:
    """Exclusive lock on a run directory (a context manager; see the module docstring).

    run_dir must exist.  command: what the holder is doing, shown to a refused second writer.
    Raises RunDirLocked naming the holder when another live process has it.
    """

    def __init__(self, run_dir, command=None, note=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command or " ".join(["python -m scratchnade", *sys.argv[1:]])
        self.note = note if note is not None else (lambda text: print(text, file=sys.stderr))
        self.token = uuid.uuid4().hex
        self.held = False

    def _create(self):
        """Create the lock file; False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "time": time.time(), "token": self.token}
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(holder) + "\n")
        return True

    def acquire(self):
        if not self.run_dir.is_dir():
            raise RunDirError(f"run directory {self.run_dir} does not exist")
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            holder = _read_holder(self.path)
            if not _is_stale(holder, self.path):
                if holder is None:
                    raise RunDirLocked(f"{self.run_dir} is locked by another process that is starting "
                                       f"now ({self.path}); try again in a moment")
                raise RunDirLocked(f"{self.run_dir} is in use by {describe_holder(holder)}; wait for it to "
                                   f"finish, or use another directory (if that process is gone, delete "
                                   f"{self.path})")
            self._take_over(holder)
        raise RunDirLocked(f"could not lock {self.run_dir}: its lock file {self.path} keeps changing")

    def _take_over(self, holder):
        """Remove a stale lock, unless someone else replaced it meanwhile (renamed aside first)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return                                            # another process took it over first
        now = _read_holder(aside)
        if now is not None and holder is not None and now.get("token") != holder.get("token"):
            try:                                              # a live lock slipped in: put it back
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        who = describe_holder(holder) if holder else "an unknown process"
        self.note(f"note: took over the stale lock of {self.run_dir} (held by {who}, which no longer runs)")

    def release(self):
        if not self.held:
            return
        self.held = False
        holder = _read_holder(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def lock_holder(run_dir):
    """The live holder of run_dir's lock (a dict), or None when it is free or stale."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return None
    holder = _read_holder(path)
    if _is_stale(holder, path):
        return None
    return holder or {"pid": "?", "host": "?", "command": "(starting)"}


def run_files(run_dir):
    """The run files (and *.part temporaries) in run_dir, sorted; [] for a missing directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    return found + sorted(p.name for p in run_dir.glob("*.part"))


def check_fresh(run_dir, locked=False):
    """RunDirError unless run_dir is missing or holds no run file (a fresh `train` may use it).

    A directory locked by a live process is refused first, naming the holder (locked=True:
    the caller holds the lock itself, skip that check).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} is a file, not a directory")
    holder = None if locked else lock_holder(run_dir)
    if holder is not None:
        raise RunDirLocked(f"{run_dir} is in use by {describe_holder(holder)}; choose another --run-dir")
    found = run_files(run_dir)
    if found:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(found)}): continue it with "
                          f"--resume {run_dir}, or choose another --run-dir")


def clean_partials(run_dir):
    """Delete the *.part files a killed save left in run_dir (call it under the lock); their names."""
    removed = []
    for path in sorted(Path(run_dir).glob("*.part")):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path.name)
    return removed


def checkpoint_epoch(path, max_header_bytes=64 << 20):
    """The epoch recorded in a checkpoint's header, reading only that entry; None if unreadable.

    The header entry's inflated size is checked first (at most max_header_bytes).
    """
    import zipfile

    import numpy as np
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.getinfo("meta.json.npy").file_size > max_header_bytes:
                return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta.json"].tobytes().decode("utf-8"))
    except Exception:                                          # noqa: BLE001 - any unreadable file
        return None
    epoch = meta.get("epoch") if isinstance(meta, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
