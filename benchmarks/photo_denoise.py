"""Photo denoising: a model against BM3D/CBM3D and non-local means on the held-out photos.

    python benchmarks/photo_denoise.py --run zoo:denoiser-photo [--sigmas 15,25,50] [--grey]

The held-out photos of aelab's photo split (aelab.photos.TEST: astronaut, coffee, china,
chelsea in colour; camera, moon in grey; never cropped into training), each at its own size
and colour, with Gaussian noise of sigma 15, 25, 50 (of 255), clipped to [0, 1], drawn from a
generator seeded by the photo and sigma (aelab.photos.noisy_photo: the same draw for every
method). PSNR of each photo (data range 1) and their mean: the model (aelab.inference.clean,
blind: it is not told sigma), BM3D (grey) / CBM3D (colour) from the bm3d package told the true
sigma, non-local means (scikit-image, fast mode, 5x5 patches, 13x13 search, h = 0.8 sigma, told
sigma), and the noisy input. ``--grey`` converts every photo to grey first (luma).
Prints a Markdown table per sigma and the CPU seconds of each method.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="a run or zoo:NAME (repeatable)")
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--grey", action="store_true")
    p.add_argument("--methods", default="bm3d,nlmeans", help="classical methods to run (comma-separated)")
    args = p.parse_args(argv)

    import bm3d
    import numpy as np
    import torch
    from skimage.restoration import denoise_nl_means

    from aelab import photos, runs
    from aelab.inference import clean

    torch.set_num_threads(1)
    sigmas = [float(v) for v in args.sigmas.split(",")]
    names = photos.TEST

    def model_fn(run):
        model = runs.load_model(run)
        return lambda noisy, sigma: clean(model, torch.from_numpy(noisy)[None])[0].numpy()

    def bm3d_fn(noisy, sigma):
        profile = bm3d.BM3DProfile()
        profile.num_threads = 1
        if noisy.shape[0] == 1:
            return bm3d.bm3d(noisy[0].astype(np.float64), sigma_psd=sigma / 255, profile=profile)[None]
        return np.moveaxis(bm3d.bm3d_rgb(np.moveaxis(noisy, 0, -1).astype(np.float64), sigma_psd=sigma / 255,
                                         profile=profile), -1, 0)

    def nlm_fn(noisy, sigma):
        s = sigma / 255
        im = noisy[0] if noisy.shape[0] == 1 else np.moveaxis(noisy, 0, -1)
        out = denoise_nl_means(im.astype(np.float64), h=0.8 * s, sigma=s, patch_size=5, patch_distance=6,
                               fast_mode=True, channel_axis=None if noisy.shape[0] == 1 else -1)
        return out[None] if noisy.shape[0] == 1 else np.moveaxis(out, -1, 0)

    methods = [("noisy input", lambda noisy, sigma: noisy)]
    methods += [(run, model_fn(run)) for run in args.run]
    wanted = args.methods.split(",")
    if "bm3d" in wanted:
        methods.append(("BM3D / CBM3D (told sigma)", bm3d_fn))
    if "nlmeans" in wanted:
        methods.append(("non-local means (told sigma)", nlm_fn))
    scores, seconds = {}, {}
    for label, fn in methods:
        t0 = time.process_time()
        scores[label] = photos.denoising_scores(fn, sigmas, names, grey=args.grey)
        seconds[label] = time.process_time() - t0
        print(f"measured {label} in {seconds[label]:.0f} CPU s", file=sys.stderr, flush=True)
    for sigma in sigmas:
        key = f"{sigma:g}"
        print(f"\nsigma {key} (of 255){' , grey' if args.grey else ''}: PSNR in dB on the held-out photos\n")
        print("| method | " + " | ".join(names) + " | mean |")
        print("|---|" + "---:|" * (len(names) + 1))
        for label, _ in methods:
            row = scores[label][key]
            print(f"| {label} | " + " | ".join(f"{row[n]:.2f}" for n in names) + f" | **{row['mean']:.2f}** |")
    print("\nCPU seconds for all photos and sigmas: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
