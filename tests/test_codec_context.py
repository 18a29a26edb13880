"""The codec's channel-conditional prior (``prior=context``): the rate term against
torch.distributions, the exact predictor against the float one and against another order of
summation, the byte stream against the model and the ideal length, --init from an element run."""

import pytest
import torch
import torch.nn.functional as F

from aelab import runs
from aelab.compression import stream as byte_stream
from aelab.errors import ConfigError
from aelab.models import build_model
from aelab.models import context as cx
from test_codec import _images, coded_bits, fit_on_blobs

SHAPE = (1, 12, 12)  # test_codec's blobs
NET = {"channels": 8, "latent_channels": 8, "stages": 2}  # a (8, 3, 3) latent: slices of 2 channels


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return build_model("codec", SHAPE, net="gdn", net_options=NET, prior="context", **options).eval()


@pytest.fixture(scope="module")
def fitted():
    return fit_on_blobs(_model(lmbda=0.01))


def test_options_and_bad_slices():
    model = _model(slices=2)
    assert model.config()["options"]["slices"] == 2 and model.density.channels == 4 * 9  # slice 0: 4 channels x 3 x 3
    x = _images(6)
    torch.manual_seed(1)
    two = model.loss(x, x)["loss"]
    torch.manual_seed(1)
    assert not torch.equal(two, _model(slices=4).loss(x, x)["loss"])  # the option acts on the loss
    element = build_model("codec", SHAPE, net="gdn", net_options=NET, prior="element")
    assert "slices" not in element.config()["options"]  # configs (and stream model ids) of the other priors unchanged
    for bad in (3, 1, 0, "4", True):
        with pytest.raises(ConfigError, match="expected slices an integer >= 2 dividing the 8 latent channels"):
            _model(slices=bad)
    with pytest.raises(ConfigError, match="prior context needs a \\(C, H, W\\) code"):
        build_model("codec", SHAPE, net="dense", net_options={"latent_dim": 8}, prior="context")


def test_rate_is_slice_zero_densities_plus_gaussians(fitted):
    """-log2 p(y) = the element densities of slice 0 + the discretised Normal of each later element,
    computed here with torch.distributions.Normal from the predictor's float means and scales."""
    x = _images(20, seed=3)
    with torch.no_grad():
        y = fitted.quantize(fitted.encode(x))
        bits = fitted.latent_bits(y)
        first = fitted.context.first
        p0 = fitted.density.likelihood(y[:, :first].reshape(len(y), -1).T)
        mu, sigma = fitted.context(y)
        normal = torch.distributions.Normal(mu.double(), sigma.double().clamp_min(cx.SCALE_MIN))
        rest = y[:, first:].double()
        p1 = normal.cdf(rest + 0.5) - normal.cdf(rest - 0.5)
    expected = -torch.log2(p0).sum(0).double() - torch.log2(p1).flatten(1).sum(1)
    assert torch.allclose(bits.double(), expected, rtol=1e-4)


