"""8-bit weights (aelab.quantize): per-row symmetric quantisation, read back on loading."""

import pytest
import torch
from safetensors.torch import save as save_safetensors

from aelab import runs
from aelab.errors import ConfigError
from aelab.models import build_model
from aelab.quantize import dequantize_state, quantize_state


def test_quantised_values_are_within_half_a_step_of_each_row():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 200, generator=g) * torch.logspace(-3, 1, 50)[:, None]  # rows of very different sizes
    w[7] = 0.0
    state = {"w": w, "bias": torch.randn(50, generator=g), "steps": torch.tensor(3)}
    q = quantize_state(state)
    assert q["w#int8"].dtype == torch.int8 and q["w#scale"].shape == (50,)
    assert torch.equal(q["bias"], state["bias"]) and torch.equal(q["steps"], state["steps"]), "small ones unchanged"
    back = dequantize_state(q)
    assert set(back) == set(state)
    step = w.abs().amax(1) / 127
    assert ((back["w"] - w).abs() <= step[:, None] / 2 + 1e-7).all()
    assert torch.equal(back["w"][7], torch.zeros(200))
    assert (back["w"].abs().amax(1) - w.abs().amax(1)).abs().max() < 1e-6, "each row's largest value is exact"
    assert dequantize_state(state) == state, "a state without 8-bit pairs comes back as it is"


def test_a_run_with_8_bit_weights_loads_and_a_broken_pair_is_a_one_line_error(tmp_path):
    torch.manual_seed(0)
    model = build_model("undercomplete", (1, 28, 28), net="dense", net_options={"latent_dim": 8, "hidden": [64]})
    runs.save_model(model, tmp_path)
    state = quantize_state(runs.plain_state_dict(model))
    assert any(k.endswith("#int8") for k in state)
    (tmp_path / runs.WEIGHTS).write_bytes(save_safetensors(state))
    loaded = runs.load_model(tmp_path)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert (loaded(x) - model.eval()(x)).abs().max() < 0.02
    key = next(k for k in state if k.endswith("#scale"))
    del state[key]
    (tmp_path / runs.WEIGHTS).write_bytes(save_safetensors(state))
    with pytest.raises(ConfigError, match=r"expected .* as int8 values with one scale per row, found torch.int8 "
                                          r"values and no scale; the file is damaged"):
        runs.load_model(tmp_path)
