"""The learned codec: the byte stream against the model, the density and GDN against direct
formulas, the rate term against the real coded length, the command line."""

import sys

import numpy as np
import pytest
import torch

from aelab import runs
from aelab.compression import stream as byte_stream
from aelab.cli import main
from aelab.errors import ConfigError, DataError
from aelab.models import build_model
from aelab.models import codec as cm

SHAPE = (1, 12, 12)


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return build_model("codec", SHAPE, net="gdn", net_options={"channels": 8, "latent_channels": 6, "stages": 2}, **options).eval()


def _images(n=12, seed=0):
    """Blobs on black, like Fashion-MNIST: a bright rectangle at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, *SHAPE)
    for i in range(n):
        r, c = torch.randint(0, 6, (2,), generator=g).tolist()
        x[i, 0, r:r + 5, c:c + 6] = 0.3 + 0.7 * torch.rand((), generator=g)
    return x


def coded_bits(stream: bytes) -> int:
    """The range coder's bits in a stream: all but its header."""
    return 8 * (len(stream) - byte_stream.read_header(stream)["payload_offset"])


def fit_on_blobs(model):
    """``model`` fitted for a few seconds on blobs (a real density, not the initial one), finalised."""
    from aelab.train import TrainConfig, fit

    fit(model, _images(192, seed=1), None, TrainConfig(epochs=20, batch_size=32, lr=3e-3, schedule="onecycle",
                                                      progress=False, threads=1))
    model.finalise()  # as train_run does when training ends: the integer coding tables
    return model.eval()


@pytest.fixture(scope="module")
def fitted():
    return fit_on_blobs(_model(lmbda=0.01))


def test_integer_latents_round_trip_exactly_with_escapes(fitted):
    y = byte_stream.latents(fitted, _images(5))
    assert torch.equal(y, torch.round(y)) and y.shape[1:] == (6, 3, 3)
    extreme = y.clone()
    extreme[0, 0, 0, 0], extreme[1, 2, 1, 1], extreme[4, 5, 2, 2] = cm.LATENT_LIMIT, -cm.LATENT_LIMIT, 37
    for lat in (y, extreme):
        words = byte_stream.encode_latents(fitted, lat)
        back = byte_stream.decode_latents_stream(fitted, words, len(lat), tuple(lat.shape[1:]))
        assert torch.equal(back, lat)
    # the far values are escapes: they cost more than the ordinary latents
    assert len(byte_stream.encode_latents(fitted, extreme)) > len(byte_stream.encode_latents(fitted, y))


def test_decoded_images_are_the_models_own_reconstruction_bit_for_bit(fitted):
    x = _images(20, seed=3)
    x_hat = byte_stream.decompress(byte_stream.compress(fitted, x), fitted)
    assert x_hat.dtype == torch.float32 and x_hat.shape == x.shape
    assert torch.equal(x_hat, byte_stream.reconstruct(fitted, x))
    with torch.no_grad():
        assert torch.equal(x_hat, fitted.decode(torch.round(fitted.encode(x))))  # one chunk: the plain call
        assert torch.equal(x_hat, fitted(x))
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1


def test_decoding_in_fixed_chunks_does_not_depend_on_the_batch(fitted, monkeypatch):
    monkeypatch.setattr(byte_stream, "CHUNK", 4)
    x = _images(10, seed=4)
    a = byte_stream.decompress(byte_stream.compress(fitted, x), fitted)
    b = byte_stream.decompress(byte_stream.compress(fitted, x[4:8]), fitted)
    assert torch.equal(a[4:8], b)


def test_rate_term_matches_the_coded_length(fitted):
    x = _images(200, seed=5)
    with torch.no_grad():
        terms = fitted.loss(x, x)  # eval mode: the rounded latents, the stream's ideal length
    stream = byte_stream.compress(fitted, x)
    payload_bits = coded_bits(stream)
    ideal = float(terms["rate"]) * len(x)
    assert 20 < float(terms["rate"]) < 400, "a density that learned something"
    assert payload_bits == pytest.approx(ideal, rel=0.03)
    # training's noisy estimate is close too
    torch.manual_seed(0)
    fitted.train()
    with torch.no_grad():
        noisy = float(fitted.loss(x, x)["rate"]) * len(x)
    fitted.eval()
    assert payload_bits == pytest.approx(noisy, rel=0.15)


