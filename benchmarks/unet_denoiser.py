"""Train the U-Net denoiser and record PSNR against training time.

The training is exactly ``aelab train --kind denoising --net unet`` (same seed, data,
noise, batch order and schedule as `aelab train ... --schedule onecycle`). After each epoch
the model is measured on the first ``--eval-images`` test images with the fixed
evaluation noise (docs/protocols.md); that time is not counted as training time.

    flock /tmp/aelab-cpu.lock .venv/bin/python benchmarks/unet_denoiser.py \
        --out runs/unet-blind --noise gaussian:0-0.5 --epochs 6 --threads 1

Writes OUT (a normal run directory: ``aelab evaluate --run OUT`` works on it) plus
``OUT/curve.json`` and ``OUT/figures/evaluate_training_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from aelab import plots, runs
from aelab.data import load_dataset
from aelab.evaluate import NOISE_FACTORS, denoising_quality
from aelab.models import build_model
from aelab.settings import TrainConfig
from aelab.train import train_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/unet-blind")
    p.add_argument("--noise", default="gaussian:0-0.5", help="training noise (blind: gaussian:0-0.5)")
    p.add_argument("--widths", default="16,32,64", help="U-Net channels per level")
    p.add_argument("--epochs", type=int, default=6, help="epochs (6 took 20 minutes on one shared CPU thread)")
    p.add_argument("--schedule", default="onecycle", help="learning-rate schedule: onecycle (lr is the peak) or constant")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (the one-cycle peak)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="on a shared 2-core machine one thread was faster")
    p.add_argument("--limit", type=int, default=None, help="first N images of each split (quick look)")
    p.add_argument("--eval-images", type=int, default=1000, help="test images measured after each epoch")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    widths = [int(v) for v in args.widths.split(",")]
    train_set = load_dataset(None, "train", limit=args.limit)
    test_set = load_dataset(None, "test", limit=args.limit)
    x_eval = test_set.x[:args.eval_images]
    torch.manual_seed(args.seed)  # as aelab.train does before building the model
    model = build_model("denoising", train_set.input_shape, net="unet", net_options={"widths": widths})
    command = (f"aelab train --kind denoising --net unet --net-option widths=[{args.widths}] --noise {args.noise} "
               f"--batch-size {args.batch_size} --lr {args.lr:g} --schedule {args.schedule} --seed {args.seed} "
               f"--threads {args.threads} --epochs {args.epochs} --out {args.out}")
    curve = {"command": command, "noise": args.noise, "schedule": args.schedule, "epochs": args.epochs,
             "widths": widths, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads, "eval_images": len(x_eval), "points": []}

    def measure(epoch: int, train_seconds: float):
        q = denoising_quality(model.cpu().eval(), x_eval, NOISE_FACTORS)
        point = {"epoch": epoch, "train_seconds": round(train_seconds, 1),
                 **{f: {"psnr": v["model"]["psnr"], "ssim": v["model"]["ssim"]} for f, v in q.items()}}
        curve["points"].append(point)
        print(json.dumps(point), flush=True)
        runs.write_json(out / "curve.json", curve)

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         noise=args.noise, threads=args.threads, device="cpu", schedule=args.schedule,
                         progress=False)
    spent = {"train": 0.0}

    def on_epoch_end(epoch, history):
        spent["train"] = sum(history["seconds"])  # training (and its validation), not this measurement
        measure(epoch, spent["train"])
        model.train()

    t0 = time.perf_counter()
    train_run(model, train_set.x, test_set.x, config, out, record=config.record(None, args.limit),
              extra={"class_names": train_set.class_names, "command": command}, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t0
    epoch = len(curve["points"])
    curve["wall_seconds"] = round(wall, 1)
    runs.write_json(out / "curve.json", curve)
    spent = spent["train"]
    xs = [pt["train_seconds"] / 60 for pt in curve["points"]]
    series = {f"noise {f}": [pt[f]["psnr"] for pt in curve["points"]] for f in curve["points"][0] if f[0].isdigit()}
    plots.lines(xs, series, out / "figures" / "evaluate_training_curve.png", xlabel="training time (minutes, CPU)",
                ylabel="PSNR (dB)", title=f"U-Net {args.widths}, {args.noise}: PSNR on the first {len(x_eval)} test images")
    print(f"trained {epoch} epochs in {spent / 60:.1f} min; wrote {out}/curve.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
