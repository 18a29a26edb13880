"""DDP under torchrun (gloo, CPU): ranks stay identical, and a step over 2 ranks with batch b
is the step of one process with batch 2b."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from aelab.models import build_model
from aelab.train import TrainConfig, fit

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(out: Path, batch: int, steps: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(out), str(batch), str(steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_matches_single_process_with_double_batch(tmp_path):
    batch, steps = 4, 3
    _torchrun(tmp_path, batch, steps)
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 12, 12, generator=g)
    torch.manual_seed(0)
    single = build_model("denoising", (1, 12, 12), net="conv")
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    fit(single, x, x[:16], TrainConfig(epochs=1, batch_size=2 * batch, progress=False, device="cpu"),
        stop_after_steps=steps)
    moved = 0.0
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-6)
        moved += float((v - initial[k]).abs().sum())
    assert moved > 0  # the steps did change the weights
