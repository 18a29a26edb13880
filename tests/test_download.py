"""Fashion-MNIST without apt: the download from a local HTTP server (no network), its pinned
SHA-256, atomic writes, the offline switches; and the pinned hashes checked against Debian's files."""

import gzip
import hashlib
import http.server
import io
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from aelab import data, download
from aelab.cli import build_parser, main
from aelab.errors import DataError, DataNotFoundError
from conftest import write_idx

NAMES = list(download.FILES)


def _fake_files(folder: Path) -> dict[str, bytes]:
    """The four files of a tiny Fashion-MNIST look-alike (6 train, 4 test images), as bytes."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 4)):
        img, lbl = data.FASHION_FILES[split]
        write_idx(folder / (img + ".gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / (lbl + ".gz"), rng.integers(0, 10, n))
    return {name: (folder / name).read_bytes() for name in NAMES}


class Server:
    """http.server on 127.0.0.1 in a thread: serves ``files``; ``broken[name]`` = "flip", "promise"
    (Content-Length of the whole file, fewer bytes sent), "short" (a shorter file) or an HTTP status."""

    def __init__(self, files):
        self.files, self.broken, self.requests = files, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                how = server.broken.get(name)
                if name not in server.files or isinstance(how, int):
                    self.send_error(how or 404)
                    return
                body = server.files[name]
                length = len(body)
                if how == "flip":
                    body = body[:20] + bytes([body[20] ^ 0x01]) + body[21:]
                elif how in ("promise", "short"):
                    body = body[:len(body) // 2]
                    length = length if how == "promise" else len(body)
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # HTTP/1.0: the connection closes after it

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fashion/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server of fake files; the real data hidden (no $AELAB_DATA, no Debian folder), the user
    cache in tmp_path, downloading on, the pinned table swapped for the fake files' hashes."""
    files = _fake_files(tmp_path / "served")
    srv = Server(files)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AELAB_DATA", raising=False)
    monkeypatch.delenv("AELAB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("AELAB_FASHION_URL", srv.url)
    monkeypatch.setattr(download, "FILES", {n: (len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()})
    yield srv
    srv.close()


def _cache_files():
    folder = data.user_cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_good_files_are_downloaded_checked_and_loaded(server, capsys):
    ds = data.load_fashion_mnist("train")
    assert ds.x.shape == (6, 1, 28, 28)
    assert len(data.load_fashion_mnist("test")) == 4
    assert sorted(server.requests) == sorted(NAMES)  # each file once; the test split found in the cache
    assert _cache_files() == sorted(NAMES)  # no temporary file left
    for name in NAMES:
        assert (data.user_cache_dir() / name).read_bytes() == server.files[name]
        assert (data.user_cache_dir() / name).stat().st_mode & 0o777 != 0o600  # the usual mode, not mkstemp's
    err = capsys.readouterr().err  # not a terminal: a line per file
    assert err.count("aelab: downloading http://127.0.0.1:") == 4


def test_progress_false_prints_nothing(server, capsys, tmp_path):
    download.fetch_fashion_mnist(tmp_path / "quiet", progress=False)
    assert sorted(p.name for p in (tmp_path / "quiet").iterdir()) == sorted(NAMES)
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_is_one_line(server, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    download.fetch_fashion_mnist(tmp_path / "tty")
    out = sys.stderr.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n") and out.count("\r") >= 4
    assert "downloaded t10k-labels-idx1-ubyte.gz" in out.rsplit("\r", 1)[-1]


def _refused(match, error=DataError):
    with pytest.raises(error, match=match) as err:
        data.load_fashion_mnist("train")
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "--data DIR" in msg
    return msg


def test_a_flipped_byte_is_refused_and_nothing_kept(server):
    server.broken[NAMES[1]] = "flip"
    msg = _refused("corrupted")
    assert NAMES[1] in msg and download.FILES[NAMES[1]][1][:16] in msg
    assert _cache_files() == [NAMES[0]]  # the good file before it is kept; the bad one and its temp are gone
    server.broken.clear()  # run it again: only the missing files are fetched
    assert len(data.load_fashion_mnist("train")) == 6
    assert server.requests == [NAMES[0], NAMES[1], NAMES[1], NAMES[2], NAMES[3]]


@pytest.mark.parametrize("how", ["promise", "short"])
def test_a_truncated_file_is_refused_and_nothing_kept(server, how):
    server.broken[NAMES[0]] = how  # fewer bytes than Content-Length, or an honest but short file
    _refused("truncated")
    assert _cache_files() == []


@pytest.mark.parametrize("status", [500, 404])
def test_a_server_error_is_one_line(server, status):
    server.broken[NAMES[0]] = status
    _refused(f"HTTP {status}", DataNotFoundError)
    assert _cache_files() == []


def test_no_server_is_one_line(server, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AELAB_FASHION_URL", f"http://127.0.0.1:{port}")
    _refused("could not download", DataNotFoundError)
    assert _cache_files() == []


def test_an_interrupted_download_leaves_nothing(server, monkeypatch):
    def interrupt(self, got):
        raise KeyboardInterrupt
    monkeypatch.setattr(download._Progress, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.load_fashion_mnist("train")
    assert _cache_files() == []


def test_offline_makes_no_request(server, monkeypatch):
    monkeypatch.setenv("AELAB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="Fashion-MNIST not found; looked in .*apt-get install"):
        data.load_fashion_mnist("train")
    assert server.requests == [] and _cache_files() == []


def test_an_explicit_data_folder_never_downloads(server, tmp_path):
    with pytest.raises(DataNotFoundError, match="found nothing there"):
        data.load_fashion_mnist("train", path=tmp_path / "nosuchdir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="missing train-images"):
        data.load_fashion_mnist("train", path=tmp_path / "empty")
    assert server.requests == []


def test_no_download_on_the_command_line(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AELAB_OFFLINE", "0")  # the flag sets it to 1; monkeypatch puts it back
    assert main(["data", "show", "--no-download", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error: Fashion-MNIST not found") and "\n" not in err
    assert server.requests == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["train"], ["reproduce"], ["compare"], ["rd"], ["evaluate", "--run", "r"],
                                  ["embed"], ["sample", "--run", "r"], ["data", "show"]])
def test_the_commands_that_load_fashion_mnist_take_no_download(argv, monkeypatch):
    monkeypatch.setenv("AELAB_OFFLINE", "0")
    assert build_parser().parse_args(argv).no_download is False and not download.offline()
    assert build_parser().parse_args(argv + ["--no-download"]).no_download is True and download.offline()


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("", False), ("0", False), ("false", False)])
def test_the_offline_variable(value, off, monkeypatch):
    monkeypatch.setenv("AELAB_OFFLINE", value)
    assert download.offline() is off


# the upstream gzip headers: FLG.FNAME, the mtime of the IDX files (2017-08-31), XFL 0, OS 3 (Unix)
UPSTREAM_MTIME = {"train": 1504176606, "t10k": 1504176627}
UPSTREAM_MD5 = {  # the Fashion-MNIST README's
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


@pytest.mark.parametrize("name", NAMES)
def test_the_pinned_hashes_are_upstreams(name):
    """Debian's file is the upstream deflate stream under a header without the name: put the
    upstream header back, and the bytes have the README's MD5 and the pinned size and SHA-256."""
    debian = data.SYSTEM_DIR / name
    if not debian.is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    raw = debian.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags: no name in the header
    mtime = UPSTREAM_MTIME[name.split("-")[0]].to_bytes(4, "little")
    upstream = b"\x1f\x8b\x08\x08" + mtime + b"\x00\x03" + name[:-3].encode() + b"\x00" + raw[10:]
    size, sha256 = download.FILES[name]
    assert hashlib.md5(upstream).hexdigest() == UPSTREAM_MD5[name]
    assert (len(upstream), hashlib.sha256(upstream).hexdigest()) == (size, sha256)
    assert gzip.GzipFile(fileobj=io.BytesIO(upstream)).read(4) in (b"\x00\x00\x08\x03", b"\x00\x00\x08\x01")
