from pathlib import Path

import cv2
import numpy as np
import pytest

from pyg_sdfl.data import ImageLoadError, load_dataset, read_300w, read_pts


def _write_pts(path: Path, pts, header=True, n_points=None):
    lines = []
    if header:
        lines += ["version: 1", f"n_points:  {len(pts) if n_points is None else n_points}", "{"]
    lines += [f"{x:.6f} {y:.6f}" for x, y in pts]
    if header:
        lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def _face68(seed=0):
    return np.random.default_rng(seed).uniform(10, 90, size=(68, 2))


# ---------------------------------------------------------------- real 300-W files
def test_real_folder_matches_file_contents(w300_root):
    samples = read_300w(w300_root, folders=["train/lfpw"])
    assert len(samples) == 805
    assert all(s.subsets == ("lfpw",) and s.landmarks.shape == (68, 2) for s in samples)
    names = [s.name for s in samples]
    assert names == sorted(names) and names[0].startswith("train/lfpw/")
    # independent parse of one file: the numbers between the braces, minus one
    first = samples[0]
    text = (w300_root / (first.name + ".pts")).read_text().split("{")[1].split("}")[0]
    expected = np.array([[float(v) for v in line.split()] for line in text.strip().splitlines()]) - 1
    np.testing.assert_allclose(first.landmarks, expected, atol=1e-4)
    assert first.image == w300_root / (first.name + ".jpg") and first.image.is_file()
    # 0-based pixel centres inside the (cropped) image for a face that sits inside it
    h, w = first.load_image().shape[:2]
    assert first.landmarks.min() >= -0.5 and first.landmarks[:, 0].max() <= w - 0.5
    assert first.landmarks[:, 1].max() <= h - 0.5


def test_real_standard_layout(w300_root):
    train = load_dataset("300w", w300_root, "train")
    test = load_dataset("300w", w300_root, "test")
    assert len(train) == 2012 and len(test) == 224
    assert {s.subsets[0] for s in train} == {"afw", "helen", "lfpw"}
    assert all(s.subsets == ("lfpw", "common") for s in test)
    # the same stems exist in train/lfpw and test/lfpw: names stay distinct
    assert len({s.name for s in train + test}) == 2236


# ---------------------------------------------------------------- written files
def test_headered_and_headerless_pts_agree_and_are_zero_based(tmp_path):
    pts = _face68()
    _write_pts(tmp_path / "a.pts", pts, header=True)
    _write_pts(tmp_path / "b.pts", pts, header=False)
    a, b = read_pts(tmp_path / "a.pts", 68), read_pts(tmp_path / "b.pts", 68)
    np.testing.assert_allclose(a, pts - 1, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_read_300w_default_is_recursive_sorted_with_leaf_tags(tmp_path):
    for folder, stem, seed in [("train/helen", "z1", 1), ("train/afw", "k9", 2), ("test/ibug", "a0", 3)]:
        (tmp_path / folder).mkdir(parents=True)
        _write_pts(tmp_path / folder / f"{stem}.pts", _face68(seed))
    cv2.imwrite(str(tmp_path / "train/afw/k9.png"), np.zeros((8, 8, 3), np.uint8))
    samples = read_300w(tmp_path)
    assert [s.name for s in samples] == ["test/ibug/a0", "train/afw/k9", "train/helen/z1"]
    assert [s.subsets for s in samples] == [("ibug",), ("afw",), ("helen",)]
    assert samples[1].image.suffix == ".png"  # found whatever the extension
    # no image for the others: reading works, loading names the file
    with pytest.raises(ImageLoadError, match="a0.jpg"):
        samples[0].load_image()
    test = load_dataset("300w", tmp_path, "test")
    assert [s.subsets for s in test] == [("ibug", "challenging")]


def test_wrong_number_of_points_names_file_expected_and_found(tmp_path):
    _write_pts(tmp_path / "short.pts", _face68()[:67])
    with pytest.raises(ValueError, match=r"short\.pts: expected 68 points, found 67"):
        read_300w(tmp_path)
    # a scheme that does not match the data
    (tmp_path / "short.pts").unlink()
    _write_pts(tmp_path / "ok.pts", _face68())
    with pytest.raises(ValueError, match=r"ok\.pts: expected 98 points, found 68"):
        read_300w(tmp_path, scheme="wflw")


def test_malformed_pts_errors(tmp_path):
    _write_pts(tmp_path / "hdr.pts", _face68(), n_points=70)
    with pytest.raises(ValueError, match=r"hdr\.pts: header says n_points: 70 but the file lists 68"):
        read_pts(tmp_path / "hdr.pts")
    pts = _face68()
    pts[5, 0] = np.nan
    _write_pts(tmp_path / "nan.pts", pts)
    with pytest.raises(ValueError, match=r"nan\.pts.*non-finite.*\[5\]"):
        read_pts(tmp_path / "nan.pts", 68)
    (tmp_path / "word.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 abc\n}\n")
    with pytest.raises(ValueError, match=r"word\.pts, line 5: not numbers"):
        read_pts(tmp_path / "word.pts")
    (tmp_path / "three.pts").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"three\.pts, line 1: expected 'x y'"):
        read_pts(tmp_path / "three.pts")
    (tmp_path / "open.pts").write_text("n_points: 1\n{\n1 2\n")
    with pytest.raises(ValueError, match="no closing"):
        read_pts(tmp_path / "open.pts")
    (tmp_path / "empty.pts").write_text("\n")
    with pytest.raises(ValueError, match="no points"):
        read_pts(tmp_path / "empty.pts")


def test_missing_folders_and_empty_roots(tmp_path):
    with pytest.raises(ValueError, match="root folder not found"):
        read_300w(tmp_path / "absent")
    with pytest.raises(ValueError, match="no .pts files"):
        read_300w(tmp_path)
    with pytest.raises(ValueError, match="folder not found"):
        read_300w(tmp_path, folders=["train/lfpw"])
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("300w", tmp_path, "val")
    with pytest.raises(KeyError, match="known"):
        load_dataset("nope", tmp_path, "train")
    with pytest.raises(ValueError, match="no root"):
        load_dataset("300w", "???", "train")
