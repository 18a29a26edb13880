"""aelab export --format onnx: every kind and net, the zoo's denoisers and a codec's transforms,
written through the command line and run again here with onnxruntime against PyTorch (another
batch size; another H x W for the fully convolutional nets); the refusals."""

import json

import numpy as np
import pytest
import torch

from aelab import runs
from aelab.cli import main
from aelab.export import TOLERANCE
from aelab.models import build_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TINY = {"conv": {"channels": [4, 4]}, "dense": {"hidden": [16], "latent_dim": 8}, "unet": {"widths": [4, 8]},
        "gdn": {"channels": 8, "latent_channels": 8, "stages": 2}}
CASES = [  # (kind, net, net options on top of TINY, kind options)
    ("undercomplete", "conv", {"latent_dim": 8}, {}),
    ("undercomplete", "dense", {}, {}),
    ("sparse", "conv", {"latent_dim": 16}, {"penalty": "kl"}),
    ("sparse", "dense", {}, {}),
    ("contractive", "conv", {"latent_dim": 8}, {}),
    ("contractive", "dense", {}, {}),
    ("denoising", "conv", {}, {}),      # fully convolutional: dynamic H, W
    ("denoising", "dense", {}, {}),
    ("denoising", "unet", {}, {}),      # fully convolutional: dynamic H, W
    ("variational", "conv", {"latent_dim": 8}, {}),
    ("variational", "dense", {}, {"prior": "vamp", "pseudo_inputs": 4}),
    ("codec", "gdn", {}, {"prior": "element"}),
    ("codec", "dense", {}, {}),
]


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _agree(path, fn, x, crop=False):
    """Run the file and ``fn`` on ``x``; the largest difference over max(1, max |PyTorch|)."""
    session = _session(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = fn(x).numpy()
    if crop:
        got = got[..., :want.shape[-2], :want.shape[-1]]
    assert got.shape == want.shape
    return float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))


def _export(run, out, *extra):
    return main(["export", "--run", str(run), "--format", "onnx", "--out", str(out), *extra])


def _check_files(model, out, sizes):
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["tolerance"] == TOLERANCE
    for name, info in manifest["files"].items():
        assert (out / name).is_file() and info["max_difference_over_scale"] <= TOLERANCE
    codec = model.kind == "codec"
    assert sorted(manifest["files"]) == (["decoder.onnx", "encoder.onnx"] if codec
                                         else ["decoder.onnx", "encoder.onnx", "model.onnx"])
    gen = torch.Generator().manual_seed(1)
    for h, w in sizes:
        x = torch.rand(3, model.input_shape[0], h, w, generator=gen)  # batch 3: the export traced 2, checked 64 and 1
        with torch.no_grad():
            z = model.encode(x)
            z = model.quantize(z) if codec else z
        if not codec:
            assert _agree(out / "model.onnx", model, x) <= TOLERANCE
        assert _agree(out / "encoder.onnx", model.encode, x) <= TOLERANCE
        assert _agree(out / "decoder.onnx", model.decode, z, crop=model.any_size) <= TOLERANCE
    return manifest


@pytest.mark.parametrize("kind,net,net_options,options", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_kind_and_net_exports_and_onnxruntime_agrees(tmp_path, capsys, kind, net, net_options, options):
    torch.manual_seed(0)
    model = build_model(kind, (1, 12, 12), net=net, net_options={**TINY[net], **net_options}, **options).eval()
    if kind == "codec":
        model.finalise()
    runs.save_model(model, tmp_path / "run")
    assert _export(tmp_path / "run", tmp_path / "onnx") == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "wrote" in printed
    model = runs.load_model(tmp_path / "run")
    sizes = [(12, 12), (17, 10), (5, 7)] if model.any_size else [(12, 12)]
    manifest = _check_files(model, tmp_path / "onnx", sizes)
    assert manifest["any_size"] == ((kind, net) in (("denoising", "conv"), ("denoising", "unet")))
    if model.any_size:
        assert manifest["files"]["model.onnx"]["input"]["shape"] == ["N", 1, "H", "W"]
        assert len(manifest["files"]["model.onnx"]["checks"]) == 3  # batch 64, batch 1, another H x W
    else:
        assert manifest["files"]["encoder.onnx"]["input"]["shape"] == ["N", 1, 12, 12]


@pytest.mark.parametrize("name", ["denoiser-tutorial", "denoiser-unet", "denoiser-photo"])
def test_the_zoo_denoisers_export_with_any_size(tmp_path, name):
    if name not in runs.zoo_names():
        pytest.skip(f"zoo:{name} is not in this zoo")
    assert _export(f"zoo:{name}", tmp_path) == 0
    model = runs.load_model(f"zoo:{name}")
    _, h, w = model.input_shape
    _check_files(model, tmp_path, [(h, w), (h + 9, w - 5)])


def test_a_zoo_codec_exports_its_two_transforms(tmp_path, capsys):
    assert _export("zoo:codec-100b", tmp_path) == 0
    assert "encoder.onnx" in capsys.readouterr().out
    manifest = _check_files(runs.load_model("zoo:codec-100b"), tmp_path, [(28, 28)])
    assert "entropy coding" in manifest["not_exported"]
    assert all(c["rounded_latents_that_differ"] == 0 for c in manifest["files"]["encoder.onnx"]["checks"])


def test_the_autoregressive_vae_is_refused_in_one_line(tmp_path, capsys):
    assert _export("zoo:vae-vamp-ar", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error:") and "pixel by pixel" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_existing_files_are_kept_without_overwrite(tmp_path, capsys):
    model = build_model("undercomplete", (1, 12, 12), net="dense", net_options=TINY["dense"])
    runs.save_model(model, tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"mine")
    assert _export(tmp_path / "run", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelab: error:") and "--overwrite" in err
    assert (out / "model.onnx").read_bytes() == b"mine" and sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert _export(tmp_path / "run", out, "--overwrite") == 0
    assert (out / "model.onnx").read_bytes() != b"mine" and (out / "export.json").is_file()
