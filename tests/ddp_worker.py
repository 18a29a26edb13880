"""Run under torchrun by test_distributed.py: a few DDP steps, each rank saving its weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from aelab import distributed
from aelab.models import build_model
from aelab.train import TrainConfig, fit

out, batch, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
assert distributed.setup("cpu") and distributed.world_size() == 2
g = torch.Generator().manual_seed(0)
x = torch.rand(64, 1, 12, 12, generator=g)
torch.manual_seed(0)
model = build_model("denoising", (1, 12, 12), net="conv")
fit(model, x, x[:16], TrainConfig(epochs=1, batch_size=batch, progress=False, device="cpu"),
    stop_after_steps=steps)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{distributed.rank()}.safetensors"))
distributed.teardown()
