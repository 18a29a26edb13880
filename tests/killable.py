"""Run ``aelab ARGS...`` in a child process that a test can kill at chosen moments.

:class:`Child` forks the test process (aelab and torch already imported, so the child
starts at once) or, with ``spawn=True``, starts a fresh ``python tests/killable.py``
(a real command line, paying Python's and torch's start-up). Either way the child runs
``aelab.cli.main(ARGS)`` and exits with its status; its stderr is kept in a file.

``kill_on="FILE:N:WHEN"`` makes the child kill itself during the N-th atomic write of
FILE (e.g. ``checkpoint.pt:2:torn``):
- ``torn``: SIGKILL after half of the new bytes are in the temporary file, before fsync
  and rename;
- ``before-rename``: SIGKILL after the temporary file is complete and fsynced, before the
  rename;
- ``sigint`` / ``sigterm``: SIGINT (a Ctrl-C) or SIGTERM at that moment; the process
  carries on and handles it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def arm(spec: str) -> None:
    """Install the ``kill_on`` hooks in this process (see the module docstring)."""
    target, nth, when = spec.split(":")
    nth = int(nth)
    seen = {"n": 0}
    armed: set[int] = set()
    real_mkstemp, real_fdopen, real_replace = tempfile.mkstemp, os.fdopen, os.replace

    def mkstemp(*args, prefix=None, **kwargs):
        fd, name = real_mkstemp(*args, prefix=prefix, **kwargs)
        if prefix == f".{target}.":
            seen["n"] += 1
            if seen["n"] == nth:
                armed.add(fd)
        return fd, name

    class Torn:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        return Torn(fh) if (fd in armed and when == "torn") else fh

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == target and armed and when != "torn":
            armed.clear()
            os.kill(os.getpid(), {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(when, signal.SIGKILL))
        return real_replace(src, dst, *args, **kwargs)

    tempfile.mkstemp, os.fdopen, os.replace = mkstemp, fdopen, replace


class Child:
    """``aelab ARGV`` in a child process; ``wait`` returns its exit status, negative for a
    signal (-9 after SIGKILL), as :mod:`subprocess` does."""

    def __init__(self, argv: list[str], workdir: Path, kill_on: str | None = None, spawn: bool = False):
        workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=workdir, prefix="stderr.", suffix=".txt")
        os.close(fd)
        self.stderr_path = Path(name)
        self.proc, self.status = None, None
        if spawn:
            cmd = [sys.executable, __file__] + (["--kill-on", kill_on] if kill_on else []) + ["--"] + argv
            with open(self.stderr_path, "w") as err:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never return into the test runner
            code = 1
            try:
                err = open(self.stderr_path, "w", buffering=1)
                os.dup2(err.fileno(), 2)
                sys.stderr = err
                sys.stdout = open(os.devnull, "w")
                signal.signal(signal.SIGINT, signal.default_int_handler)
                if kill_on:
                    arm(kill_on)
                from aelab.cli import main
                code = main(argv)
            except BaseException:  # noqa: BLE001  (report, then leave with a failure status)
                import traceback
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if the child is still running after ``timeout`` seconds."""
        if self.proc is not None:
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        if self.status is not None:
            return self.status
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG if deadline is not None else 0)
            if pid:
                self.status = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                return self.status
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        elif self.status is None:  # not yet reaped, so the pid is still ours
            os.kill(self.pid, signal.SIGKILL)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


if __name__ == "__main__":  # the spawned form: python tests/killable.py [--kill-on SPEC] -- ARGS...
    args = sys.argv[1:]
    if args and args[0] == "--kill-on":
        arm(args[1])
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    from aelab.cli import main
    sys.exit(main(args))
