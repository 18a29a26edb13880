"""Pack trained runs into the model zoo (for maintainers): each entry names the run, how its
figures are measured, what it is for, the exact chain of commands that trained it and its
CPU minutes; `aelab.zoo.pack` measures the figures on the weights as shipped and writes the card.

    python tools/pack_zoo.py RUNS_DIR [NAME ...]
    python tools/pack_zoo.py --remeasure [--rd RD_JSON] NAME ...  # the shipped weights, measured again with
                                                                  # the settings here (codecs: full figures from rd)

RUNS_DIR holds the runs the recipes wrote (the `{dir}` of each recipe).
"""

import sys
from pathlib import Path

from aelab import runs, zoo
from aelab.compression import model_id
from aelab.photos import COLOUR_TEST, TEST

COMMON = ["--threads", "1", "--device", "cpu", "--no-progress"]
COMPARE = ["compare", "--epochs", "25", *COMMON, "--out", "{dir}/compare"]
CODEC = ["train", "--kind", "codec", "--net", "gdn", "--batch-size", "32", "--schedule", "onecycle", "--seed", "0",
         *COMMON]


def kinds(name, row, purpose, minutes):
    return {"name": name, "run": f"compare/{row}", "profile": "codes", "purpose": purpose,
            "steps": [COMPARE[:3] + ["--kinds", row] + COMPARE[3:]], "result": f"{{dir}}/compare/{row}",
            "cpu_minutes": minutes, "settings": {"iw_samples": 1000}, "weights": "int8"}


ENTRIES = [
    {"name": "denoiser-tutorial", "run": "denoiser-tutorial", "profile": "denoiser",
     "purpose": "the Keras/TensorFlow tutorial's convolutional denoiser (Adam, MSE, 10 epochs at noise 0.2)",
     "steps": [["reproduce", *COMMON, "--out", "{dir}/reproduce"]], "result": "{dir}/reproduce",
     "cpu_minutes": 3.4, "settings": {"noise_factors": [0.1, 0.2, 0.3, 0.5]}, "weights": "float32"},
    # the six rows of `aelab compare --epochs 25` (16.5 CPU minutes for all six; each row's share)
    kinds("ae-undercomplete-32", "undercomplete", "dense 784-256-32 undercomplete autoencoder (MSE): codes", 2.6),
    kinds("ae-sparse-l1", "sparse-l1", "dense 256-unit code kept sparse by an L1 activation penalty", 3.8),
    kinds("ae-sparse-kl", "sparse-kl", "dense 256-unit code kept sparse by KL(rho || rho_hat), rho 0.01", 1.7),
    kinds("ae-contractive-32", "contractive", "dense 32-d contractive autoencoder (lambda 1e-4)", 1.9),
    kinds("ae-denoising-32", "denoising", "dense 32-d denoising autoencoder (Gaussian 0.2)", 1.4),
    kinds("vae-32", "variational", "dense 32-d VAE (Bernoulli likelihood): `aelab sample`, likelihood", 1.6),
]


UNET = ["train", "--kind", "denoising", "--net", "unet", "--net-option", "widths=[32,64,128]", "--batch-size", "128",
        "--schedule", "onecycle", "--amp", "bf16", "--seed", "0", *COMMON]
UNET_BLIND = [*UNET, "--noise", "gaussian:0-0.5", "--epochs", "8", "--lr", "3e-3", "--out", "{dir}/unet-blind2"]


def unet_step(name, init, epochs, lr, seed=None):
    """A fine-tune at noise 0.2 from the run ``init``."""
    return [*UNET, "--noise", "gaussian:0.2", "--init", f"{{dir}}/{init}", "--epochs", str(epochs), "--lr", lr,
            *(["--seed", str(seed)] if seed is not None else []), "--out", f"{{dir}}/{name}"]


UNET_FT = unet_step("unet-blind2-ft0.2", "unet-blind2", 3, "1e-3")
UNET_FT8 = unet_step("unet-ft8", "unet-blind2-ft0.2", 8, "1e-3", seed=1)
UNET_FT24 = unet_step("unet-ft24", "unet-ft8", 16, "1e-3", seed=2)
UNET_FT36 = unet_step("unet-ft36", "unet-ft24", 12, "5e-4", seed=3)
UNET_FT44 = unet_step("unet-ft44", "unet-ft36", 8, "3e-4", seed=4)


