"""A large photo cleaned in tiles: peak memory and time of `aelab denoise` on one photo.

    python benchmarks/tile_memory.py [--run zoo:denoiser-unet] [--size 4000,3000] [--threads 1]

Makes a W x H RGB photo (scikit-image's astronaut, tiled and mirrored to the size, with
noise of sigma 25), then runs `aelab denoise --run RUN photo.png --out DIR` in a child
process under /usr/bin/time and prints its peak RSS (the child's maxrss), wall time and
CPU time, and the PSNR gain on the photo. The image is cleaned in overlapping tiles within
aelab.tiling.BUDGET_BYTES of activations (a grey model cleans each colour channel).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="zoo:denoiser-unet")
    p.add_argument("--size", default="4000,3000", help="W,H")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import numpy as np
    from PIL import Image

    from aelab import photos

    width, height = (int(v) for v in args.size.split(","))
    base = photos.load_photo("astronaut")
    reps = (-(-height // base.shape[0]), -(-width // base.shape[1]))
    tiles = np.concatenate([np.concatenate([base[:, ::(-1) ** j] for j in range(reps[1])], 1)[::(-1) ** i]
                            for i in range(reps[0])], 0)[:height, :width]
    rng = np.random.default_rng(0)
    noisy = np.clip(tiles + rng.normal(0, 25 / 255, tiles.shape), 0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.png"
        Image.fromarray((noisy * 255).round().astype(np.uint8)).save(photo)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = ["/usr/bin/time", "-f", "maxrss_kb=%M wall=%e user=%U sys=%S", sys.executable, "-m", "aelab",
               "denoise", "--run", args.run, str(photo), "--out", str(Path(tmp) / "out")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return proc.returncode
        stats = dict(re.findall(r"(\w+)=([\d.]+)", proc.stderr.strip().splitlines()[-1]))
        cleaned = np.asarray(Image.open(Path(tmp) / "out" / "photo.denoised.png"), dtype=np.float32) / 255
        before, after = photos.photo_psnr(tiles, noisy), photos.photo_psnr(tiles, cleaned)
    print(f"| photo | model | threads | peak RSS | wall | CPU | PSNR noisy -> cleaned |")
    print("|---|---|---:|---:|---:|---:|---|")
    print(f"| {width}x{height} RGB | {args.run} | {args.threads} | {int(stats['maxrss_kb']) / 2 ** 20:.2f} GB | "
          f"{float(stats['wall']):.0f} s | {float(stats['user']) + float(stats['sys']):.0f} s | "
          f"{before:.2f} -> {after:.2f} dB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
