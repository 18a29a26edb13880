import pytest
import torch

from aelab.errors import ConfigError
from aelab.noise import Gaussian, Masking, SaltPepper, Shift, add_evaluation_noise, evaluation_noise, parse_noise


def test_gaussian_statistics_and_clip():
    x = torch.full((200, 1, 28, 28), 0.5)
    y = Gaussian(0.1)(x, torch.Generator().manual_seed(1))
    d = y - x
    assert abs(float(d.mean())) < 2e-3 and abs(float(d.std()) - 0.1) < 2e-3
    z = Gaussian(0.2)(torch.zeros(100, 1, 28, 28), torch.Generator().manual_seed(1))
    assert float(z.min()) == 0.0 and float(z.max()) <= 1.0
    assert abs(float((z > 0).float().mean()) - 0.5) < 0.01  # half the noise is clipped away at 0


def test_seeding():
    x = torch.rand(8, 1, 6, 6)
    for noise in (Gaussian(0.2), SaltPepper(0.1), Masking(0.3)):
        a = noise(x, torch.Generator().manual_seed(3))
        b = noise(x, torch.Generator().manual_seed(3))
        c = noise(x, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_saltpepper_and_masking_fractions():
    x = torch.full((100, 1, 28, 28), 0.5)
    sp = SaltPepper(0.2)(x, torch.Generator().manual_seed(0))
    assert abs(float((sp == 0).float().mean()) - 0.1) < 0.01
    assert abs(float((sp == 1).float().mean()) - 0.1) < 0.01
    m = Masking(0.25)(x, torch.Generator().manual_seed(0))
    assert abs(float((m == 0).float().mean()) - 0.25) < 0.01


def test_blind_gaussian_draws_factor_per_image():
    x = torch.full((400, 1, 16, 16), 0.5)
    y = Gaussian(0.0, 0.4)(x, torch.Generator().manual_seed(0))
    stds = (y - x).flatten(1).std(1)
    assert float(stds.min()) < 0.05 and float(stds.max()) > 0.3


def test_parse():
    assert parse_noise("gaussian:0.2") == Gaussian(0.2)
    assert parse_noise("gaussian:0-0.5") == Gaussian(0.0, 0.5)
    assert parse_noise("saltpepper:0.1") == SaltPepper(0.1)
    assert parse_noise("masking:0.3") == Masking(0.3)
    assert parse_noise("none")(torch.ones(1)) is not None
    with pytest.raises(ConfigError, match="gaussian, saltpepper, masking"):
        parse_noise("speckle:0.1")
    with pytest.raises(ConfigError, match="expected a number"):
        parse_noise("gaussian:abc")
    with pytest.raises(ConfigError, match="in \\[0, 5\\]"):
        parse_noise("gaussian:-1")


def test_evaluation_noise_is_the_protocol_draw():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn((10, 1, 28, 28), generator=g)
    assert torch.equal(evaluation_noise((10, 1, 28, 28)), ref)
    x = torch.rand(10, 1, 28, 28)
    assert torch.equal(add_evaluation_noise(x, 0.2), (x + 0.2 * ref).clamp(0, 1))


def test_shift_translates_each_image_by_its_own_offset():
    """shift:K moves each image by whole pixels (dy, dx) in [-K, K]: on images whose content
    sits inside a zero border of K pixels it is exactly torch.roll by the drawn offsets."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(200, 2, 10, 9)
    x[:, :, 3:7, 3:6] = torch.rand(200, 2, 4, 3, generator=g)  # a border of 3 zero pixels
    noise = Shift(3)
    out = noise(x, torch.Generator().manual_seed(5))
    d = noise.offsets(200, torch.Generator().manual_seed(5))
    assert d.min() == -3 and d.max() == 3, "every offset in [-3, 3] is drawn"
    for i in range(200):
        assert torch.equal(out[i], torch.roll(x[i], shifts=(int(d[i, 0]), int(d[i, 1])), dims=(1, 2))), i
    # content pushed past the edge is lost and the uncovered border is 0, not wrapped around
    edge = torch.ones(1, 1, 4, 4)
    moved = Shift(1)(edge, torch.Generator().manual_seed(1))
    dy, dx = (int(v) for v in Shift(1).offsets(1, torch.Generator().manual_seed(1))[0])
    assert moved.sum() == (4 - abs(dy)) * (4 - abs(dx))
    assert torch.equal(Shift(0)(x), x)
    assert parse_noise("shift:2") == Shift(2) and parse_noise("shift:2").spec() == "shift:2"
    with pytest.raises(ConfigError, match="expected a shift of 0 to 64 whole pixels, found 1.5"):
        parse_noise("shift:1.5")
