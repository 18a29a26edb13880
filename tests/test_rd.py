"""Rate-distortion (aelab.compression): every classical codec turns uint8 images into real bytes and
back, the byte counts are what they claim (JPEG scan data, AVIF payload, the PCA stream),
the headline table interpolates correctly, and the report shows the section."""

import importlib
import io
import json
import math
import struct
import types

import numpy as np
import pytest
import torch

from aelab import compression, plots
from aelab.report.tables import rd_summary_rows
from aelab.cli import main
from aelab.errors import ConfigError, DataError
from aelab.metrics import psnr_per_image


def _batch(n: int = 6, seed: int = 0) -> np.ndarray:
    """Fashion-MNIST-like uint8 images (N, 1, 28, 28): a smooth blob with texture on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.zeros((n, 1, 28, 28), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(10, 18), rng.uniform(10, 18), rng.uniform(6, 10)
        blob = np.clip(1.3 - np.hypot(yy - cy, xx - cx) / r, 0, 1)
        texture = 0.25 * np.sin(xx * rng.uniform(0.5, 1.5)) * (blob > 0)
        out[i, 0] = np.clip(np.rint(255 * (0.8 * blob + texture)), 0, 255).astype(np.uint8)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr_per_image(torch.from_numpy(a).double() / 255, torch.from_numpy(b).double() / 255).mean())


LOSSY = ["jpeg", "jpeg-scan", "webp", "avif", "avif-payload"]


@pytest.mark.parametrize("name", LOSSY)
def test_pillow_codecs_round_trip_and_improve_with_quality(name):
    cls = compression.CODECS[name]
    if not cls.available():
        pytest.skip(f"{name} not supported by this Pillow")
    x = _batch()
    codec = cls()
    lo, hi = codec.sweep()[0], codec.sweep()[-1]
    blobs_lo, blobs_hi = codec.compress(x, lo), codec.compress(x, hi)
    assert len(blobs_lo) == len(x) and all(isinstance(b, bytes) and b for b in blobs_lo)
    dec_lo, dec_hi = codec.decompress(blobs_lo, lo, x.shape), codec.decompress(blobs_hi, hi, x.shape)
    assert dec_lo.shape == x.shape and dec_lo.dtype == np.uint8
    assert _psnr(x, dec_hi) > _psnr(x, dec_lo) + 5  # quality buys PSNR...
    assert sum(map(codec.counted_bytes, blobs_hi)) > sum(map(codec.counted_bytes, blobs_lo))  # ...with bytes


def _manual_jpeg_walk(data: bytes) -> tuple[int, int]:
    """An independent marker walk: SOI, then length-prefixed segments up to SOS; the scan
    runs to the EOI at the end of a Pillow baseline file."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    pos = 2
    while True:
        assert data[pos] == 0xFF
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        pos += 2 + length
        if marker == 0xDA:
            return pos, len(data) - 2


def test_jpeg_scan_data_matches_a_manual_marker_walk_and_decodes_with_the_headers_added_back():
    from PIL import Image

    x = _batch(3)
    codec = compression.JPEGScan()
    for q in (1, 50, 90):
        buf = io.BytesIO()
        Image.fromarray(x[0, 0]).save(buf, format="JPEG", quality=q)
        data = buf.getvalue()
        start, end = _manual_jpeg_walk(data)
        assert compression.jpeg_scan_span(data) == (start, end)
        scan = compression.jpeg_scan_data(data)
        assert scan == data[start:end] and 0 < len(scan) < len(data)
        assert 300 < len(data) - len(scan) < 360  # the ~330 bytes of headers of the issue
        # the codec's stream is exactly that segment; the decoder adds the same headers back
        blob = codec.compress(x[:1], q)[0]
        assert blob == scan
        assert np.array_equal(codec.decompress([blob], q, x[:1].shape)[0, 0], np.asarray(Image.open(io.BytesIO(data))))
    with pytest.raises(DataError, match="expected a JPEG file"):
        compression.jpeg_scan_data(b"\x89PNG....")
    # a stuffed FF 00 inside the scan is scan data, not a marker
    fake = bytes.fromhex("ffd8 ffda 0008 0101 0000 3f00") + b"\x12\xff\x00\x34\xff\xd0\x56" + b"\xff\xd9"
    assert compression.jpeg_scan_data(fake) == b"\x12\xff\x00\x34\xff\xd0\x56"


