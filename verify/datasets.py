"""Datasets: MNIST / Fashion-MNIST from IDX files, and scikit-learn's bundled 8x8 digits.

All loaders return `(images, labels)`: images float32 of shape [N, 1, H, W] with values in [0, 1],
labels int64 of shape [N].

MNIST is read from the four IDX files of the official distribution (`train-images-idx3-ubyte.gz`, ...,
gzip-compressed or not; the older `train-images.idx3-ubyte` spelling also works). Without `data_dir` we
look in the `shared/data/mnist` folder beside the repository. `load_digits` needs no files (the data ships
with scikit-learn), which makes it the default for quick starts and tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from verify.errors import InputError, read_input_bytes

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

#: the names `--dataset` accepts
DATASETS = ("mnist", "fashion-mnist", "digits")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain) into a numpy array of its declared shape and type."""
    path = Path(path)
    raw = read_input_bytes(path, "IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise InputError(
            f"{path}: IDX data has {len(raw) - header} bytes, the header {shape} needs {need} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(data_dir: Path, prefix: str, kind: str) -> Path:
    """The IDX file for e.g. prefix 't10k', kind 'images' in any of the usual spellings."""
    ndim = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for name in (stem + ".gz", stem):
            p = data_dir / name
            if p.is_file():
                return p
    raise InputError(
        f"{data_dir}: missing {prefix}-{kind}-idx{ndim}-ubyte(.gz); pass --data-dir with the folder of the IDX files"
    )


def _default_dir(candidates: list[Path], what: str) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    raise InputError(f"no {what} data folder found (looked in {', '.join(map(str, candidates))}); pass --data-dir DIR")


def load_idx_dataset(split: str, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST-layout dataset (images + labels IDX files) from `data_dir`."""
    if split not in _PREFIX:
        raise InputError(f"unknown split {split!r}; expected 'train' or 'test'")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: data folder does not exist; pass --data-dir with the folder of the IDX files")
    img_path = _find(data_dir, _PREFIX[split], "images")
    lab_path = _find(data_dir, _PREFIX[split], "labels")
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"{img_path}: expected a uint8 array [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise InputError(f"{lab_path}: expected a label vector [N], got shape {labels.shape}")
    if len(images) != len(labels):
        raise InputError(f"{data_dir}: {len(images)} images but {len(labels)} labels")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return x, labels.astype(np.int64)


def load_mnist(split: str = "test", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (or any dataset in its IDX layout, e.g. Fashion-MNIST): float32 [N,1,28,28] in [0,1], int64 labels.

    data_dir defaults to `shared/data/mnist` beside the repository.
    """
    if data_dir is None:
        data_dir = _default_dir([_SHARED / "mnist"], "MNIST")
    return load_idx_dataset(split, data_dir)


def load_fashion_mnist(split: str = "test", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (same IDX layout as MNIST). data_dir defaults to `shared/data/fashion-mnist` or the
    Debian package's `/usr/share/datasets/fashion-mnist`."""
    if data_dir is None:
        data_dir = _default_dir(
            [_SHARED / "fashion-mnist", _SHARED / "fashion_mnist", Path("/usr/share/datasets/fashion-mnist")],
            "Fashion-MNIST",
        )
    return load_idx_dataset(split, data_dir)


def load_digits(split: str = "test", test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes): float32 [N,1,8,8] in [0,1], int64 labels.

    The split is deterministic: a stratified `train_test_split(test_size=test_fraction, random_state=seed)`.
    Pixel values 0..16 are divided by 16. Use split="all" for every image in the original order.
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = (d.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = d.target.astype(np.int64)
    if split == "all":
        return x, y
    if split not in _PREFIX:
        raise InputError(f"unknown split {split!r}; expected 'train', 'test' or 'all'")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    sel = np.sort(te if split == "test" else tr)
    return x[sel], y[sel]


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on a dataset name: 'mnist', 'fashion-mnist' (or 'fashion_mnist'), 'digits'."""
    key = name.lower().replace("_", "-")
    if key == "mnist":
        return load_mnist(split, data_dir)
    if key == "fashion-mnist":
        return load_fashion_mnist(split, data_dir)
    if key == "digits":
        if data_dir is not None:
            raise InputError("the digits dataset ships with scikit-learn; --data-dir does not apply")
        return load_digits(split)
    raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
