"""The README's photo figure: one held-out photo, noisy / cleaned by a zoo model / original.

    python tools/photo_figure.py [--run zoo:denoiser-photo] [--photo astronaut] [--sigma 25]
                                 [--out docs/figures/photo_denoised.png]

The photo is one of aelab.photos.TEST (never cropped into training), with the noise every
method is measured on (aelab.photos.noisy_photo); the whole photo is cleaned, then a
256 x 256 window of each is shown at full resolution, titled with the whole photo's PSNR.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="zoo:denoiser-photo")
    p.add_argument("--photo", default="astronaut")
    p.add_argument("--sigma", type=float, default=25)
    p.add_argument("--window", default="40,150", help="top,left of the 256 x 256 window shown")
    p.add_argument("--out", default="docs/figures/photo_denoised.png")
    args = p.parse_args(argv)

    import torch

    from aelab import photos, plots, runs
    from aelab.inference import clean

    model = runs.load_model(args.run)
    original, noisy = photos.noisy_photo(args.photo, args.sigma)
    cleaned = clean(model, torch.from_numpy(noisy)[None])[0].numpy()
    top, left = (int(v) for v in args.window.split(","))

    def window(a):
        return torch.from_numpy(a[:, top:top + 256, left:left + 256].copy())

    titles = [f"noisy, sigma {args.sigma:g}: {photos.photo_psnr(original, noisy):.2f} dB",
              f"cleaned by {args.run}: {photos.photo_psnr(original, cleaned):.2f} dB", "original"]
    plots.rows([("", [window(noisy), window(cleaned), window(original)])], args.out, titles=titles, cell=3.2,
               suptitle=f"{args.photo} (held out; the whole photo cleaned, a 256 x 256 window shown)")
    print(f"wrote {args.out}: " + "; ".join(titles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
