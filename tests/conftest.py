import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aelab.data import FASHION_FILES, SYSTEM_DIR

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test reaches the internet: the Fashion-MNIST download is off unless a test (the download's
    own, against a server on 127.0.0.1) turns it on."""
    monkeypatch.setenv("AELAB_OFFLINE", "1")


def write_idx(path: Path, array: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped or not, with an optional forced magic."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic if magic is not None else 0x800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture
def fake_fashion(tmp_path) -> Path:
    """A folder with the four IDX files of a tiny Fashion-MNIST look-alike (64 train, 32 test)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        img, lbl = FASHION_FILES[split]
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):  # a class-dependent blob so a model has something to learn
            images[i, 4 + c:14 + c, 6:22] = 200
        write_idx(tmp_path / (img + ".gz"), images)
        write_idx(tmp_path / (lbl + ".gz"), labels)
    return tmp_path


def real_data_available() -> bool:
    return all((SYSTEM_DIR / (s + ".gz")).exists() for pair in FASHION_FILES.values() for s in pair)


@pytest.fixture
def real_data():
    if not real_data_available():
        pytest.fail("the real Fashion-MNIST is needed for slow tests: apt-get install dataset-fashion-mnist")
    return SYSTEM_DIR
