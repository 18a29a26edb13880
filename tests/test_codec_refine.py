"""The codec's encoder search (``--refine``): SGA's soft rounding against its limits, the
search against the codec's own objective, the stream it writes read by the plain decoder."""

import numpy as np
import pytest
import torch
from test_codec import _images, _model, fit_on_blobs

from aelab import runs
from aelab.cli import main
from aelab.compression import refine as rf
from aelab.compression import stream as byte_stream
from aelab.errors import ConfigError


@pytest.fixture(scope="module")
def fitted():
    return fit_on_blobs(_model(lmbda=0.01))


def _objective(model, y, x):
    with torch.no_grad():
        return rf._objective(model, y, x)


def test_soft_rounding_tends_to_rounding_and_draws_up_with_the_sga_probability():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([-2.3, -0.8, 0.2, 1.45, 3.7, 5.55]).repeat(20000, 1)
    cold = rf._soft_round(y, 1e-3, g)
    assert torch.allclose(cold.mean(0), torch.round(y[0]), atol=1e-3)  # near-zero temperature: rounding
    tau = 0.5
    hot = rf._soft_round(y, tau, g)
    low = torch.floor(y)
    assert ((hot >= low - 1e-6) & (hot <= low + 1 + 1e-6)).all()       # always between floor and ceiling
    # Gumbel-max: the draw leans up (weight > 1/2) with probability softmax(logits)[up], the
    # logits -atanh(r) / tau (down) and -atanh(1 - r) / tau (up), r = y - floor(y)
    r = (y[0] - low[0]).double()
    expected = torch.sigmoid((torch.atanh(r) - torch.atanh(1 - r)) / tau)
    assert torch.allclose(((hot - low) > 0.5).double().mean(0), expected, atol=0.015)


def test_the_search_never_worsens_an_image_and_improves_the_mean(fitted):
    x = _images(48, seed=11)
    with torch.no_grad():
        start = fitted.quantize(fitted.encode(x))
    y = rf.refine_latents(fitted, x, steps=30)
    assert torch.equal(y, torch.round(y))                              # integers the stream can code
    before, after = _objective(fitted, start, x), _objective(fitted, y, x)
    assert (after <= before + 1e-6).all()
    assert after.mean() < before.mean() - 1e-3 and not torch.equal(y, start)
    assert torch.equal(rf.refine_latents(fitted, x, steps=0), start)
    with torch.inference_mode():                                        # the caller's mode does not matter
        assert torch.equal(rf.refine_latents(fitted, x.clone(), steps=30), y)


def test_refined_streams_are_read_by_the_plain_decoder_and_cost_less(fitted):
    x = _images(40, seed=12)
    plain, searched = byte_stream.compress(fitted, x), byte_stream.compress(fitted, x, refine=30)
    assert plain != searched
    y = byte_stream.latents(fitted, x, refine=30)
    assert torch.equal(byte_stream.decompress(searched, fitted), byte_stream.decode_latents(fitted, y))
    assert torch.equal(byte_stream.decompress(plain, fitted), byte_stream.reconstruct(fitted, x))
    assert byte_stream.compress(fitted, x, refine=30) == searched       # the same bytes twice (seeded search)
    # the objective the search lowers, on what the decoder gives back: bits / pixel + lambda 255^2 MSE
    def cost(stream):
        x_hat = byte_stream.decompress(stream, fitted)
        return 8 * len(stream) / x[0].numel() / len(x) + fitted.lmbda * 255 ** 2 * float((x_hat - x).pow(2).mean())
    assert cost(searched) < cost(plain)


def test_the_search_reports_progress_after_each_chunk(fitted, monkeypatch):
    monkeypatch.setattr(byte_stream, "CHUNK", 4)
    calls = []
    y = byte_stream.latents(fitted, _images(10, seed=14), refine=3, progress=lambda *a: calls.append(a))
    assert calls == [(4, 10), (8, 10), (10, 10)] and y.shape[0] == 10
    byte_stream.latents(fitted, _images(10, seed=14), progress=lambda *a: calls.append(a))
    assert len(calls) == 3                                             # no search, nothing to report


@pytest.mark.parametrize("bad", [-1, 2.5, True, "30", byte_stream.MAX_REFINE + 1])
def test_a_bad_refine_is_one_clear_error(fitted, bad):
    with pytest.raises(ConfigError, match="expected refine a whole number of steps"):
        byte_stream.compress(fitted, _images(2), refine=bad)


def test_cli_compress_refine(fitted, tmp_path, capsys):
    run = tmp_path / "run"
    runs.save_model(fitted, run)
    np.savez(tmp_path / "x.npz", x=_images(6, seed=13).numpy())
    assert main(["compress", "--run", str(run), str(tmp_path / "x.npz"), "--refine", "20",
                 "--out", str(tmp_path / "a.ael")]) == 0
    assert byte_stream.decompress((tmp_path / "a.ael").read_bytes(), fitted).shape == (6, 1, 12, 12)
    assert capsys.readouterr().err == "searched 6/6 images\n"        # the search's progress (not a terminal)
    assert main(["compress", "--run", str(run), str(tmp_path / "x.npz"), "--refine", "20", "--no-progress",
                 "--out", str(tmp_path / "a2.ael")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "a2.ael").read_bytes() == (tmp_path / "a.ael").read_bytes()
    assert main(["compress", "--run", str(run), str(tmp_path / "x.npz"), "--refine", "-3",
                 "--out", str(tmp_path / "b.ael")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected refine a whole number of steps" in err