def test_density_is_a_distribution(fitted):
    d = fitted.density
    v = torch.linspace(-60, 60, 2001, dtype=torch.float64).expand(d.channels, -1)
    with torch.no_grad():
        cdf = torch.sigmoid(d.logits(v))
    assert bool((cdf.diff(dim=1) >= 0).all()), "the cumulative is monotone"
    assert float(cdf[:, 0].max()) < 1e-4 and float(cdf[:, -1].min()) > 1 - 1e-4
    ints, pmf = d.pmf_table(200)
    assert pmf.shape == (d.channels, 401) and bool((pmf >= 0).all())
    assert pmf.sum(1).numpy() == pytest.approx(np.ones(d.channels), abs=1e-6)
    # the float32 likelihood is the same probability as the float64 table
    with torch.no_grad():
        lik = d.likelihood(ints[195:206].float().expand(d.channels, -1))
    assert lik.double().numpy() == pytest.approx(pmf[:, 195:206].numpy(), abs=1e-5)
    for lo, probs in byte_stream.tables(fitted):
        assert probs.sum() == pytest.approx(1.0, abs=1e-6) and len(probs) >= 2


def test_gdn_against_the_formula():
    torch.manual_seed(0)
    gdn, igdn = cm.GDN(4), cm.GDN(4, inverse=True)
    with torch.no_grad():  # arbitrary non-negative parameters through the reparameterisation
        for layer in (gdn, igdn):
            layer.beta.param.copy_(torch.rand(4) + 0.5)
            layer.gamma.param.copy_(torch.rand(4, 4))
    u = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    gdn, igdn = gdn.double(), igdn.double()
    beta = gdn.beta.param.detach().numpy() ** 2 - 2.0 ** -36
    gamma = gdn.gamma.param.detach().numpy() ** 2 - 2.0 ** -36
    un = u.numpy()
    expected = np.empty_like(un)
    for n in range(2):
        for i in range(4):
            norm = beta[i] + sum(gamma[i, j] * un[n, j] ** 2 for j in range(4))
            expected[n, i] = un[n, i] / np.sqrt(norm)
    np.testing.assert_allclose(gdn(u).detach().numpy(), expected, rtol=1e-12)
    ibeta = igdn.beta.param.detach().numpy() ** 2 - 2.0 ** -36
    igamma = igdn.gamma.param.detach().numpy() ** 2 - 2.0 ** -36
    norm = ibeta[None, :, None, None] + np.einsum("ij,njhw->nihw", igamma, un ** 2)
    np.testing.assert_allclose(igdn(u).detach().numpy(), un * np.sqrt(norm), rtol=1e-12)
    # non-negative whatever the stored value, and a parameter at its bound still gets a gradient
    with torch.no_grad():
        gdn.gamma.param.fill_(-3.0)
    assert float(gdn.gamma().detach().min()) >= 0
    gdn(u).sum().backward()
    assert gdn.beta.param.grad is not None and torch.isfinite(gdn.beta.param.grad).all()


def test_loss_formula_and_units():
    model = _model(lmbda=0.02)
    x = _images(4)
    with torch.no_grad():
        t = model.loss(x, x)
        y_hat = torch.round(model.encode(x))
        bits = -torch.log2(model.density.likelihood(y_hat.transpose(0, 1).reshape(6, -1)).clamp_min(1e-9)).sum() / 4
        mse = ((model.decode(y_hat) - x) ** 2).mean()
    assert float(t["rate"]) == pytest.approx(float(bits), rel=1e-5)
    assert float(t["bpp"]) == pytest.approx(float(bits) / 144, rel=1e-5)
    assert float(t["distortion"]) == pytest.approx(float(mse), rel=1e-5)
    assert float(t["loss"]) == pytest.approx(float(bits) / 144 + 0.02 * 255 ** 2 * float(mse), rel=1e-5)


