"""One writer per run directory: a lock file that names the process writing the run.

``with hold(run_dir):`` creates ``run_dir/.aelab.lock`` with ``O_CREAT | O_EXCL`` holding the
pid, the host, the command, the time and the process's start (boot and start tick, where
``/proc`` tells them), and removes it on exit. A second writer (another ``aelab train`` into
the same ``--out``) gets a one-line :class:`ConfigError` naming the first: its pid, command,
host, date and the lock file, and how to clear it. A lock left by a process that no longer
runs on this host (killed with SIGKILL, or its pid now another process's: the start differs)
is taken over. A lock whose process cannot be asked (another host: a container restarted
under a new hostname, another machine on a shared disk) is taken over only when the user
says so (:func:`break_lock`, ``--break-lock``). The same process may hold a run more than
once (``reproduce`` holds its run while ``train_run`` inside it holds it again).
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


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_tick(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _state(info: dict | None) -> str:
    """``stale`` (no live writer: take it over), ``alive`` (a live writer on this host) or
    ``unknown`` (another host's process, which cannot be asked from here)."""
    if info is None:  # garbage that no live writer left (it writes its content at once)
        return "stale"
    if info.get("host") not in (None, socket.gethostname()):
        return "unknown"
    pid = info["pid"]
    if pid == os.getpid() or not _alive(pid):
        return "stale" if pid != os.getpid() else "alive"
    boot, tick = info.get("boot"), info.get("start")
    if boot is not None and _boot_id() is not None and boot != _boot_id():
        return "stale"  # written before this machine restarted: the pid is another process's now
    if tick is not None and _start_tick(pid) not in (None, tick):
        return "stale"  # the pid was reused by a process that started later
    return "alive"


def _held_message(run_dir: Path, info: dict, state: str) -> str:
    path = run_dir / LOCK
    who = (f"process {info['pid']} ({info.get('command', '?')}) on host {info.get('host', '?')} "
           f"since {info.get('since', '?')}")
    if state == "unknown":
        return (f"{run_dir} is locked by {who}, which cannot be asked from this host ({socket.gethostname()}); "
                f"if that process is gone (a restarted container, another machine), pass --break-lock or remove "
                f"{path}, else wait for it or use another --out")
    return (f"{run_dir} is being written by {who} (lock file {path}); wait for it or use another --out "
            f"(if that pid is no longer aelab's, pass --break-lock or remove the lock file)")


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
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "boot": _boot_id(), "start": _start_tick(os.getpid())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(path)
            if other == {}:  # released meanwhile
                continue
            state = _state(other)
            if state != "stale" and other["pid"] != os.getpid():
                raise ConfigError(_held_message(run_dir, other, state))
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


def break_lock(run_dir: str | os.PathLike) -> dict | None:
    """Remove the lock of ``run_dir`` left by a process that cannot be asked (``--break-lock``);
    return what it said (None when there was no lock). A lock whose writer is verifiably alive
    on this host is refused: stop that process first."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    if not os.path.lexists(path):
        return None
    info = _read(path)
    if info and _state(info) == "alive" and info.get("start") is not None and info["pid"] != os.getpid():
        raise ConfigError(f"{run_dir} is being written by process {info['pid']} ({info.get('command', '?')}) on this "
                          f"host since {info.get('since', '?')}, which is alive; --break-lock takes over only a lock "
                          "whose process is gone: wait for it or stop it")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"could not remove the lock {path} ({exc.strerror or exc}); check the folder's "
                          "permissions") from None
    return info or {}


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike, command: str | None = None):
    """``with hold(run_dir):`` the run is this process's to write."""
    acquire(run_dir, command)
    try:
        yield Path(run_dir)
    finally:
        release(run_dir)


__all__ = ["LOCK", "acquire", "release", "hold", "break_lock"]
