"""The seed's "only on data like its training data", measured both ways for the denoisers.

    python benchmarks/photo_transfer.py

A denoiser trained on Fashion-MNIST (zoo:denoiser-unet) and one trained on photos
(zoo:denoiser-photo-grey), each measured on the other's test data and on its own, at about the
same noise: Fashion-MNIST's 10,000 test images at noise factor 0.1 and 0.2 (the fixed
evaluation noise, docs/protocols.md) and the six held-out photos in grey at sigma 25 and 50
(of 255: factor 0.098 and 0.196; aelab.photos.noisy_photo). PSNR in dB, mean over images.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    import torch

    from aelab import photos, runs
    from aelab.data import load_dataset
    from aelab.evaluate import denoising_quality
    from aelab.inference import clean

    torch.set_num_threads(1)
    test = load_dataset(None, "test")
    models = ["zoo:denoiser-unet", "zoo:denoiser-photo-grey"]
    print("| model (trained on) | Fashion-MNIST 0.1 | Fashion-MNIST 0.2 | photos, grey, sigma 25 | photos, grey, sigma 50 |")
    print("|---|---:|---:|---:|---:|")
    for name in models:
        model = runs.load_model(name)
        fashion = denoising_quality(model, test.x, [0.1, 0.2])
        scores = photos.denoising_scores(lambda noisy, sigma: clean(model, torch.from_numpy(noisy)[None])[0].numpy(),
                                         (25, 50), grey=True)
        print(f"| {name} | {fashion['0.1']['model']['psnr']:.2f} | {fashion['0.2']['model']['psnr']:.2f} | "
              f"{scores['25']['mean']:.2f} | {scores['50']['mean']:.2f} |", flush=True)
    noisy = denoising_quality(runs.load_model(models[0]), test.x, [0.1, 0.2])
    print(f"| noisy input | {noisy['0.1']['noisy']['psnr']:.2f} | {noisy['0.2']['noisy']['psnr']:.2f} | "
          f"{photos.denoising_scores(lambda n, s: n, (25,), grey=True)['25']['mean']:.2f} | "
          f"{photos.denoising_scores(lambda n, s: n, (50,), grey=True)['50']['mean']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