def test_wrong_model_corrupt_and_truncated_streams_are_refused(fitted):
    x = _images(6)
    stream = byte_stream.compress(fitted, x)
    other = _model(seed=1)
    with pytest.raises(DataError, match="written by another model.*decompress with the run that compressed it"):
        byte_stream.decompress(stream, other)
    bad = bytearray(stream)
    bad[-3] ^= 0x10
    with pytest.raises(DataError, match="corrupted or truncated"):
        byte_stream.decompress(bytes(bad), fitted)
    with pytest.raises(DataError, match="corrupted or truncated"):
        byte_stream.decompress(stream[:-4], fitted)
    for cut in (2, 8, 14):
        with pytest.raises(DataError, match="truncated|expected an aelab codec stream"):
            byte_stream.decompress(stream[:cut], fitted)
    with pytest.raises(DataError, match="expected an aelab codec stream"):
        byte_stream.decompress(b"\x89PNG\r\n\x1a\n" + stream, fitted)
    with pytest.raises(DataError, match=r"expected images of shape \(1, 12, 12\).*found \(3, 12, 12\)"):
        byte_stream.compress(fitted, torch.rand(2, 3, 12, 12))
    with pytest.raises(ConfigError, match="expected a model of kind 'codec'"):
        byte_stream.compress(build_model("undercomplete", SHAPE, net="dense"), x)


def test_missing_constriction_names_the_extra(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "constriction", None)
    with pytest.raises(ConfigError, match=r"pip install 'aelab\[codec\]'"):
        byte_stream.compress(fitted, _images(2))


def test_rd_point(fitted):
    x = _images(30, seed=6)
    point = byte_stream.rd_point(fitted, x)
    stream = byte_stream.compress(fitted, x)
    assert point["stream_bytes"] == len(stream) and point["bytes_per_image"] == len(stream) / 30
    from aelab.metrics import psnr, ssim
    rec = byte_stream.reconstruct(fitted, x)
    assert point["psnr"] == pytest.approx(psnr(x, rec)) and point["ssim"] == pytest.approx(ssim(x, rec))
    assert point["psnr"] > 15


def test_lambda_moves_the_rate():
    """More weight on distortion, more bits: lambda is the knob of the curve."""
    from aelab.train import TrainConfig, fit

    rates = {}
    for lmbda in (0.0005, 0.05):
        model = _model(lmbda=lmbda)
        fit(model, _images(128, seed=1), None, TrainConfig(epochs=12, batch_size=32, lr=3e-3, progress=False,
                                                          threads=1))
        with torch.no_grad():
            rates[lmbda] = float(model.eval().loss(_images(64, seed=2), _images(64, seed=2))["rate"])
    assert rates[0.05] > 1.5 * rates[0.0005], rates


