"""Rate-distortion of aelab's learned codec against JPEG, WebP, AVIF, PCA and PNG (issue 8).

    python benchmarks/rate_distortion.py [--runs CODEC_RUN ...] [--methods jpeg,webp,...] [--limit N]
                                         [--out runs/rd]

Prints PSNR (dB) at ~50, ~100 and ~200 bytes per image for each codec on the Fashion-MNIST
test images (all 10,000 unless --limit), then every measured point; writes the same as
``aelab rd`` into --out (rd.json, rd.md, figures, report.html). One CPU thread: run it
under the machine's lock when others share the CPUs. The library does the work
(``aelab.compression.rd``, then ``aelab.report.write_report``); this script only prints.
"""

from __future__ import annotations

import argparse
import sys

from aelab.compression import DEFAULT_METHODS, rd
from aelab.report.tables import markdown_table, rd_tables
from aelab.report import write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="*", default=[], help="codec run directories (one point each)")
    p.add_argument("--methods", default=None, help="comma-separated codecs (default: every installed one)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--out", default="runs/rd", help="output folder (default runs/rd)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)

    methods = DEFAULT_METHODS if args.methods is None else [m for m in args.methods.split(",") if m and m != "none"]
    command = "python benchmarks/rate_distortion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = rd(out=args.out, runs=args.runs, methods=methods, limit=args.limit, threads=1, progress=args.progress,
                command=command)
    write_report(args.out, command=command)
    for caption, header, rows in rd_tables(result):
        print(f"\n{caption}\n")
        print(markdown_table(header, rows))
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
