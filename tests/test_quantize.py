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
    with pytest.raises(ConfigError, match=r"expected .* as quantised values with one scale per row, found no "
                                          r"scale; the file is damaged"):
        runs.load_model(tmp_path)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7])
def test_fewer_bits_pack_into_bytes_and_come_back_within_half_a_step(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(37, 5, 3, 3, generator=g) * torch.logspace(-2, 1, 37)[:, None, None, None]
    state = {"decoder.w": w, "encoder.w": w.clone()}
    q = quantize_state(state, min_values=100, spec=f"int8,decoder.=int{bits}")
    assert q["encoder.w#int8"].dtype == torch.int8, "the default for the other names"
    packed = q[f"decoder.w#int{bits}"]
    assert packed.dtype == torch.uint8 and packed.numel() == -(-w.numel() * bits // 8), "b bits a value, no more"
    assert q["decoder.w#shape"].tolist() == [37, 5, 3, 3]
    back = dequantize_state(q)
    assert set(back) == set(state) and back["decoder.w"].shape == w.shape
    top = 2 ** (bits - 1) - 1
    step = w.reshape(37, -1).abs().amax(1) / top
    err = (back["decoder.w"] - w).reshape(37, -1).abs()
    assert (err <= step[:, None] / 2 + 1e-6).all()
    levels = torch.unique(torch.round(back["decoder.w"].reshape(37, -1) / step[:, None]))
    assert levels.min() >= -top and levels.max() <= top and len(levels) <= 2 * top + 1


def test_the_bit_packing_against_numpy_packbits():
    import numpy as np

    from aelab.quantize import _pack, _unpack

    u = torch.randint(0, 16, (1001,), generator=torch.Generator().manual_seed(0))
    bits = ((u.numpy()[:, None] >> np.arange(4)) & 1).astype(np.uint8).reshape(-1)
    assert np.array_equal(_pack(u, 4).numpy(), np.packbits(bits, bitorder="little"))
    assert torch.equal(_unpack(_pack(u, 4), 4, len(u)), u.to(torch.int32))


def test_bad_specs_and_damaged_packed_tensors_are_one_line_errors():
    from aelab.zoo import weight_format

    for spec in ("int9", "int8,decoder.=int1", "decoder.=int4", "int8,int4", "float8"):
        with pytest.raises(ConfigError, match="expected weights"):
            weight_format(spec)
    q = quantize_state({"w": torch.randn(64, 100)}, spec="int3")
    with pytest.raises(ConfigError, match=r"expected w as quantised values .* found 2399 bytes for 6400 values of 3 bits"):
        dequantize_state({**q, "w#int3": q["w#int3"][1:]})
    with pytest.raises(ConfigError, match=r"found 2400 bytes for 6400 values of 3 bits"):
        dequantize_state({**q, "w#shape": torch.tensor([-64, -100])})
    with pytest.raises(ConfigError, match=r"found torch.uint8 values without a shape; the file is damaged"):
        dequantize_state({k: v for k, v in q.items() if k != "w#shape"})
    with pytest.raises(ConfigError, match=r"found w#shape without its quantised values"):
        dequantize_state({k: v for k, v in q.items() if k != "w#int3"})
