"""folder:PATH image-folder data sets: layout, labels, splits, cache, bad input; the shared
CIFAR-10 JPEG copy's class order (skips when ../shared/data is absent)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwsim.errors import AxlabError
from nn import data_folder
from nn.data import dataset_info, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_folder(root: Path, classes: dict[str, int], n_test: int = 2, size: int = 8, seed: int = 0,
                ext: str = ".png", mode: str = "RGB") -> dict[str, dict[str, list[np.ndarray]]]:
    """Write random images (``classes``: name -> train count); returns the pixels written."""
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "test": {}}
    for split in ("train", "test"):
        for c, n in classes.items():
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            written[split][c] = []
            for i in range(n if split == "train" else n_test):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a, mode).save(d / f"{i:04d}{ext}")
                written[split][c].append(a)
    return written


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))


def test_labels_follow_sorted_class_names_and_pixels_are_exact(tmp_path):
    px = make_folder(tmp_path / "d", {"zebra": 3, "ant": 2, "moth": 4})
    x, y = load_dataset(f"folder:{tmp_path / 'd'}", "test")
    assert x.dtype == np.uint8 and x.shape == (6, 3, 8, 8)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]             # ant, moth, zebra
    want = np.stack([a.transpose(2, 0, 1) for c in ("ant", "moth", "zebra") for a in px["test"][c]])
    assert np.array_equal(x, want)                      # PNG is lossless: every pixel, every image
    assert dataset_info(f"folder:{tmp_path / 'd'}") == (3, 3, 8)


def test_train_val_split_is_seeded_disjoint_and_complete(tmp_path):
    make_folder(tmp_path / "d", {"a": 20, "b": 20})
    spec = f"folder:{tmp_path / 'd'}"
    xtr, ytr = load_dataset(spec, "train", seed=0)
    xva, yva = load_dataset(spec, "val", seed=0)
    assert (len(xtr), len(xva)) == (36, 4)              # 90/10 as for cifar10:
    full = data_folder.load_folder_split(str(tmp_path / "d"), "train")[0]
    rows = {r.tobytes() for r in full}
    got = [r.tobytes() for r in np.concatenate([xtr, xva])]
    assert sorted(got) == sorted(rows) and len(set(got)) == 40
    assert np.array_equal(load_dataset(spec, "val", seed=0)[0], xva)
    assert not np.array_equal(load_dataset(spec, "val", seed=1)[0], xva)


def test_grayscale_and_jpeg(tmp_path):
    make_folder(tmp_path / "g", {"a": 2, "b": 2}, mode="L")
    x, _ = load_dataset(f"folder:{tmp_path / 'g'}", "test")
    assert x.shape == (4, 1, 8, 8)
    make_folder(tmp_path / "j", {"a": 2, "b": 2}, ext=".JPG", size=16)
    x, y = load_dataset(f"folder:{tmp_path / 'j'}", "test")
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]


def test_second_load_comes_from_the_cache_and_a_changed_file_invalidates_it(tmp_path, monkeypatch):
    make_folder(tmp_path / "d", {"a": 3, "b": 3})
    x1, _ = data_folder.load_folder_split(str(tmp_path / "d"), "train")
    assert len(list((tmp_path / "cache" / "datasets").glob("*.npy"))) == 1

    def no_decode(files):  # noqa: ANN001, ANN202
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_folder, "_decode", no_decode)
    x2, _ = data_folder.load_folder_split(str(tmp_path / "d"), "train")
    assert np.array_equal(x1, x2)
    f = tmp_path / "d" / "train" / "a" / "0000.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f)
    os.utime(f, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        data_folder.load_folder_split(str(tmp_path / "d"), "train")


@pytest.mark.parametrize("damage, message", [
    ("empty", "empty class"),
    ("size", "differs from"),
    ("garbage", "unreadable image"),
    ("nosplit", "missing split folder test/"),
    ("classes", "different classes"),
    ("nopath", "needs a path"),
    ("huge", "larger than"),
])
def test_bad_folders_fail_with_one_line(tmp_path, monkeypatch, damage, message):
    root = tmp_path / "d"
    make_folder(root, {"a": 2, "b": 2})
    if damage == "empty":
        for f in (root / "train" / "b").iterdir():
            f.unlink()
    elif damage == "size":
        Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "train" / "b" / "0001.png")
    elif damage == "garbage":
        (root / "train" / "a" / "0001.png").write_bytes(b"not a png")
    elif damage == "nosplit":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in (root / "test").iterdir():
            d.rmdir()
        (root / "test").rmdir()
    elif damage == "huge":
        monkeypatch.setattr(data_folder, "MAX_PIXELS", 60)  # an 8x8 image is "huge" here
    elif damage == "classes":
        (root / "test" / "b").rename(root / "test" / "c")
    spec = "folder:" if damage == "nopath" else f"folder:{root}"
    with pytest.raises(AxlabError, match=message) as exc:
        load_dataset(spec, "train")
    assert "\n" not in str(exc.value)


def test_cli_reports_a_bad_folder_in_one_line(tmp_path, capsys):
    from flows.cli import main

    make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (tmp_path / "d" / "test" / "b" / "0000.png").write_bytes(b"\x89PNG broken")
    rc = main(["train", "--arch", "minnet", "--dataset", f"folder:{tmp_path / 'd'}", "--epochs", "1",
               "--out", str(tmp_path / "m.axm")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("axlab: ") and "unreadable image" in err and "\n" not in err
    assert not (tmp_path / "m.axm").exists()


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg" / "test").is_dir()
                    or not (SHARED / "cifar-10-subset" / "cifar-10-batches-py").is_dir(),
                    reason="../shared/data (CIFAR-10) absent")
def test_shared_cifar10_jpeg_classes_are_the_official_label_order():
    meta = SHARED / "cifar-10-subset" / "cifar-10-batches-py" / "batches.meta"
    with open(meta, "rb") as fh:
        names = [n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"]]  # lists of bytes only
    assert data_folder.class_names(str(SHARED / "cifar10-jpeg")) == names
    # test/<class>/NNNN.jpg is the NNNN-th test image of that class: the first exact test images
    # are close (JPEG q~75) to their JPEG versions and far from another image of the same class
    xe, ye = load_dataset(f"cifar10:{SHARED / 'cifar-10-subset'}", "test")
    seen: dict[int, int] = {}
    for i in range(12):
        k = seen.get(int(ye[i]), 0)
        seen[int(ye[i])] = k + 1
        with Image.open(SHARED / "cifar10-jpeg" / "test" / names[ye[i]] / f"{k:04d}.jpg") as im:
            j = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float64)
        with Image.open(SHARED / "cifar10-jpeg" / "test" / names[ye[i]] / f"{k + 1:04d}.jpg") as im:
            other = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float64)
        psnr = 10 * np.log10(255.0**2 / np.mean((j - xe[i]) ** 2))
        psnr_other = 10 * np.log10(255.0**2 / np.mean((other - xe[i]) ** 2))
        assert psnr > 20 and psnr > psnr_other + 5, (i, psnr, psnr_other)