def test_avif_payload_is_the_mdat_content():
    if not compression.AVIF.available():
        pytest.skip("no AVIF support in this Pillow")
    data = compression.AVIF().compress(_batch(1), 50)[0]
    i = data.index(b"mdat")  # manual: the 4 bytes before the type are the box size
    size = struct.unpack(">I", data[i - 4:i])[0]
    assert i - 4 + size == len(data)  # libavif writes mdat last
    payload = compression.avif_payload(data)
    assert payload == data[i + 4:i - 4 + size] and 0 < len(payload) < len(data)
    assert (payload[0] >> 3) & 0xF in (1, 2)  # an AV1 OBU: temporal delimiter or sequence header
    assert [b[0] for b in compression.isobmff_boxes(data)] == ["ftyp", "meta", "mdat"]
    assert compression.AVIFPayload().counted_bytes(data) == len(payload)
    with pytest.raises(DataError):
        compression.avif_payload(data[:30])


@pytest.mark.parametrize("name", ["pca", "pca-laplace"])
def test_pca_range_coder_decodes_exactly_the_quantised_coefficients(name):
    pytest.importorskip("constriction")
    train = _batch(200, seed=1)
    codec = compression.CODECS[name](params=(0.5, 0.1)).fit(train)
    rng = np.random.default_rng(3)
    x = np.concatenate([_batch(5, seed=2), rng.integers(0, 256, (2, 1, 28, 28), dtype=np.uint8)])  # 2 unlike training
    for step in (0.5, 0.1):
        q = codec.quantise(x, step)
        stream = codec.encode_symbols(q, step)
        q2, step2 = codec.decode_symbols(stream)
        assert np.array_equal(q2, q) and step2 == step
        assert np.abs(q).max() > 0
    # with a fine step the transform is exact on images in the training span (the training images)
    fine = compression.CODECS[name](params=(1e-3,)).fit(train)
    assert np.array_equal(fine.decompress(fine.compress(train[:5], 1e-3), 1e-3, train[:5].shape), train[:5])
    with pytest.raises(ConfigError, match="no entropy model for step"):
        codec.compress(x, 0.3)


def test_pca_stream_length_is_the_models_information_content():
    """The range coder's bytes against -sum log2 p(q) computed here from the same tables."""
    pytest.importorskip("constriction")
    train = _batch(300, seed=1)
    codec = compression.PCACodec(params=(0.2,)).fit(train)
    x = _batch(50, seed=5)
    q = codec.quantise(x, 0.2)
    table, b = codec.tables_[0.2], codec._bound(0.2)
    p = table / table.sum(1, keepdims=True)
    bits = -sum(np.log2(p[j, q[:, j] + b]).sum() for j in range(q.shape[1]))
    coded = len(codec.encode_symbols(q, 0.2)) - 15
    assert bits / 8 - 1 <= coded <= bits / 8 * 1.02 + 8


def test_png_and_xz_are_lossless():
    x = _batch()
    for name in ("png", "xz"):
        codec = compression.CODECS[name]()
        point = compression.measure_codec(codec, x, None)
        assert point["lossless"] and point["psnr"] is None and point["ssim"] == 1.0
        assert np.array_equal(codec.decompress(codec.compress(x, None), None, x.shape), x)
    assert compression.measure_codec(compression.XZ(), x, None)["files"] == 1


