"""Careless and hostile use, round three (issue 27), the items about outputs: a command never
writes over one of its inputs, nor over a file already there unless told (``--overwrite``), and
every output is checked before the first is written (item 3); ``aelab sample`` refuses sizes its
grids cannot draw before any work (item 8); the messages name the right thing and the right fix
(item 12: a folder given for a file, a file given for a run, a read-only run found at once).

Each test fails on the code before issue 27: there the outputs were written over (exit 0), the
work began before the refusal, or the message misled."""

import errno
import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from aelab import runs
from aelab.cli import main
from aelab.errors import ConfigError
from aelab.models import build_model

from test_errors import cli_error, raises

CODEC = "zoo:codec-100b"  # a shipped codec for 28x28 grey images: no training needed


def _png(path, side=28, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), mode="L").save(path)
    return path


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_work(*args, **kwargs):
    raise AssertionError("the work began (the model was loaded) before the refusal")


@pytest.fixture
def denoise_run(tmp_path):
    torch.manual_seed(0)
    return runs.save_model(build_model("denoising", (1, 12, 12)), tmp_path / "run", train_config={"epochs": 1})


@pytest.fixture
def vae_run(tmp_path):
    torch.manual_seed(0)
    model = build_model("variational", (1, 12, 12), net="dense", net_options={"latent_dim": 2, "hidden": [16]})
    return runs.save_model(model, tmp_path / "vae", train_config={"epochs": 1})


