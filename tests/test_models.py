import pytest
import torch

from aelab import runs
from aelab.errors import ConfigError, DataError
from aelab.models import MODELS, build_model

KINDS = sorted(MODELS)


@pytest.mark.parametrize("net", ["conv", "dense"])
@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind, net, tmp_path):
    torch.manual_seed(0)
    model = build_model(kind, (1, 28, 28), net=net)
    x = torch.rand(4, 1, 28, 28)
    assert model(x).shape == x.shape
    terms = model.loss(x, x)
    assert "loss" in terms and all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # save / load gives bit-identical outputs
    runs.save_model(model, tmp_path)
    again = runs.load_model(tmp_path)
    model.eval()
    assert torch.equal(model(x), again(x))
    assert again.config() == model.config()


def test_unknown_kind_and_option():
    with pytest.raises(ConfigError, match="unknown kind 'denoize'; expected one of .*denoising"):
        build_model("denoize", (1, 28, 28))
    with pytest.raises(ConfigError, match="did you mean 'reconstruction'"):
        build_model("denoising", (1, 28, 28), reconstrution="l1")


def test_wrong_input_shape_is_clear():
    model = build_model("denoising", (1, 28, 28))  # fully convolutional: any H, W, but its own channels
    with pytest.raises(DataError, match=r"expected images of shape \(N, 1, H, W\).*found \(2, 3, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))
    dense = build_model("denoising", (1, 28, 28), net="dense")
    with pytest.raises(DataError, match=r"expected images of shape \(N, 1, 28, 28\).*found \(2, 1, 30, 28\)"):
        dense(torch.rand(2, 1, 30, 28))