def test_interpolation_at_target_bytes():
    pts = [{"bytes_per_image": 40.0, "psnr": 20.0}, {"bytes_per_image": 80.0, "psnr": 26.0},
           {"bytes_per_image": 160.0, "psnr": 30.0}]
    assert compression.at_bytes(pts, 50)["value"] == pytest.approx(20 + 6 * math.log(50 / 40) / math.log(2))
    assert compression.at_bytes(pts, 80)["value"] == pytest.approx(26.0)
    assert compression.at_bytes(pts[::-1], 120)["value"] == pytest.approx(26 + 4 * math.log(1.5) / math.log(2))
    assert compression.at_bytes(pts, 30) == {"impossible": 40.0}
    assert compression.at_bytes(pts, 200) == {"beyond": 160.0}
    # a dominated point (more bytes, lower PSNR: a less trained run) leaves the frontier
    dominated = pts + [{"bytes_per_image": 120.0, "psnr": 25.0}]
    assert compression.at_bytes(dominated, 120)["value"] == pytest.approx(26 + 4 * math.log(1.5) / math.log(2))
    frontier_end = [pts[0], {"bytes_per_image": 100.0, "psnr": 31.0}, {"bytes_per_image": 160.0, "psnr": 30.0}]
    assert compression.at_bytes(frontier_end, 120)["value"] == pytest.approx(31.0)  # 100 B already gives more
    assert compression.at_bytes(frontier_end, 200) == {"beyond": 160.0}
    result = {"test_images": 3, "methods": {"a": {"label": "A", "param_name": "q", "lossless": False, "points": pts},
                                            "p": {"label": "P", "param_name": "", "lossless": True,
                                                  "points": [{"bytes_per_image": 500.0, "psnr": None, "ssim": 1.0,
                                                              "lossless": True, "param": None}]}}}
    rows = rd_summary_rows(result, (30, 50, 200))
    assert rows[0] == ["A", "impossible (smallest 40 B)", "21.9 dB", "- (largest 160 B)"]
    assert rows[1][1] == "lossless at 500 B"


def test_non_8bit_images_are_refused():
    with pytest.raises(DataError, match="8-bit"):
        compression.rate_distortion(torch.full((2, 1, 8, 8), 0.5001), methods=["png"], progress=False)
    with pytest.raises(ConfigError, match="did you mean 'jpeg'"):
        compression.rate_distortion(torch.zeros(2, 1, 8, 8), methods=["jpg"], progress=False)


