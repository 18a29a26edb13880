"""Run under torchrun by test_streaming.py: one epoch on a streamed folder and on the same
images in memory; each rank writes which images it read and a digest of both runs' weights."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from aelab import distributed, streaming
from aelab.models import build_model
from aelab.train import TrainConfig, fit

folder, out = Path(sys.argv[1]), Path(sys.argv[2])
assert distributed.setup("cpu") and distributed.world_size() == 2
rank = distributed.rank()


class Logged(streaming.ImageFiles):
    seen: list = []

    def __getitem__(self, key):
        if key[1] >= 0:  # a training read (the sanity check and the closing quality line read fixed crops)
            Logged.seen.append(int(key[0]))
        return super().__getitem__(key)


base = streaming.image_folder(folder)
ds = Logged(base.paths, base.labels, base.class_names, base.channels, size=base.size)
config = TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu", seed=7)


def digest(model) -> str:
    h = hashlib.sha256()
    for _, v in sorted(model.state_dict().items()):
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


torch.manual_seed(0)
model = build_model("denoising", (1, 12, 12))
fit(model, ds, None, config)
streamed = digest(model)
seen = list(Logged.seen)
x = ds.items(range(len(ds)))
torch.manual_seed(0)
model = build_model("denoising", (1, 12, 12))
fit(model, x, None, config)
(out / f"read{rank}.json").write_text(json.dumps(seen))
(out / f"weights{rank}.json").write_text(json.dumps({"streamed": streamed, "memory": digest(model)}))
distributed.teardown()
