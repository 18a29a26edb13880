"""A trained VAE's likelihood on the test set, optionally after fine-tuning on the IWAE bound.

    python benchmarks/vae_likelihood.py --run runs/vae [--iwae-epochs 5 --out runs/vae-iwft]
    python benchmarks/vae_likelihood.py --run runs/vae --samples 5000 --limit 1000 --no-save

Measures -ELBO and the importance-weighted bound of -log p(x) (Burda et al. 2016, K
samples, default 1000) in nats per image on the Fashion-MNIST test images binarised once
(seed 0), exactly as `aelab compare` does, and writes them under "nll" in the run's
metrics.json. With ``--iwae-epochs E`` it first copies the model, trains it E more epochs
on the K'-sample IWAE bound (``--train-samples``, default 5; the variational kind's
``train_samples`` option) and measures that copy instead. ``--limit N`` measures the first N
test images only (e.g. K = 5,000, the Exemplar VAE paper's importance samples, on a
subset), and ``--no-save`` leaves metrics.json as it is.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aelab import runs
from aelab.data import load_dataset
from aelab.models.variational import binarize
from aelab.settings import TrainConfig
from aelab.train import train_run
from aelab.zoo import steady_malloc


def measure(model, x_test, samples: int) -> dict:
    t0 = time.process_time()
    x_eval = binarize(x_test) if model.binarizes else x_test
    bounds = model.nll_bounds(x_eval, samples=samples)
    return {"neg_elbo": round(float(bounds["neg_elbo"].mean()), 2), "iw_nll": round(float(bounds["iw"].mean()), 2),
            "iw_samples": samples, "test_images": len(x_eval),
            "likelihood": model.likelihood + " (test images binarised once, seed 0)",
            "eval_cpu_seconds": round(time.process_time() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run of --kind variational")
    p.add_argument("--samples", type=int, default=1000, help="K of the importance-weighted bound")
    p.add_argument("--iwae-epochs", type=int, default=0, help="fine-tune this many epochs on the IWAE bound first")
    p.add_argument("--train-samples", type=int, default=5, help="K' of the IWAE training bound")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the fine-tuning (one-cycle)")
    p.add_argument("--out", help="where the fine-tuned run goes (required with --iwae-epochs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--no-save", dest="save", action="store_false", help="print the row, do not write metrics.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    steady_malloc()  # measured: 18 GB max RSS for the K = 1000 bound of a VampPrior VAE without it

    run = args.run
    model = runs.load_model(run)
    train, test = load_dataset(None, "train"), load_dataset(None, "test")
    if args.iwae_epochs:
        if not args.out:
            p.error("--iwae-epochs needs --out (the fine-tuned copy's run directory)")
        model.train_samples = args.train_samples
        config = TrainConfig(epochs=args.iwae_epochs, batch_size=128, lr=args.lr, schedule="onecycle",
                             threads=args.threads, device="cpu", progress=False, seed=1)
        torch.manual_seed(1)
        t0 = time.process_time()
        train_run(model, train.x, test.x, config, args.out, record={**config.record(), "fine_tuned_from": run})
        print(f"IWAE fine-tuning: {time.process_time() - t0:.1f} CPU-s", flush=True)
        run = args.out
    model.eval()
    row = measure(model, test.x[:args.limit], args.samples)
    if args.save:
        runs.update_metrics(run, nll=row)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