def codec_step(name, lmbda, epochs, lr="1e-3", init=None, element=False, context=False):
    prior = ["--option", "prior=element"] if element else ["--option", "prior=context"] if context else []
    return [*CODEC, "--lambda", str(lmbda), "--epochs", str(epochs), "--lr", lr,
            *(["--init", f"{{dir}}/{init}"] if init else []), *prior, "--out", f"{{dir}}/{name}"]


CHAIN = {  # the codec runs, each from the one before it (`--init`), as trained for the zoo
    "codec-0.04": codec_step("codec-0.04", 0.04, 6, lr="1.5e-3"),
    "codec-0.025": codec_step("codec-0.025", 0.025, 5, init="codec-0.04"),
    "codec-0.007": codec_step("codec-0.007", 0.007, 2, init="codec-0.025"),
    "codec-el-0.007": codec_step("codec-el-0.007", 0.007, 2, init="codec-0.007", element=True),
    "codec-0.002": codec_step("codec-0.002", 0.002, 3, init="codec-0.025"),
    "codec-el-0.002": codec_step("codec-el-0.002", 0.002, 2, init="codec-0.002", element=True),
    # one command, from scratch, straight to a density per element
    "codec-el-0.06-1cmd": codec_step("codec-el-0.06-1cmd", 0.06, 18, lr="1.5e-3", element=True),
    # from it, a few epochs under the channel-conditional prior at another rate
    "ctx-0.05-ft": codec_step("ctx-0.05-ft", 0.05, 5, lr="5e-4", init="codec-el-0.06-1cmd", context=True),
    "ctx-0.25-ft": codec_step("ctx-0.25-ft", 0.25, 5, lr="5e-4", init="codec-el-0.06-1cmd", context=True),
    "ctx-0.5-ft": codec_step("ctx-0.5-ft", 0.5, 6, lr="5e-4", init="codec-el-0.06-1cmd", context=True),
    # one command, from scratch, straight to the channel-conditional prior (the 45-minute recipe)
    "ctx-0.045-14ep": codec_step("ctx-0.045-14ep", 0.045, 14, lr="1.5e-3", context=True),
    "ctx-1.0-ft": codec_step("ctx-1.0-ft", 1.0, 4, lr="3e-4", init="ctx-0.5-ft", context=True),
}


REFINE = 30  # the codecs' figures: each image's latents searched 30 steps (`aelab compress --refine 30`)


def codec(name, run, chain, purpose, minutes, weights="float32"):
    return {"name": name, "run": run, "profile": "codec", "purpose": purpose,
            "steps": [CHAIN[c] for c in chain], "result": f"{{dir}}/{run}", "cpu_minutes": minutes,
            "settings": {"refine": REFINE}, "weights": weights}


ENTRIES += [
    # one command from scratch (38.3 CPU minutes); it replaced the lambda 0.05 fine-tune of the element run
    # (`ctx-0.05-ft`, a 70-minute chain; 0.30 dB better at the same bytes, docs/compression.md)
    codec("codec-200b", "ctx-0.045-14ep", ["ctx-0.045-14ep"],
          "learned codec, about 180 bytes per image (lambda 0.045, the channel-conditional context prior, "
          "one command from scratch)", None, weights="float16"),
    # the channel-conditional prior, a few epochs from the element run (the shipped runs started from its
    # float16 zoo weights, `--init zoo:codec-215b`, while that was in the zoo)
    codec("codec-265b", "ctx-0.25-ft", ["codec-el-0.06-1cmd", "ctx-0.25-ft"],
          "learned codec, about 265 bytes per image (lambda 0.25, the channel-conditional context prior)", None,
          weights="float16"),
    codec("codec-315b", "ctx-1.0-ft", ["codec-el-0.06-1cmd", "ctx-0.5-ft", "ctx-1.0-ft"],
          "learned codec, about 315 bytes per image (lambda 1.0, the channel-conditional context prior)", None,
          weights="float16"),
    codec("codec-100b", "codec-el-0.007", ["codec-0.04", "codec-0.025", "codec-0.007", "codec-el-0.007"],
          "learned codec, about 100 bytes per image (lambda 0.007, a density per latent element)", None,
          weights="float16"),  # 2.04 MB in float32: its 1,024 densities and their tables
    
    codec("codec-50b", "codec-el-0.002", ["codec-0.04", "codec-0.025", "codec-0.002", "codec-el-0.002"],
          "learned codec, about 50 bytes per image (lambda 0.002, a density per latent element)", None,
          weights="float16"),
    {"name": "denoiser-unet", "run": "unet-blind2", "profile": "denoiser",
     "purpose": "the strongest blind denoiser: a U-Net (widths 32-64-128) trained on noise factors drawn from [0, 0.5]",
     "steps": [UNET_BLIND], "result": "{dir}/unet-blind2", "cpu_minutes": None,
     "settings": {"noise_factors": [0.1, 0.2, 0.3, 0.5]}, "weights": "float16"},
    {"name": "denoiser-unet-0.2", "run": "unet-ft44", "profile": "denoiser",
     "purpose": "the strongest denoiser at noise 0.2: the blind U-Net fine-tuned 3 + 8 + 16 + 12 + 8 epochs at "
                "that level only",
     "steps": [UNET_BLIND, UNET_FT, UNET_FT8, UNET_FT24, UNET_FT36, UNET_FT44], "result": "{dir}/unet-ft44",
     "cpu_minutes": None,
     "settings": {"noise_factors": [0.1, 0.2, 0.3, 0.5]}, "weights": "float16"},
]


