"""One writer per run directory: a lock file that names the process writing the run.

``with hold(run_dir):`` creates ``run_dir/.aelab.lock`` with ``O_CREAT | O_EXCL`` holding the
pid, the host, the command and the time, and removes it on exit. A second writer (another
``aelab train`` into the same ``--out``) gets a one-line :class:`ConfigError` naming the first;
a lock left by a process that no longer runs (killed with SIGKILL, a crashed machine of the
same host) is taken over. The same process may hold a run more than once (``reproduce``
holds its run while ``train_run`` inside it holds it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError

LOCK = ".aelab.lock"
_held: dict[Path, int] = {}  # run directories this process holds, and how many times
_created: dict[Path, list[Path]] = {}  # per lock: the folders acquire created, deepest first


def _command() -> str:
    """This process's command line, as typed (``aelab train ...`` for the console script)."""
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read(path: Path) -> dict | None:
    """The lock's content, or None when it is unreadable (being written, or garbage)."""
    for _ in range(5):  # a lock just created may not hold its content yet
        try:
            info = json.loads(path.read_text())
            if isinstance(info, dict) and isinstance(info.get("pid"), int):
                return info
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


def _stale(info: dict | None) -> bool:
    if info is None:  # garbage that no live writer left (it writes its content at once)
        return True
    if info.get("host") not in (None, socket.gethostname()):
        return False  # another machine's process: its liveness cannot be checked from here
    return info["pid"] != os.getpid() and not _alive(info["pid"])


def acquire(run_dir: str | os.PathLike, command: str | None = None) -> Path:
    """Lock ``run_dir`` for this process (creating the folder); raise ConfigError when another holds it."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        return run_dir / LOCK
    created = [p for p in [run_dir, *run_dir.parents] if not p.exists()]  # folders this lock makes
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"expected a writable folder for {run_dir}, found {exc.strerror or exc}; "
                          "choose another --out") from None
    path = run_dir / LOCK
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or _command(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(path)
            if other == {}:  # released meanwhile
                continue
            if not _stale(other) and other["pid"] != os.getpid():
                since = str(other.get("since", "?")).split(" ")[-1][:5]
                raise ConfigError(f"{run_dir} is being written by process {other['pid']} "
                                  f"({other.get('command', '?')}) since {since}; wait for it or use another --out")
            with contextlib.suppress(FileNotFoundError):  # a dead writer's lock: take it over
                path.unlink()
            continue
        except OSError as exc:
            raise ConfigError(f"expected to create the lock {path}, found {exc.strerror or exc}; "
                              "check the folder's permissions or choose another --out") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(info))
        _held[key] = 1
        _created[key] = created
        return path
    raise ConfigError(f"expected to lock {run_dir}, found its lock file changing under us; "
                      "another process is starting in it: wait for it or use another --out")


def release(run_dir: str | os.PathLike) -> None:
    """Undo one :func:`acquire`; the last one removes the lock file."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key not in _held:
        return
    _held[key] -= 1
    if _held[key] == 0:
        del _held[key]
        with contextlib.suppress(FileNotFoundError):
            path = run_dir / LOCK
            if (_read(path) or {}).get("pid") == os.getpid():
                path.unlink()
        for folder in _created.pop(key, []):  # a folder made for a run that wrote nothing goes again
            try:
                folder.rmdir()
            except OSError:  # not empty: the run's files are in it
                break


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike, command: str | None = None):
    """``with hold(run_dir):`` the run is this process's to write."""
    acquire(run_dir, command)
    try:
        yield Path(run_dir)
    finally:
        release(run_dir)


__all__ = ["LOCK", "acquire", "release", "hold"]
