"""Pack trained runs into the model zoo (for maintainers): each entry names the run, how its
figures are measured, what it is for, the exact chain of commands that trained it and its
CPU minutes; `aelab.zoo.pack` measures the figures on the weights as shipped and writes the card.

    python tools/pack_zoo.py RUNS_DIR [NAME ...]

RUNS_DIR holds the runs the recipes wrote (the `{dir}` of each recipe).
"""

import sys
from pathlib import Path

from aelab import zoo

COMMON = ["--threads", "1", "--device", "cpu", "--no-progress"]
COMPARE = ["compare", "--epochs", "25", *COMMON, "--out", "{dir}/compare"]
CODEC = ["train", "--kind", "codec", "--net", "gdn", "--batch-size", "32", "--schedule", "onecycle", "--seed", "0",
         *COMMON]


def kinds(name, row, purpose, minutes):
    return {"name": name, "run": f"compare/{row}", "profile": "codes", "purpose": purpose,
            "steps": [COMPARE[:3] + ["--kinds", row] + COMPARE[3:]], "result": f"{{dir}}/compare/{row}",
            "cpu_minutes": minutes, "settings": {"iw_samples": 1000}, "float16": True}


ENTRIES = [
    {"name": "denoiser-tutorial", "run": "denoiser-tutorial", "profile": "denoiser",
     "purpose": "the Keras/TensorFlow tutorial's convolutional denoiser (Adam, MSE, 10 epochs at noise 0.2)",
     "steps": [["reproduce", *COMMON, "--out", "{dir}/reproduce"]], "result": "{dir}/reproduce",
     "cpu_minutes": 3.4, "settings": {"noise_factors": [0.1, 0.2, 0.3, 0.5]}, "float16": False},
    # the six rows of `aelab compare --epochs 25` (16.5 CPU minutes for all six; each row's share)
    kinds("ae-undercomplete-32", "undercomplete", "dense 784-256-32 undercomplete autoencoder (MSE): codes", 2.6),
    kinds("ae-sparse-l1", "sparse-l1", "dense 256-unit code kept sparse by an L1 activation penalty", 3.8),
    kinds("ae-sparse-kl", "sparse-kl", "dense 256-unit code kept sparse by KL(rho || rho_hat), rho 0.01", 1.7),
    kinds("ae-contractive-32", "contractive", "dense 32-d contractive autoencoder (lambda 1e-4)", 1.9),
    kinds("ae-denoising-32", "denoising", "dense 32-d denoising autoencoder (Gaussian 0.2)", 1.4),
    kinds("vae-32", "variational", "dense 32-d VAE (Bernoulli likelihood): `aelab sample`, likelihood", 1.6),
]


def main(argv):
    root = Path(argv[0])
    chosen = set(argv[1:])
    for e in ENTRIES:
        if chosen and e["name"] not in chosen:
            continue
        folder = zoo.pack(root / e["run"], e["name"], e["profile"], e["purpose"], e["steps"], e["result"],
                          e["cpu_minutes"], settings=e["settings"], float16=e["float16"])
        print(f"packed {folder}: {zoo.card(e['name'])['headline']}")


if __name__ == "__main__":
    main(sys.argv[1:])
