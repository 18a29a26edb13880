"""Download: Fashion-MNIST's four files from their public home, each checked against its pinned SHA-256.

Only :func:`aelab.data.load_fashion_mnist`'s default search calls it, after ``$AELAB_DATA``, the
user cache and Debian's ``dataset-fashion-mnist`` all came up empty; an explicit ``--data DIR``
never downloads, nor does anything while ``AELAB_OFFLINE=1`` (what ``--no-download`` sets).

Each file is streamed into a temporary file beside its final name, its size and SHA-256 are
checked, and only then is it renamed into place: an interrupted, truncated or corrupted
download leaves nothing half-written, and is refused in one line.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DataError, DataNotFoundError

# The public home (the files in zalandoresearch/fashion-mnist); $AELAB_FASHION_URL replaces it,
# e.g. with the project's mirror http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/
BASE_URL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
URL_ENV = "AELAB_FASHION_URL"
OFFLINE_ENV = "AELAB_OFFLINE"

# name: (bytes, SHA-256) of the upstream files, whose MD5s are the ones the Fashion-MNIST README
# publishes. Debian's dataset-fashion-mnist holds the same deflate streams under a gzip header
# without the file name (and another time), so its .gz files hash differently; they are found
# before any download (tests/test_download.py rebuilds the upstream files from them to check these).
FILES = {
    "train-images-idx3-ubyte.gz": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "t10k-labels-idx1-ubyte.gz": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
TIMEOUT_S = 60  # per connection attempt and per read: a stalled server is an error, not a hang
CHUNK = 1 << 20
FIX = ("run the command again, set AELAB_FASHION_URL to a mirror, `apt-get install dataset-fashion-mnist`, "
       "or pass --data DIR with the four files")

_UMASK = os.umask(0)
os.umask(_UMASK)


def offline() -> bool:
    """True when downloading is off: ``$AELAB_OFFLINE`` set to anything but empty, 0, false, no or off."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def base_url() -> str:
    """Where the four files are fetched from: ``$AELAB_FASHION_URL`` or :data:`BASE_URL`."""
    url = os.environ.get(URL_ENV, "").strip() or BASE_URL
    return url if url.endswith("/") else url + "/"


def fetch_fashion_mnist(folder: str | os.PathLike, progress: bool = True) -> Path:
    """Download into ``folder`` each of the four files it lacks; returns ``folder``.

    ``progress``: one line on stderr, updated in place on a terminal (else a line per file).
    A server error, no network, or a file whose size or SHA-256 is not the pinned one is a
    one-line :class:`DataError` and leaves no file of it behind.
    """
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    for name in missing:
        fetch_file(name, folder, progress=progress, last=name == missing[-1])
    return folder


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n >= 1000 else f"{n} bytes"


class _Progress:
    """One line on stderr: rewritten in place on a terminal (ended after the ``last`` file or a
    failure), else printed once per file."""

    def __init__(self, name: str, url: str, total: int, on: bool, last: bool):
        self.name, self.total, self.last = name, total, last
        self.tty = on and sys.stderr.isatty()
        self.shown = 0.0
        if on and not self.tty:
            print(f"aelab: downloading {url} ({_size(total)})", file=sys.stderr, flush=True)

    def _line(self, text: str, end: str = "") -> None:
        print(f"\raelab: {text}\033[K", end=end, file=sys.stderr, flush=True)

    def update(self, got: int) -> None:
        if self.tty and time.monotonic() - self.shown > 0.2:
            self.shown = time.monotonic()
            self._line(f"downloading {self.name}: {_size(got)} of {_size(self.total)} "
                       f"({100 * got // max(self.total, 1)}%)")

    def done(self, ok: bool) -> None:
        if self.tty and ok:
            self._line(f"downloaded {self.name} ({_size(self.total)}, SHA-256 checked)", "\n" if self.last else "")
        elif self.tty:
            print(file=sys.stderr, flush=True)  # end the line before the error


def fetch_file(name: str, folder: str | os.PathLike, progress: bool = True, last: bool = True) -> Path:
    """Download one of :data:`FILES` into ``folder/name`` through a checked temporary file
    (``last``: end the progress line after it)."""
    size, sha256 = FILES[name]
    folder, url = Path(folder), base_url() + name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"expected a writable folder for the download at {folder}, found {exc.strerror or exc}; "
                        "set XDG_CACHE_HOME to a writable folder, or pass --data DIR") from None
    shown = _Progress(name, url, size, progress, last)
    ok = False
    try:
        with os.fdopen(fd, "wb") as fh:
            got, found = _stream(url, fh, folder / name, size, shown)  # a network or disk failure: DataError
            _disk(lambda: (fh.flush(), os.fsync(fh.fileno())), folder / name)
        if got != size or found != sha256:
            what = (f"{got} bytes (truncated)" if got < size else f"more than {size} bytes" if got > size
                    else f"SHA-256 {found[:16]}... (corrupted)")
            raise DataError(f"{url}: expected {size} bytes with SHA-256 {sha256[:16]}..., found {what}; "
                            f"nothing was kept, {FIX}")
        _disk(lambda: (os.chmod(tmp, 0o666 & ~_UMASK), os.replace(tmp, folder / name)), folder / name)
        ok = True
    finally:
        shown.done(ok)
        if not ok:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return folder / name


def _disk(step, path: Path):
    """Run ``step`` (a write to the disk); an OSError is a one-line :class:`DataError`."""
    try:
        step()
    except OSError as exc:
        raise DataError(f"could not write {path} ({exc.strerror or exc}); nothing was kept, "
                        "free some disk space or pass --data DIR") from None


def _stream(url: str, fh, target: Path, size: int, shown: _Progress) -> tuple[int, str]:
    """Copy ``url`` into ``fh`` (the temporary file of ``target``), reading at most ``size`` + 1
    bytes; returns (bytes read, their SHA-256 in hex)."""
    digest, got = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "aelab"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            while got <= size:
                chunk = response.read(min(CHUNK, size + 1 - got))
                if not chunk:
                    break
                _disk(lambda: fh.write(chunk), target)  # noqa: B023 (run at once); its DataError passes below
                digest.update(chunk)
                got += len(chunk)
                shown.update(got)
    except urllib.error.HTTPError as exc:
        raise DataNotFoundError(f"could not download {url}: the server answered HTTP {exc.code} {exc.reason}; "
                                f"nothing was kept, {FIX}") from None
    except http.client.IncompleteRead:  # fewer bytes than the server promised: truncated, refused below
        pass
    except (OSError, http.client.HTTPException) as exc:  # no network, refused, reset, timed out, TLS
        reason = getattr(exc, "reason", None) or exc
        raise DataNotFoundError(f"could not download {url} ({reason}); nothing was kept, "
                                f"check the network or {FIX}") from None
    return got, digest.hexdigest()
