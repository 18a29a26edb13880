"""What fewer bits a weight cost a trained run: the weights file's bytes and the reconstruction
PSNR on the first test images, for each storage spec (aelab.quantize: "int8", "int8,decoder.=int4", ...).

    python benchmarks/quantize_bits.py --run RUN [--spec SPEC ...] [--images 2000]

Prints a table: spec, bytes, PSNR (dB), difference from float32. The decoder's bits leave the
codes (the encoder's output) unchanged, so this is the price a codes model pays in its
reconstructions for fitting a size.
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import save as save_safetensors

from aelab import runs
from aelab.data import load_dataset
from aelab.metrics import psnr
from aelab.quantize import dequantize_state, quantize_state

SPECS = ["int8", "int8,decoder.=int4", "int8,decoder.=int4,decoder.4.=int3", "int8,decoder.=int3"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a trained run (or zoo:NAME)")
    p.add_argument("--spec", action="append", default=None, help=f"a storage spec (repeatable; default {SPECS})")
    p.add_argument("--images", type=int, default=2000, help="the first N test images (default 2000)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = runs.load_model(args.run)
    model.eval()
    float32 = {k: v.detach().clone() for k, v in runs.plain_state_dict(model).items()}
    x = load_dataset(None, "test").x[:args.images]

    def measure(state):
        model.load_state_dict(state)
        with torch.no_grad():
            return psnr(x, torch.cat([model(b) for b in x.split(500)]))

    base = measure(float32)
    print(f"{args.run}: reconstruction PSNR on the first {len(x):,} test images")
    print("| weights | bytes | PSNR (dB) | against float32 |")
    print("|---|---:|---:|---:|")
    print(f"| float32 | {len(save_safetensors(float32)):,} | {base:.2f} | |")
    for spec in args.spec or SPECS:
        stored = quantize_state(float32, spec=spec)
        value = measure(dequantize_state(stored))
        print(f"| {spec} | {len(save_safetensors(stored, metadata={'format': 'pt'})):,} | {value:.2f} | "
              f"{value - base:+.2f} |")


if __name__ == "__main__":
    main()
