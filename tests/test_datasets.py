"""Dataset loaders: IDX files (gzip and plain, both file-name spellings), corrupt files, the shared MNIST
copy, and the embedded 8x8 digits."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from verify.datasets import load_dataset, load_digits, load_fashion_mnist, load_mnist, read_idx
from verify.errors import InputError

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def make_dataset(folder: Path, n: int = 5, gz: bool = True, dotted: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("t10k", "train"):
        for kind, arr, nd in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}.idx{nd}-ubyte" if dotted else f"{prefix}-{kind}-idx{nd}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True), (True, True)])
def test_idx_layouts(tmp_path, gz, dotted):
    images, labels = make_dataset(tmp_path / "d", gz=gz, dotted=dotted)
    x, y = load_mnist("test", tmp_path / "d")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / np.float32(255))
    assert x.min() >= 0 and x.max() <= 1
    x2, _ = load_fashion_mnist("train", tmp_path / "d")  # same layout
    assert x2.shape == x.shape


def test_read_idx_dtypes(tmp_path):
    arr = np.arange(12, dtype=">i4").reshape(3, 4)
    p = tmp_path / "a.idx"
    p.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">2I", 3, 4) + arr.tobytes())
    assert read_idx(p).tolist() == arr.tolist()


def test_corrupt_and_missing(tmp_path):
    d = tmp_path / "d"
    make_dataset(d, gz=False)
    with pytest.raises(InputError, match="does not exist"):
        load_mnist("test", tmp_path / "nowhere")
    with pytest.raises(InputError, match="unknown split"):
        load_mnist("valid", d)
    # truncated image data
    p = d / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_mnist("test", d)
    # bad magic
    p.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    with pytest.raises(InputError, match="not an IDX file"):
        load_mnist("test", d)
    # broken gzip
    (d / "t10k-images-idx3-ubyte").unlink()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="corrupt gzip"):
        load_mnist("test", d)
    # label count mismatch
    e = tmp_path / "e"
    make_dataset(e, n=5, gz=False)
    (e / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(InputError, match="5 images but 4 labels"):
        load_mnist("test", e)
    # missing file
    (e / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="missing t10k-labels-idx1-ubyte.*--data-dir"):
        load_mnist("test", e)


def test_shared_mnist():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    x, y = load_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.min() == 0.0 and x.max() == 1.0


def test_digits_split_is_deterministic_and_disjoint():
    xt, yt = load_digits("test")
    xr, yr = load_digits("train")
    xa, ya = load_digits("all")
    assert xt.shape[1:] == (1, 8, 8) and xt.dtype == np.float32 and yt.dtype == np.int64
    assert len(xt) + len(xr) == len(xa) == 1797
    assert 0.0 <= xa.min() and xa.max() == 1.0
    xt2, yt2 = load_digits("test")
    assert np.array_equal(xt, xt2) and np.array_equal(yt, yt2)
    # every image lands in exactly one split
    rows = {r.tobytes() + bytes([c]) for r, c in zip(xa, ya)}
    split_rows = [r.tobytes() + bytes([c]) for r, c in zip(np.concatenate([xt, xr]), np.concatenate([yt, yr]))]
    assert set(split_rows) == rows
    assert set(np.bincount(yt)) <= set(range(40, 50))  # stratified: ~45 per class


def test_load_dataset_dispatch(tmp_path):
    make_dataset(tmp_path / "m")
    assert load_dataset("MNIST", "test", tmp_path / "m")[0].shape == (5, 1, 28, 28)
    assert load_dataset("digits")[0].shape[1:] == (1, 8, 8)
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="does not apply"):
        load_dataset("digits", data_dir=tmp_path)
