"""Inference speed and peak memory.

    python benchmarks/infer_speed.py [--run runs/reproduce] [--threads 1] [--repeats 5] [--memory]

Images per second denoising the 10,000 Fashion-MNIST test images (batch 1000), aelab's
``apply_model`` against the Keras tutorial model called directly, alternating A B A B and
quoting medians. The Keras model has the same architecture (random weights: speed does
not depend on them). With ``--memory`` it also runs ``aelab reproduce`` (1 epoch by
default, memory does not grow with epochs) in a child process and reports its peak
resident set size (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a run directory (default: a fresh tutorial model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--memory", action="store_true", help="also measure the peak RSS of `aelab reproduce`")
    p.add_argument("--memory-epochs", type=int, default=1)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    import aelab
    from aelab.inference import apply_model
    from aelab.noise import add_evaluation_noise

    sys.path.insert(0, os.path.dirname(__file__))
    from train_speed import keras_reference

    torch.set_num_threads(args.threads)
    test = aelab.load_fashion_mnist("test")
    x = add_evaluation_noise(test.x, 0.2)
    model = aelab.load_model(args.run) if args.run else aelab.build_model("denoising", (1, 28, 28))
    keras = keras_reference(args.threads)
    xk = x.permute(0, 2, 3, 1).numpy()

    def run_aelab():
        t = time.perf_counter()
        apply_model(model, x, batch_size=args.batch_size)
        return len(x) / (time.perf_counter() - t)

    def run_keras():
        t = time.perf_counter()
        np.concatenate([keras[1](xk[i:i + args.batch_size], training=False).numpy()
                        for i in range(0, len(xk), args.batch_size)])
        return len(xk) / (time.perf_counter() - t)

    run_aelab()
    if keras:
        run_keras()
    speeds = {"aelab": [], "keras": []}
    for _ in range(args.repeats):
        speeds["aelab"].append(run_aelab())
        if keras:
            speeds["keras"].append(run_keras())

    print(f"\nDenoising {len(x):,} test images, batch {args.batch_size}, {args.threads} thread(s), "
          f"median of {args.repeats} (A B A B)\n")
    print("| | images/s (median) | all runs |")
    print("|---|---|---|")
    for name, v in speeds.items():
        if v:
            print(f"| {name} | {statistics.median(v):,.0f} | {' '.join(f'{s:,.0f}' for s in v)} |")
    if keras:
        print(f"\nratio aelab/Keras: {statistics.median(speeds['aelab']) / statistics.median(speeds['keras']):.2f}x")
    else:
        print("\n(Keras reference skipped: TensorFlow is not installed; pip install -e '.[bench]')")

    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "aelab", "reproduce", "--epochs", str(args.memory_epochs), "--out", tmp,
                   "--no-progress", "--threads", str(args.threads)]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"\npeak RSS of `{' '.join(cmd[1:4])} --epochs {args.memory_epochs}`: {peak_kib / 1024:,.0f} MiB "
              f"({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