def test_cli_round_trip(fitted, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    runs.save_model(fitted, run)
    x = _images(3, seed=7)
    files = []
    for i, img in enumerate(x):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(p)
        files.append(str(p))
    out = tmp_path / "imgs.ael"
    assert main(["compress", "--run", str(run), *files, "--out", str(out)]) == 0
    assert f"{out.stat().st_size} bytes" in capsys.readouterr().out  # the reported count is the file's length
    assert main(["decompress", str(out), "--run", str(run), "--out", str(tmp_path / "dec")]) == 0
    got = np.stack([np.asarray(Image.open(tmp_path / "dec" / f"{i:05d}.png")) for i in range(3)])
    x8 = torch.from_numpy(np.stack([np.asarray(Image.open(f)) for f in files])).float()[:, None] / 255
    expected = (byte_stream.reconstruct(fitted, x8)[:, 0].numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    # one-line errors: wrong model, corrupt file, wrong shape
    other = tmp_path / "other"
    runs.save_model(_model(seed=3), other)
    capsys.readouterr()
    assert main(["decompress", str(out), "--run", str(other), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another model" in err
    out.write_bytes(out.read_bytes()[:-5])
    assert main(["decompress", str(out), "--run", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(big)
    assert main(["compress", "--run", str(run), str(big), "--out", str(tmp_path / "b.ael")]) == 2
    assert "expected images of shape (1, 12, 12)" in capsys.readouterr().err


def test_train_cli_takes_lambda(fake_fashion, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--kind", "codec", "--net", "gdn", "--lambda", "0.02", "--net-option", "channels=8",
                 "--net-option", "latent_channels=4", "--data", str(fake_fashion), "--epochs", "1",
                 "--batch-size", "32", "--no-progress", "--out", str(out)]) == 0
    cfg = runs.read_config(out)
    assert cfg["model"]["options"]["lmbda"] == 0.02 and cfg["model"]["net"] == "gdn"
    hist = runs.load_history(out)
    assert set(hist["val"]) == {"rate", "bpp", "distortion", "loss"}
    x = torch.rand(2, 1, 28, 28)
    model = byte_stream.load_codec(out)
    assert torch.equal(byte_stream.decompress(byte_stream.compress(model, x), model), byte_stream.reconstruct(model, x))
    # a channel-prior run starts an element-prior one (--init); the reverse is refused clearly
    common = ["--kind", "codec", "--net", "gdn", "--lambda", "0.02", "--net-option", "channels=8",
              "--net-option", "latent_channels=4", "--data", str(fake_fashion), "--epochs", "1",
              "--batch-size", "32", "--no-progress"]
    element = tmp_path / "element"
    assert main(["train", *common, "--option", "prior=element", "--init", str(out), "--out", str(element)]) == 0
    model = byte_stream.load_codec(element)
    assert model.prior == "element" and model.density.channels == 4 * 4 * 4  # 28 -> 14 -> 7 -> 4
    assert runs.read_config(element)["model"]["options"]["prior"] == "element"
    assert torch.equal(byte_stream.decompress(byte_stream.compress(model, x), model), byte_stream.reconstruct(model, x))
    assert main(["train", *common, "--init", str(element), "--out", str(tmp_path / "back")]) == 2


# -- the element-wise prior: one density per latent element (fixed-size images) ------------

@pytest.fixture(scope="module")
def fitted_element(fitted):
    """The fitted model's transforms and densities, copied into a ``prior="element"`` model
    and fitted a little more, so its densities differ from position to position."""
    from aelab.train import TrainConfig, fit

    model = _model(lmbda=0.01, prior="element")
    model.load_state_dict(model.adapt_initial_state(fitted.state_dict()))
    fit(model, _images(192, seed=1), None, TrainConfig(epochs=10, batch_size=32, lr=3e-3, schedule="onecycle",
                                                      progress=False, threads=1))
    model.finalise()
    return model.eval()


def test_element_prior_orders_latents_channel_major():
    model = _model(prior="element")
    c, h, w = model.code_shape
    assert model.density.channels == c * h * w and model.positions == h * w
    y = torch.randn(4, c, h, w)
    by = model.by_density(y)
    assert by.shape == (c * h * w, 4)
    for n, ci, i, j in ((0, 0, 0, 0), (3, 5, 2, 1), (2, 1, 0, 2)):
        assert by[ci * h * w + i * w + j, n] == y[n, ci, i, j]
    # the channel prior: each channel's values of all images and positions
    shared = _model().by_density(y)
    assert shared.shape == (c, 4 * h * w) and torch.equal(shared[2], y[:, 2].reshape(-1))


def test_element_prior_starts_from_a_channel_prior_with_the_same_rates(fitted):
    model = _model(prior="element")
    model.load_state_dict(model.adapt_initial_state(fitted.state_dict()))
    y = byte_stream.latents(fitted, _images(30, seed=6))
    with torch.no_grad():
        assert torch.allclose(model.latent_bits(y), fitted.latent_bits(y), rtol=1e-5)
    assert torch.equal(byte_stream.reconstruct(model, _images(5)), byte_stream.reconstruct(fitted, _images(5)))
    # the other way round does not fit: a clear error, not a shape traceback
    with pytest.raises(ConfigError, match="prior"):
        _model(prior="per-pixel")


def test_element_prior_stream_round_trips_and_matches_its_rate(fitted_element):
    m = fitted_element
    y = byte_stream.latents(m, _images(40, seed=7))
    words = byte_stream.encode_latents(m, y)
    assert torch.equal(byte_stream.decode_latents_stream(m, words, len(y), tuple(y.shape[1:])), y)
    x = _images(200, seed=5)
    stream = byte_stream.compress(m, x)
    assert torch.equal(byte_stream.decompress(stream, m), byte_stream.reconstruct(m, x))
    with torch.no_grad():
        ideal = float(m.loss(x, x)["rate"]) * len(x)
    payload_bits = coded_bits(stream)
    assert payload_bits == pytest.approx(ideal, rel=0.03)
    # the densities moved apart from their shared start: positions are modelled separately
    d = m.density
    with torch.no_grad():
        p = d.likelihood(torch.zeros(d.channels, 1)).squeeze(1).reshape(6, -1)  # P(0) per channel, position
    assert float((p.max(1).values - p.min(1).values).max()) > 1e-3


# -- portable streams: the integer tables are stored, never recomputed ----------------------

def test_tables_are_stored_integers_that_survive_save_and_load(fitted, tmp_path):
    from aelab import runs

    tabs = fitted.coding_tables()
    assert all(c.dtype == torch.int64 and bool((c >= 1).all()) for _, c in tabs)
    runs.save_model(fitted, tmp_path)
    loaded = runs.load_model(tmp_path)
    assert loaded.finalised
    assert all(lo == lo2 and torch.equal(c, c2) for (lo, c), (lo2, c2) in zip(tabs, loaded.coding_tables()))


def test_a_stream_decodes_bit_exactly_when_the_float_density_evaluates_differently(fitted, monkeypatch):
    """Another machine (float32 instead of float64, another BLAS or thread count) evaluates the
    density slightly differently; the decoder reads the stored tables, so the stream still
    decodes to the very same images. Recomputing the tables from the floats would not."""
    x = _images(30, seed=4)
    stream = byte_stream.compress(fitted, x)
    expected = byte_stream.decompress(stream, fitted)
    original = type(fitted.density).pmf_table

    def float32_pmf(self, radius=4096):  # the same density, evaluated in float32 and perturbed
        ints, pmf = original(self, radius)
        return ints, (pmf.float() * (1 + 1e-3 * torch.rand(pmf.shape, generator=torch.Generator().manual_seed(1)))
                      ).double()

    monkeypatch.setattr(type(fitted.density), "pmf_table", float32_pmf)
    torch.set_num_threads(2)
    try:
        assert torch.equal(byte_stream.decompress(stream, fitted), expected)
        # what recomputing would have done: other tables, a stream that no longer decodes the same
        other = type(fitted)(SHAPE, net="gdn", net_options={"channels": 8, "latent_channels": 6, "stages": 2})
        other.load_state_dict(fitted.state_dict())
        other.finalise()
        assert any(not torch.equal(a, b) for (_, a), (_, b) in zip(other.coding_tables(), fitted.coding_tables()))
    finally:
        torch.set_num_threads(1)


def test_init_from_a_finalised_codec_and_training_finalise_again(fitted):
    model = _model(lmbda=0.02)
    state = model.adapt_initial_state(fitted.state_dict())
    model.load_state_dict(state)
    assert not model.finalised, "the tables are derived from the weights: a fine-tune computes its own"


# -- crafted streams: every header field checked before anything is allocated ---------------

def _rewrite_header(stream: bytes, count: int) -> bytes:
    """The stream with another image count and a checksum recomputed to match (a crafted file)."""
    head = byte_stream.read_header(stream)
    old = head["header"]
    pos = 12
    _, end = byte_stream._read_varint(old, pos)
    new_head = old[:pos] + byte_stream._varint(count) + old[end:]
    payload = stream[head["payload_offset"]:]
    import struct
    import zlib
    return new_head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(new_head))) + payload


@pytest.mark.parametrize("count, message", [(1_000_000_000, "claims 1000000000 images"),
                                            (900_000, "cannot hold them"),
                                            (5_000, "cannot hold them")])
def test_a_crafted_image_count_is_refused_before_decoding(fitted, count, message):
    stream = _rewrite_header(byte_stream.compress(fitted, _images(4)), count)
    with pytest.raises(DataError, match=message) as err:
        byte_stream.decompress(stream, fitted)
    assert "\n" not in str(err.value)


def test_the_checksum_covers_the_header(fitted):
    stream = bytearray(byte_stream.compress(fitted, _images(4)))
    stream[12] ^= 0x01  # the image count, checksum left as it was
    with pytest.raises(DataError, match="checksum|cannot hold"):
        byte_stream.decompress(bytes(stream), fitted)


def test_a_crafted_stream_through_the_cli_is_one_line(fitted, tmp_path, capsys):
    from aelab import runs
    from aelab.cli import main

    run = tmp_path / "run"
    runs.save_model(fitted, run)
    bad = tmp_path / "bad.ael"
    bad.write_bytes(_rewrite_header(byte_stream.compress(fitted, _images(4)), 1_000_000_000))
    assert main(["decompress", str(bad), "--run", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error: ") and "claims 1000000000 images" in err and "\n" not in err


def test_a_header_over_the_value_limit_is_refused(fitted, monkeypatch):
    monkeypatch.setattr(byte_stream, "MAX_VALUES", 100)
    with pytest.raises(DataError, match="more than 100 values"):
        byte_stream.decompress(byte_stream.compress(fitted, _images(4)), fitted)