VAE = ["train", "--kind", "variational", "--net", "dense", "--net-option", "latent_dim=40", "--net-option",
       "hidden=[512,256]", "--option", "prior=vamp", "--option", "pseudo_inputs=500", "--option", "kl_warmup=3000",
       "--batch-size", "128", "--schedule", "onecycle", "--seed", "0", *COMMON]
VAE_VAMP = [*VAE, "--epochs", "60", "--lr", "3e-3", "--out", "{dir}/vae-vamp"]
VAE_AR = [*VAE, "--option", "autoregressive=true", "--init", "{dir}/vae-vamp", "--epochs", "20", "--lr", "3e-3",
          "--out", "{dir}/vae-ar20"]
VAE_IW = [*VAE, "--option", "autoregressive=true", "--option", "train_samples=10", "--init", "{dir}/vae-ar20",
          "--epochs", "24", "--lr", "5e-4", "--out", "{dir}/vae-ar-iw10"]

ENTRIES += [
    {"name": "vae-vamp-ar", "run": "vae-ar-iw10", "profile": "codes",
     "purpose": "the best likelihood: a dense 512-256 VAE, 40-d latent, VampPrior (500 pseudo-inputs), a linear "
                "autoregressive term over the pixels in its Bernoulli decoder, fine-tuned on the IWAE bound (K = 10)",
     "steps": [VAE_VAMP, VAE_AR, VAE_IW], "result": "{dir}/vae-ar-iw10", "cpu_minutes": None,
     "settings": {"iw_samples": 1000}, "weights": "int8"},  # 1.8 MB in 8 bits (4.2 in float16)
]


CODES = ["train", "--kind", "undercomplete", "--net", "dense", "--net-option", "latent_dim=32", "--net-option",
         "hidden=[1024,512]", "--loss", "bce", "--epochs", "25", "--batch-size", "128", "--lr", "3e-3",
         "--schedule", "onecycle", "--seed", "0", *COMMON, "--out", "{dir}/ae-codes-bce"]
# its codes kept (--freeze-encoder), a smaller decoder fitted to them: the model fits 2 MB in 8 bits
CODES_DEC = [*CODES[:-2], "--net-option", "decoder_hidden=[256,512]", "--init", "{dir}/ae-codes-bce",
             "--freeze-encoder", "--out", "{dir}/ae-codes-dec"]

ENTRIES += [
    {"name": "ae-codes-32", "run": "ae-codes-dec", "profile": "codes",
     "purpose": "the best 32-d codes for neighbours (kNN-5): the encoder of a dense 784-1024-512-32 autoencoder "
                "trained on the binary cross-entropy, with a 32-256-512-784 decoder fitted to its codes",
     "steps": [CODES, CODES_DEC], "result": "{dir}/ae-codes-dec", "cpu_minutes": None,
     "settings": {}, "weights": "int8"},  # 1.9 MB in 8 bits (the mirrored decoder's model: 2.7)
]


PHOTO_UNET = ["train", "--kind", "denoising", "--net", "unet", "--net-option", "widths=[32,64,128]", "--crop", "64,64",
              "--crops-per-image", "100", "--batch-size", "16", "--noise", "gaussian:0.0196-0.196", "--epochs", "75",
              "--lr", "2e-3", "--schedule", "onecycle", "--seed", "0", *COMMON]