def test_the_exact_predictor_is_the_float_one_rounded_and_independent_of_summation_order(fitted):
    y = byte_stream.latents(fitted, _images(16, seed=2))
    with torch.no_grad():
        mu_f, sigma_f = fitted.context(y)
    for k in range(1, fitted.slices):
        a, b = fitted.context.bounds[k]
        mu, index = fitted.context.exact(y, k)
        lo = a - fitted.context.first
        assert torch.allclose(mu, mu_f[:, lo:lo + b - a].double(), atol=0.02)
        steps = cx.STEPS_PER_OCTAVE * torch.log2(sigma_f[:, lo:lo + b - a].double() / cx.SCALE_MIN)
        assert (index - steps.clamp(0, cx.SCALE_LEVELS - 1)).abs().max() <= 0.5 + 0.05  # rounding, + the 2^-8 steps
        # another order of summation (conv2d's own kernel; channels reversed): the same bits
        net = fitted.context.nets[k - 1]
        h = y[:, :a].double().flip(1)
        convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
        for i, conv in enumerate(convs):
            w = cx._dyadic(conv.weight.detach(), cx.WEIGHT_BITS, cx.WEIGHT_LIMIT)
            w = w.flip(1) if i == 0 else w
            h = F.conv2d(h, w, cx._dyadic(conv.bias.detach(), cx.WEIGHT_BITS, cx.WEIGHT_LIMIT),
                         padding=w.shape[-1] // 2)
            if i < len(convs) - 1:
                h = cx._dyadic(torch.relu(h), cx.ACTIVATION_BITS, cx.ACTIVATION_LIMIT)
        bias = cx._dyadic(fitted.context.bias.detach()[:, lo:lo + b - a], cx.WEIGHT_BITS, cx.WEIGHT_LIMIT + 8)
        h = h.unflatten(1, (2, b - a))
        assert torch.equal(cx._dyadic(h[:, 0] + bias[0], cx.ACTIVATION_BITS, cx.MEAN_LIMIT), mu)
        assert torch.equal(torch.round(h[:, 1] + bias[1]).clamp(0, cx.SCALE_LEVELS - 1).long(), index)


def test_scales_are_decimal_constants():
    table = cx.scale_table()
    assert len(table) == cx.SCALE_LEVELS and table[0] == cx.SCALE_MIN
    assert all(t == float(f"{t:.6g}") for t in table)
    assert table[cx.STEPS_PER_OCTAVE] == pytest.approx(2 * cx.SCALE_MIN)


def test_stream_round_trips_with_escapes_and_costs_what_the_model_says(fitted):
    x = _images(200, seed=5)
    stream = byte_stream.compress(fitted, x)
    assert torch.equal(byte_stream.decompress(stream, fitted), byte_stream.reconstruct(fitted, x))
    with torch.no_grad():
        ideal = float(fitted.loss(x, x)["rate"]) * len(x)
    payload_bits = coded_bits(stream)
    assert 20 < ideal / len(x) < 400
    assert payload_bits == pytest.approx(ideal, rel=0.03)  # the scales' rounding and the coder cost little
    # latents far outside every table and Gaussian (clamped at +-32767): exact
    y = byte_stream.latents(fitted, x[:6]).clone()
    y[0, 0, 0, 0], y[1, 3, 1, 1], y[2, 7, 2, 2], y[3, 5, 0, 1] = 32767, -32767, 4000, -2048
    words = byte_stream.encode_latents(fitted, y)
    assert torch.equal(byte_stream.decode_latents_stream(fitted, words, len(y), fitted.code_shape), y)


def test_the_decoder_predicts_from_what_it_decoded(fitted):
    """The decoder recomputes the means from what it decoded: a stream decoded by a model whose
    predictor differs (one weight changed) gives other latents; the same model gives the same."""
    x = _images(8, seed=6)
    words = byte_stream.encode_latents(fitted, byte_stream.latents(fitted, x))
    other = _model(lmbda=0.01)
    other.load_state_dict(fitted.state_dict())
    with torch.no_grad():
        other.context.nets[0][0].weight[0, 0, 1, 1] += 0.5
    y = byte_stream.latents(fitted, x)
    assert torch.equal(byte_stream.decode_latents_stream(fitted, words, len(x), fitted.code_shape), y)
    assert not torch.equal(byte_stream.decode_latents_stream(other, words, len(x), fitted.code_shape), y)


def test_init_from_an_element_run_takes_slice_zero_and_saves_and_loads(tmp_path):
    element = build_model("codec", SHAPE, net="gdn", net_options=NET, prior="element")
    ctx = _model()
    state = ctx.adapt_initial_state(element.state_dict())
    ctx.load_state_dict(state)
    rows = ctx.density.channels
    assert rows == 2 * 9
    for mine, theirs in zip(ctx.density.matrices, element.density.matrices):
        assert torch.equal(mine, theirs[:rows])  # C-major: slice 0's elements come first
    channel = build_model("codec", SHAPE, net="gdn", net_options=NET, prior="channel")
    ctx.load_state_dict(ctx.adapt_initial_state(channel.state_dict()))
    assert torch.equal(ctx.density.biases[0], channel.density.biases[0].repeat_interleave(9, dim=0)[:rows])
    ctx.finalise()
    runs.save_weights(ctx, tmp_path / "model.safetensors")
    loaded = _model()
    runs.load_weights(loaded, tmp_path / "model.safetensors")
    x = _images(5)
    assert byte_stream.model_id(loaded) == byte_stream.model_id(ctx)
    assert torch.equal(byte_stream.decompress(byte_stream.compress(ctx, x), loaded), byte_stream.reconstruct(ctx, x))
