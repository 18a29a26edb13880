"""bf16 autocast against float32 for one training step on the CPU, side by side in one run.

    python benchmarks/amp_speed.py [--widths 16,32,64 32,64,128] [--batch-size 128] [--threads 1]

For each U-Net denoiser (``--net unet``, the given widths) it times a full training step
(forward, MSE, backward, Adam) on a batch of 28x28 grey images, channels-last, alternating
float32 and bf16 rounds (A B A B) so both see the same machine load, and prints the median CPU
milliseconds per step of each, their ratio, and whether the CPU reports bf16 units (AMX or
AVX512-BF16, from /proc/cpuinfo). `aelab train --amp bf16` turns the autocast on for a run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aelab.models import build_model


def bf16_units() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(found) or "none"


def step_times(widths, batch_size: int, rounds: int = 3, steps: int = 5) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model("denoising", (1, 28, 28), net="unet", net_options={"widths": widths})
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)

    def step(amp: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = ((model(y).float() - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = {"float32": [], "bf16": []}
    for _ in range(rounds):
        for name, amp in (("float32", False), ("bf16", True)):
            step(amp)  # warm-up: the first call of each mode picks its kernels
            for _ in range(steps):
                t0 = time.process_time()
                step(amp)
                times[name].append(time.process_time() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", nargs="+", default=["16,32,64", "32,64,128"], help="U-Net widths, one per row")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, bf16 units: {bf16_units()}")
    print("| U-Net widths | float32 ms/step | bf16 ms/step | speed-up |")
    print("|---|---:|---:|---:|")
    for spec in args.widths:
        widths = [int(v) for v in spec.split(",")]
        t = step_times(widths, args.batch_size)
        print(f"| {spec} | {t['float32']:.0f} | {t['bf16']:.0f} | {t['float32'] / t['bf16']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
