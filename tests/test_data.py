import gzip

import numpy as np
import pytest
import torch

from aelab import data
from aelab.errors import DataError, DataNotFoundError

from conftest import write_idx


def test_idx_roundtrip_gz_and_plain(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (True, False):
        p = write_idx(tmp_path / f"a{gz}", a, gz=gz)
        np.testing.assert_array_equal(data.read_idx(p), a)


def test_idx_wrong_magic(tmp_path):
    p = write_idx(tmp_path / "bad", np.zeros((2, 2, 2)), magic=0x12345678)
    with pytest.raises(DataError, match="magic 0x12345678"):
        data.read_idx(p)


def test_idx_wrong_ndim(tmp_path):
    p = write_idx(tmp_path / "labels", np.zeros(5))
    with pytest.raises(DataError, match="3 dimension"):
        data.read_idx(p, expected_ndim=3)


def test_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "t", np.zeros((4, 28, 28)), gz=False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(p)


def test_idx_truncated_gzip(tmp_path):
    p = write_idx(tmp_path / "t.gz", np.zeros((4, 28, 28)))
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        data.read_idx(p)


def test_counts_disagree_and_label_out_of_range(tmp_path):
    imgs = write_idx(tmp_path / "i.gz", np.zeros((3, 28, 28)))
    lbls = write_idx(tmp_path / "l.gz", np.zeros(4))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        data.load_idx_pair(imgs, lbls)
    lbls = write_idx(tmp_path / "l2.gz", np.array([1, 12, 3]))
    with pytest.raises(DataError, match="found 12 at index 1"):
        data.load_idx_pair(imgs, lbls)


def test_load_fashion_from_folder(fake_fashion):
    ds = data.load_fashion_mnist("train", path=fake_fashion)
    assert ds.x.shape == (64, 1, 28, 28) and ds.x.dtype == torch.float32
    assert float(ds.x.max()) == pytest.approx(200 / 255) and float(ds.x.min()) == 0.0
    assert ds.y.dtype == torch.int64 and len(ds.class_names) == 10
    assert len(data.load_fashion_mnist("test", path=fake_fashion, limit=5)) == 5


def test_locator_order_and_message(tmp_path, monkeypatch, fake_fashion):
    monkeypatch.setenv("AELAB_DATA", str(fake_fashion))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.locate_fashion_mnist() == fake_fashion
    monkeypatch.setenv("AELAB_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DataNotFoundError) as err:
        data.locate_fashion_mnist()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("nowhere", "cache", "system", "apt-get install dataset-fashion-mnist", "--data"):
        assert part in msg
    (tmp_path / "empty").mkdir()  # there, but without the files: which ones are missing
    with pytest.raises(DataNotFoundError, match="missing train-images-idx3-ubyte"):
        data.locate_fashion_mnist(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="found nothing there"):  # not there at all: say so
        data.locate_fashion_mnist(tmp_path / "nosuchdir")


def test_image_folder_and_npz(tmp_path):
    from PIL import Image
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    ds = data.load_image_folder(tmp_path)
    assert ds.x.shape == (6, 3, 12, 10) and ds.class_names == ["cats", "dogs"]
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.load_image_folder(tmp_path, size=(8, 8)).x.shape == (6, 3, 8, 8)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "dogs" / "odd.png")
    with pytest.raises(DataError, match="one size.*--size"):
        data.load_image_folder(tmp_path)
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 9, 9), np.uint8) + 255, y=np.arange(4))
    nz = data.load_npz(tmp_path / "a.npz")
    assert nz.x.shape == (4, 1, 9, 9) and float(nz.x.max()) == 1.0


def test_check_images_messages():
    with pytest.raises(DataError, match="rank 4"):
        data.check_images(torch.zeros(2, 28, 28))
    with pytest.raises(DataError, match="channels last"):
        data.check_images(torch.zeros(2, 28, 28, 1))
    with pytest.raises(DataError, match="x.float\\(\\) / 255"):
        data.check_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError, match="x / 255"):
        data.check_images(torch.full((2, 1, 4, 4), 200.0))
    with pytest.raises(DataError, match="NaN"):
        data.check_images(torch.full((2, 1, 4, 4), float("nan")))
    with pytest.raises(DataError, match="empty"):
        data.check_images(torch.zeros(0, 1, 4, 4))