def photo(name, run, grey, purpose):
    folder = "photos-grey" if grey else "photos"
    steps = [["data", "photos", "--out", f"{{dir}}/{folder}", *(["--grey"] if grey else [])],
             [*PHOTO_UNET, "--data", f"{{dir}}/{folder}", "--out", f"{{dir}}/{run}"]]
    return {"name": name, "run": run, "profile": "photo-denoiser", "purpose": purpose, "steps": steps,
            "result": f"{{dir}}/{run}", "cpu_minutes": None,
            "settings": {"sigmas": [15, 25, 50], "grey": grey,  # a colour model on the colour photos, a grey on all
                         "photos": list(TEST if grey else COLOUR_TEST)},
            "weights": "float16"}


ENTRIES += [
    photo("denoiser-photo", "photo-unet-rgb", False,
          "a blind colour photo denoiser: a U-Net (widths 32-64-128) trained on 64x64 windows of the 12 training "
          "photos of `aelab data photos`, noise sigma 5-50 of 255; any size, in tiles (for colour photos: each "
          "channel's noise its own; grey photos: zoo:denoiser-photo-grey)"),
    photo("denoiser-photo-grey", "photo-unet-grey", True,
          "the same for grey photos: trained on the training photos in grey, measured on all six held-out photos "
          "in grey"),
]


def cpu_minutes(root: Path) -> dict:
    """The CPU minutes (user + system) of each training, from the times.log the queue wrote."""
    out = {}
    for line in (root / "times.log").read_text().splitlines():
        name, *fields = line.split()
        f = dict(x.split("=") for x in fields)
        out[name] = (float(f["cpu_user"]) + float(f["cpu_sys"])) / 60
    return out


def rd_figures(rd_json: Path, name: str, refine: int) -> dict | None:
    """A codec's full figures from an `aelab rd` of the whole test set that measured ``zoo:NAME``,
    the weights shipped now (its model id), with the same search (the same function, rd_point)."""
    result = runs.read_json(rd_json)
    if result.get("limit") is not None or result.get("data") is not None or result["test_images"] != 10000:
        return None
    ident = model_id(runs.load_model(runs.ZOO_PREFIX + name)).hex()
    for p in result["methods"].get("aelab", {}).get("points", []):
        if p["run"] == runs.ZOO_PREFIX + name and p.get("refine", 0) == refine and p.get("model_id") == ident:
            return {"bytes_per_image": p["bytes_per_image"], "psnr": p["psnr"], "ssim": p["ssim"]}
    return None


def remeasure(name: str, settings: dict, rd_json: Path | None = None) -> None:
    """:func:`aelab.zoo.remeasure`, a codec's full figures taken from ``rd_json`` (:func:`rd_figures`)
    when it measured these very weights, rather than a second pass over the test set."""
    refine = {**zoo.card(name)["settings"], **settings}.get("refine", 0)
    zoo.remeasure(name, settings, rd_figures(rd_json, name, refine) if rd_json else None)


def main(argv):
    if argv[:1] == ["--remeasure"]:  # --remeasure [--rd RD_JSON] NAME ...: the entries' settings now
        rd_json = Path(argv[2]) if argv[1:2] == ["--rd"] else None
        for e in ENTRIES:
            if e["name"] in argv[1:]:
                remeasure(e["name"], e["settings"], rd_json)
                print(f"measured {e['name']} again: {zoo.card(e['name'])['headline']}")
        return
    root = Path(argv[0])
    chosen = set(argv[1:])
    minutes = cpu_minutes(root) if (root / "times.log").is_file() else {}
    for e in ENTRIES:
        if chosen and e["name"] not in chosen:
            continue
        if e["profile"] == "codec" or e["cpu_minutes"] is None:  # the whole chain's CPU time (its trainings)
            e["cpu_minutes"] = sum(minutes[Path(s[-1]).name] for s in e["steps"] if s[0] == "train")
        folder = zoo.pack(root / e["run"], e["name"], e["profile"], e["purpose"], e["steps"], e["result"],
                          e["cpu_minutes"], settings=e["settings"], weights=e["weights"])
        print(f"packed {folder}: {zoo.card(e['name'])['headline']}")


if __name__ == "__main__":
    main(sys.argv[1:])
