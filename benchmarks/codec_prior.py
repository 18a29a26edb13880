"""What a codec run's latents would cost under simple priors: one histogram per latent
channel (shared by the positions) or one per latent element (channel x position).

    python benchmarks/codec_prior.py --runs runs/codec-0.04-ft runs/codec-el-0.04

The histograms are counted on the integer latents of the 60,000 training images (add-1/2
smoothing over the range seen in train and test) and scored on the 10,000 test images:
the cross-entropy in bytes per image, next to the run's own learned density (its ideal
code length, which the stream meets within a few tenths of a byte). This is how the
``prior="element"`` option of the codec kind was chosen: the bytes per-element densities
save before any training, for the same latents.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from aelab.compression import latents, load_codec
from aelab.data import load_dataset


def cross_entropy_bytes(train: np.ndarray, test: np.ndarray, alpha: float = 0.5) -> float:
    """Bytes of coding every test row, each column with its training histogram (train, test: (n, K) ints)."""
    bits = 0.0
    for k in range(train.shape[1]):
        lo = min(train[:, k].min(), test[:, k].min())
        hi = max(train[:, k].max(), test[:, k].max())
        counts = np.bincount(train[:, k] - lo, minlength=hi - lo + 1) + alpha
        bits += -np.log2(counts[test[:, k] - lo] / counts.sum()).sum()
    return bits / 8


def measure(run: str, x_train: torch.Tensor, x_test: torch.Tensor) -> dict:
    model = load_codec(run)
    y_train = latents(model, x_train).long().numpy()
    y_test = latents(model, x_test).long().numpy()
    n, c = y_test.shape[:2]
    with torch.no_grad():
        learned = float(model.latent_bits(torch.from_numpy(y_test).float()).mean()) / 8
    by_channel = lambda y: np.moveaxis(y.reshape(len(y), c, -1), 1, 2).reshape(-1, c)  # noqa: E731
    per_channel = cross_entropy_bytes(by_channel(y_train), by_channel(y_test)) / n
    per_element = cross_entropy_bytes(y_train.reshape(len(y_train), -1), y_test.reshape(n, -1)) / n
    return {"run": run, "prior": model.prior, "learned": learned, "channel": per_channel, "element": per_element}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="codec run directories")
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: locate it)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x_train = load_dataset(args.data, split="train").x
    x_test = load_dataset(args.data, split="test").x
    print("| run | its prior | learned density (B/image) | histogram per channel | histogram per element |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        r = measure(run, x_train, x_test)
        print(f"| {r['run']} | {r['prior']} | {r['learned']:.1f} | {r['channel']:.1f} | {r['element']:.1f} |")


if __name__ == "__main__":
    main()