def _disk_full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _read_only(monkeypatch, folder):
    """Make ``folder`` (and what is below it) refuse new files, as a read-only folder or filesystem
    does for every writer. Tests run as root here, where chmod refuses nothing, so the refusal is
    made where aelab creates its files (tempfile.mkstemp, which every writer goes through)."""
    real, top = tempfile.mkstemp, os.path.realpath(folder)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and (os.path.realpath(dir) + os.sep).startswith(top + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# ============================================================ item 3: outputs over inputs

def test_compress_never_writes_over_its_input(tmp_path, capsys):
    image = _png(tmp_path / "a.png")
    before = image.read_bytes()
    for extra in ([], ["--overwrite"]):  # an input is refused even when replacing was asked for
        cli_error(capsys, ["compress", "--run", CODEC, str(image), "--out", str(image), *extra],
                  "expected an output other than the inputs", f"found {image} among them",
                  "would destroy that input", "choose another --out")
        assert image.read_bytes() == before
    folder = tmp_path / "photos"  # a folder of images: the images in it are the inputs
    _png(folder / "b.png", seed=1)
    _png(folder / "c.png", seed=2)
    kept = _snapshot(folder)
    cli_error(capsys, ["compress", "--run", CODEC, str(folder), "--out", str(folder / "c.png"), "--overwrite"],
              "would destroy that input")
    assert _snapshot(folder) == kept


def test_compress_replaces_an_existing_file_only_with_overwrite(tmp_path, capsys):
    from aelab.compression import compress_files

    image = _png(tmp_path / "a.png")
    out = tmp_path / "mine.ael"
    out.write_bytes(b"the user's own file")
    cli_error(capsys, ["compress", "--run", CODEC, str(image), "--out", str(out)],
              f"expected a new file at {out}, found one already there", "pass --overwrite to replace it")
    assert out.read_bytes() == b"the user's own file"
    raises(ConfigError, lambda: compress_files(CODEC, [image], out), "pass --overwrite")
    assert main(["compress", "--run", CODEC, str(image), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:3] == b"AEL"


def test_decompress_checks_every_output_before_the_first(tmp_path, capsys):
    from aelab.compression import decompress_file

    images = [_png(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    stream = tmp_path / "three.ael"
    assert main(["compress", "--run", CODEC, *map(str, images), "--out", str(stream)]) == 0
    out = tmp_path / "decoded"
    out.mkdir()
    (out / "00002.png").write_bytes(b"the user's picture")  # the last of the three names
    cli_error(capsys, ["decompress", str(stream), "--run", CODEC, "--out", str(out)],
              "expected new files", "00002.png", "already there", "pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["00002.png"]  # 00000.png and 00001.png not written
    assert (out / "00002.png").read_bytes() == b"the user's picture"
    raises(ConfigError, lambda: decompress_file(stream, out, run_dir=CODEC), "pass --overwrite")
    assert main(["decompress", str(stream), "--run", CODEC, "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    with Image.open(out / "00002.png") as im:
        assert im.size == (28, 28)


def test_decompress_never_writes_over_the_stream_it_reads(tmp_path, capsys):
    out = tmp_path / "decoded"
    stream = out / "00000.png"  # a stream that happens to carry the name of the first output
    out.mkdir()
    assert main(["compress", "--run", CODEC, str(_png(tmp_path / "a.png")), "--out", str(stream)]) == 0
    before = stream.read_bytes()
    cli_error(capsys, ["decompress", str(stream), "--run", CODEC, "--out", str(out), "--overwrite"],
              "expected outputs other than the inputs", "would destroy that input")
    assert stream.read_bytes() == before


def test_denoise_never_writes_over_an_input_called_side_by_side(denoise_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    inputs = [_png(folder / "side_by_side.png", side=12), _png(folder / "b.png", side=12, seed=1)]
    kept = _snapshot(folder)
    for extra in ([], ["--overwrite"]):
        cli_error(capsys, ["denoise", "--run", str(denoise_run), *map(str, inputs), "--out", str(folder), *extra],
                  "expected outputs other than the inputs", "side_by_side.png", "would destroy that input")
        assert _snapshot(folder) == kept  # nothing written, b.denoised.png included


def test_denoise_replaces_earlier_results_only_with_overwrite(denoise_run, tmp_path, capsys):
    from aelab.inference import denoise

    a, b = _png(tmp_path / "a.png", side=12), _png(tmp_path / "b.png", side=12, seed=1)
    out = tmp_path / "clean"
    out.mkdir()
    (out / "b.denoised.png").write_bytes(b"the user's file")
    cli_error(capsys, ["denoise", "--run", str(denoise_run), str(a), str(b), "--out", str(out)],
              "expected new files", "b.denoised.png", "already there", "pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["b.denoised.png"]  # a.denoised.png not written first
    assert (out / "b.denoised.png").read_bytes() == b"the user's file"
    raises(ConfigError, lambda: denoise(denoise_run, [a, b], out=out), "pass --overwrite")
    assert main(["denoise", "--run", str(denoise_run), str(a), str(b), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.denoised.png", "b.denoised.png", "side_by_side.png"]
    assert (out / "b.denoised.png").read_bytes()[:4] == b"\x89PNG"
    # an .npz in, denoised.npz out: never the input itself
    npz = out / "denoised.npz"
    np.savez(npz, x=np.zeros((2, 1, 12, 12), np.float32))
    before = npz.read_bytes()
    cli_error(capsys, ["denoise", "--run", str(denoise_run), str(npz), "--out", str(out), "--overwrite"],
              "would destroy that input")
    assert npz.read_bytes() == before


def test_sample_and_data_show_never_write_over_an_input_image(vae_run, tmp_path, capsys):
    """vae_*.png and samples.png are aelab's own names, replaced freely, but never one of the images read."""
    folder = tmp_path / "images"
    for i, name in enumerate(("vae_samples.png", "samples.png", "c.png", "d.png")):
        _png(folder / name, side=12, seed=i)
    kept = _snapshot(folder)
    cli_error(capsys, ["sample", "--run", str(vae_run), "--data", str(folder), "--out", str(folder)],
              "expected outputs other than the inputs", "vae_samples.png", "would destroy that input")
    cli_error(capsys, ["data", "show", "--data", str(folder), "--out", str(folder)],
              "expected outputs other than the inputs", "samples.png", "would destroy that input")
    assert _snapshot(folder) == kept
    figures = tmp_path / "figures"  # elsewhere they are written, and written again
    for _ in range(2):
        assert main(["sample", "--run", str(vae_run), "--data", str(folder), "--out", str(figures), "--n", "4",
                     "--steps", "3"]) == 0
    assert {"vae_samples.png", "vae_manifold.png"} <= {p.name for p in figures.iterdir()}


# ============================================================ item 8: sample's bounds

@pytest.mark.parametrize("flag,value", [("--steps", "100000"), ("--n", "100000000"), ("--steps", "1"),
                                        ("--n", "0"), ("--steps", "31"), ("--n", "401")])
def test_sample_refuses_what_its_grids_cannot_draw_before_any_work(vae_run, capsys, monkeypatch, flag, value):
    monkeypatch.setattr(runs, "load_model", _no_work)  # before, --steps 100000 ran for ever from here
    bound = {"--n": "from 1 to 400", "--steps": "from 2 to 30"}[flag]
    cli_error(capsys, ["sample", "--run", str(vae_run), flag, value],
              f"expected {flag[2:]} a whole number {bound}", f"found {value}", f"e.g. {flag} ")


def test_sample_help_names_the_bounds_it_enforces(capsys):
    from aelab import generate

    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"1 to {generate.MAX_SAMPLES}" in text and f"2 to {generate.MAX_STEPS}" in text
    generate.check_bounds(generate.MAX_SAMPLES, generate.MAX_STEPS)  # the bounds themselves are fine
    raises(ConfigError, lambda: generate.check_bounds(True, 10), "expected n a whole number")


# ============================================================ item 12: messages that mislead

def test_compress_to_a_folder_says_a_file_is_expected(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    line = cli_error(capsys, ["compress", "--run", CODEC, str(_png(tmp_path / "a.png")), "--out", str(folder)],
                     f"expected a file to write at {folder}, found a folder", "e.g.", "images.ael")
    assert "disk space" not in line
    assert list(folder.iterdir()) == []


def test_a_run_given_as_a_file_is_named_a_file(denoise_run, capsys):
    weights = denoise_run / runs.WEIGHTS
    line = cli_error(capsys, ["report", "--run", str(weights)],
                     f"expected a run directory at {weights}, found a file", "pass the run's folder",
                     f"--run {denoise_run}")
    assert "found nothing" not in line
    raises(ConfigError, lambda: runs.read_config(denoise_run / runs.CONFIG), "found a file")


def test_report_on_a_read_only_run_names_the_fix_report_has(denoise_run, capsys, monkeypatch):
    _read_only(monkeypatch, denoise_run)
    line = cli_error(capsys, ["report", "--run", str(denoise_run)],
                     "read-only", f"make {denoise_run} writable", "copy the run elsewhere")
    assert "--out" not in line  # `aelab report` has none
    assert not (denoise_run / "report.html").exists()
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", _disk_full)  # the folder can be written, the page cannot
    line = cli_error(capsys, ["report", "--run", str(denoise_run)], "could not write", "report.html",
                     "copy the run elsewhere")
    assert "--out" not in line


def test_explore_on_a_read_only_run_refuses_before_any_work(denoise_run, tmp_path, capsys, monkeypatch):
    _read_only(monkeypatch, denoise_run)
    monkeypatch.setattr(runs, "load_model", _no_work)  # before, 28 s of work came first
    cli_error(capsys, ["explore", "--run", str(denoise_run)],
              "expected a folder aelab can write in", "read-only", f"make {denoise_run} writable", "--out")
    cli_error(capsys, ["explore", "--run", str(denoise_run), "--out", str(denoise_run / "page.html")],
              "read-only", "choose another --out")
    config = (denoise_run / runs.CONFIG).read_bytes()  # nor is the page written over the run's own files
    cli_error(capsys, ["explore", "--run", str(denoise_run), "--out", str(denoise_run / runs.CONFIG)],
              "would destroy that input")
    assert (denoise_run / runs.CONFIG).read_bytes() == config
