"""Streaming data: peak memory flat while the data set grows, and images per second.

    python benchmarks/stream_data.py [--steps 300] [--sizes 20000,200000,2000000] [--workers 0,1,2]

Trains the tutorial's network (batch 32, one thread) for ``--steps`` steps on a lazily
generated set of 28x28 grey images (each image made from its index when it is read: nothing
is held), through aelab's streaming path (:mod:`aelab.streaming`, a DataLoader with 0, 1 or
2 workers), and on the same images held in memory as float32 (the Fashion-MNIST path) where
they fit. Each configuration runs in a child process of its own; its peak RSS is the child's
``ru_maxrss`` plus, per worker, the largest worker's (``RUSAGE_CHILDREN`` gives the largest
child): an upper bound on the process and its workers together (forked workers share pages,
which this counts once per worker). Printed side by side in one run, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from aelab import streaming
from aelab.models import build_model
from aelab.train import TrainConfig, fit

n, workers, steps, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

class Generated(streaming.Streamed):
    '''Image i made from i when it is read (a blob whose place and brightness follow i).'''
    def __init__(self, n):
        self.labels, self.class_names, self.shape = range(n), ["all"], (1, 28, 28)
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, key):
        i = int(key[0] if isinstance(key, tuple) else key)
        a = np.zeros((1, 28, 28), np.uint8)
        r, c = i % 17, (i // 17) % 17
        a[0, r:r + 11, c:c + 11] = 60 + i % 190
        return a

data = Generated(n)
if mode == "memory":
    data = data.items(range(n))  # float32 (N, 1, 28, 28): what the in-memory path holds
torch.manual_seed(0)
model = build_model("denoising", (1, 28, 28))
config = TrainConfig(epochs=1, batch_size=32, progress=False, workers=workers, threads=1)
t0 = time.perf_counter()
fit(model, data, None, config, stop_after_steps=steps)
seconds = time.perf_counter() - t0
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_mb": (own + kids * workers) / 1024, "images_per_s": steps * 32 / seconds}))
"""


def _run(n: int, workers: int, steps: int, mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(workers), str(steps), mode],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sizes", default="20000,200000,2000000")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--memory-up-to", type=int, default=200000,
                   help="largest set also run in memory (2M images would need 6.3 GB as float32)")
    args = p.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    workers = [int(v) for v in args.workers.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.steps} steps of batch 32, one thread, the tutorial's network")
    print()
    print("| images | path | workers | peak RSS (MB, process + workers) | images/s |")
    print("|---:|---|---:|---:|---:|")
    for n in sizes:
        rows = [("memory", 0)] if n <= args.memory_up_to else []
        rows += [("streamed", w) for w in workers]
        for mode, w in rows:
            r = _run(n, w, args.steps, mode)
            if "error" in r:
                print(f"| {n:,} | {mode} | {w} | failed: {r['error']} | |")
            else:
                print(f"| {n:,} | {mode} | {w} | {r['rss_mb']:.0f} | {r['images_per_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