def test_cli_writes_the_table_figures_and_a_report_with_the_compression_section(fake_fashion, tmp_path, capsys):
    out = tmp_path / "rd"
    assert main(["rd", "--data", str(fake_fashion), "--methods", "jpeg-scan,png", "--limit", "8", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| JPEG scan data only |" in printed and "lossless at" in printed
    for name in ("rd.json", "rd.md", "figures/rd_psnr.png", "figures/rd_ssim.png", "report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "1. Compression" in html and html.count("<img") == 2 and 'class="rd"' in html
    # --update adds a row and keeps the others
    assert main(["rd", "--data", str(fake_fashion), "--methods", "xz", "--limit", "8", "--update", "--out", str(out),
                 "--no-progress"]) == 0
    import json
    result = json.loads((out / "rd.json").read_text())
    assert list(result["methods"]) == ["jpeg-scan", "png", "xz"] and len(result["commands"]) == 2
    assert main(["rd", "--data", str(fake_fashion), "--methods", "xz", "--limit", "4", "--update", "--out", str(out),
                 "--no-progress"]) == 2
    assert "measured on other images" in capsys.readouterr().err


def test_a_model_run_gets_the_compression_section_only_with_rd_json(tmp_path):
    from aelab.models import build_model
    from aelab.report import write_report
    from aelab.runs import save_model

    save_model(build_model("denoising", (1, 28, 28), net="dense", net_options={"latent_dim": 8}), tmp_path)
    assert "Compression" not in write_report(tmp_path).read_text()
    result = compression.rate_distortion(torch.from_numpy(_batch(4)).float() / 255, methods=["png", "jpeg"],
                                         progress=False)
    plots.rd_figures(result, tmp_path / "figures")
    (tmp_path / "rd.json").write_text(__import__("json").dumps(result))
    html = write_report(tmp_path).read_text()
    assert "2. Compression" in html and "JPEG file" in html and html.count("<img") == 2


def test_learned_codec_rows_use_the_codec_api(tmp_path, monkeypatch):
    """The learned rows call the stream's load_codec and rd_point (stand-ins here); the lambda is the model's."""
    calls = []
    runner = importlib.import_module("aelab.compression.rd")  # the module (aelab.compression.rd is the function)
    monkeypatch.setattr(runner, "load_codec", lambda run: calls.append(("load", str(run))) or
                        types.SimpleNamespace(run=str(run), lmbda=0.01))
    monkeypatch.setattr(runner, "model_id", lambda model: model.run.encode()[-8:])
    monkeypatch.setattr(runner, "rd_point", lambda model, images, refine: (
        calls.append(("rd", images.shape, images.dtype, refine)) or
        {"bytes_per_image": 90.0 + len(calls), "psnr": 27.0, "ssim": 0.9, "stream_bytes": 900}))
    run = tmp_path / "codec"
    run.mkdir()
    (run / "config.json").write_text('{"format_version": 1, "model": {"kind": "codec", "input_shape": [1, 28, 28], '
                                     '"options": {"lmbda": 0.01}}}')
    result = compression.rate_distortion(torch.from_numpy(_batch(3)).float() / 255, methods=[], runs=[run],
                                         progress=False)
    pts = result["methods"]["aelab"]["points"]
    assert calls[0] == ("load", str(run)) and calls[1] == ("rd", (3, 1, 28, 28), torch.float32, 0)
    assert pts[0]["param"] == 0.01 and pts[0]["stream_bytes"] == 900 and pts[0]["psnr"] == 27.0 and pts[0]["refine"] == 0
    return run, calls


def test_update_replaces_the_learned_points_of_the_runs_measured_again(tmp_path, monkeypatch, fake_fashion):
    run, calls = test_learned_codec_rows_use_the_codec_api(tmp_path, monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((run / "config.json").read_text())
    out = tmp_path / "rd"
    compression.rd(out, runs=[run, other], methods=[], data=fake_fashion, limit=3, progress=False)
    first = json.loads((out / "rd.json").read_text())["methods"]["aelab"]["points"]
    assert len(first) == 2, first
    compression.rd(out, runs=[other], methods=[], data=fake_fashion, limit=3, progress=False, update=True, refine=7)
    pts = json.loads((out / "rd.json").read_text())["methods"]["aelab"]["points"]
    assert sorted((p["run"], p["refine"]) for p in pts) == [(str(run), 0), (str(other), 7)]
    assert calls[-1][-1] == 7 and [p["bytes_per_image"] for p in pts] == sorted(p["bytes_per_image"] for p in pts)
    import shutil
    shutil.rmtree(run)                                                  # a run gone: its point goes too
    compression.rd(out, runs=[other], methods=[], data=fake_fashion, limit=3, progress=False, update=True)
    pts = json.loads((out / "rd.json").read_text())["methods"]["aelab"]["points"]
    assert [(p["run"], p["refine"]) for p in pts] == [(str(other), 0)]


def test_pareto_front_drops_points_beaten_with_fewer_bytes():
    pts = [{"bytes_per_image": b, "psnr": v} for b, v in
           [(30, 23.7), (35, 23.4), (70, 27.7), (77, 27.3), (180, 36.6), (190, 33.6), (200, 38.1), (200, 37.0)]]
    front = compression.pareto_front(pts)
    assert [(p["bytes_per_image"], p["psnr"]) for p in front] == [(30, 23.7), (70, 27.7), (180, 36.6), (200, 38.1)]
    # the same frontier that at_bytes interpolates on
    assert compression.at_bytes(pts, 190)["value"] == pytest.approx(
        36.6 + (38.1 - 36.6) * (np.log(190) - np.log(180)) / (np.log(200) - np.log(180)))
