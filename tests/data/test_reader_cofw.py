"""COFW .mat reader on files written here in both MATLAB layouts."""
import h5py
import numpy as np
import pytest
import scipy.io

from pyg_sdfl.data import LandmarkDataset, load_dataset, read_cofw

TRAIN_KEYS = ("IsTr", "phisTr", "bboxesTr")
TEST_KEYS = ("IsT", "phisT", "bboxesT")


def _cofw_content(m=3, seed=0):
    """MATLAB-side content: images (H x W gray or H x W x 3), phis (M x 87, 1-based), boxes (M x 4)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(m):
        shape = (40 + i, 50 + 2 * i) if i == 1 else (40 + i, 50 + 2 * i, 3)  # one grayscale face
        images.append(rng.integers(0, 256, size=shape, dtype=np.uint8))
    xy = rng.uniform(5, 35, size=(m, 2, 29))
    occ = (rng.random((m, 29)) < 0.3).astype(np.float64)
    phis = np.concatenate([xy[:, 0], xy[:, 1], occ], axis=1)
    boxes = np.stack([rng.uniform(1, 5, m), rng.uniform(1, 5, m), rng.uniform(20, 30, m), rng.uniform(20, 30, m)], axis=1)
    return images, phis, boxes


def write_v5(path, images, phis, boxes, keys=TRAIN_KEYS):
    cell = np.empty((len(images), 1), dtype=object)
    for i, im in enumerate(images):
        cell[i, 0] = im
    scipy.io.savemat(str(path), {keys[0]: cell, keys[1]: phis, keys[2]: boxes})


def write_v73(path, images, phis, boxes, keys=TRAIN_KEYS):
    """Mimic MATLAB's -v7.3 writer: HDF5 after a 512-byte header, arrays stored transposed
    (column-major), the cell array a (1, M) dataset of references into '#refs#'."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs_group = f.create_group("#refs#")
        refs = []
        for i, im in enumerate(images):
            d = refs_group.create_dataset(f"r{i}", data=np.ascontiguousarray(im.T))
            d.attrs["MATLAB_class"] = np.bytes_("uint8")
            refs.append(d.ref)
        cell = f.create_dataset(keys[0], data=np.array(refs, dtype=h5py.ref_dtype).reshape(1, -1))
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        for key, value in ((keys[1], phis), (keys[2], boxes)):
            if value is not None:
                f.create_dataset(key, data=np.ascontiguousarray(value.T)).attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(116)
                 + b"\x00" * 8 + b"\x00\x02" + b"IM")


@pytest.mark.parametrize("writer", [write_v5, write_v73], ids=["v5-scipy", "v7.3-h5py"])
def test_cofw_reader_matches_matlab_content(tmp_path, writer):
    images, phis, boxes = _cofw_content()
    path = tmp_path / "COFW_train_color.mat"
    writer(path, images, phis, boxes)
    samples = read_cofw(path)
    assert len(samples) == 3
    for i, s in enumerate(samples):
        np.testing.assert_allclose(s.landmarks[:, 0], phis[i, :29] - 1, atol=1e-4)
        np.testing.assert_allclose(s.landmarks[:, 1], phis[i, 29:58] - 1, atol=1e-4)
        np.testing.assert_array_equal(s.occluded, phis[i, 58:] == 1)
        x, y, w, h = boxes[i]
        np.testing.assert_allclose(s.box, [x - 1, y - 1, x - 1 + w, y - 1 + h], atol=1e-4)
        img = s.load_image()
        if images[i].ndim == 2:
            assert img.shape == images[i].shape + (3,)
            assert all(np.array_equal(img[..., c], images[i]) for c in range(3))
        else:
            np.testing.assert_array_equal(img, images[i])
        assert s.name == f"COFW_train_color#{i}"
        assert s.attributes["num_occluded"] == int(phis[i, 58:].sum())


def test_v73_test_keys_without_boxes_and_standard_layout(tmp_path):
    images, phis, _ = _cofw_content(m=2, seed=1)
    write_v73(tmp_path / "COFW_test_color.mat", images, phis, None, keys=TEST_KEYS)
    samples = load_dataset("cofw", tmp_path, "test")
    assert len(samples) == 2 and samples[0].box is None
    item = LandmarkDataset(samples, "cofw", image_size=32)[1]
    assert item["image"].shape == (3, 32, 32) and item["landmarks"].shape == (29, 2)
    with pytest.raises(ValueError, match="COFW_train_color.mat not found"):
        load_dataset("cofw", tmp_path, "train")


def test_bad_cofw_files(tmp_path):
    images, phis, boxes = _cofw_content()
    write_v5(tmp_path / "cols.mat", images, phis[:, :80], boxes)
    with pytest.raises(ValueError, match=r"shape \(3, 80\), expected \(M, 87\)"):
        read_cofw(tmp_path / "cols.mat")
    write_v73(tmp_path / "count.mat", images[:2], phis, boxes)
    with pytest.raises(ValueError, match="2 images but 3 landmark rows"):
        read_cofw(tmp_path / "count.mat")
    scipy.io.savemat(str(tmp_path / "keys.mat"), {"foo": np.zeros(3)})
    with pytest.raises(ValueError, match=r"not a COFW file.*\['foo'\]"):
        read_cofw(tmp_path / "keys.mat")
    bad = phis.copy()
    bad[2, 30] = np.nan
    write_v73(tmp_path / "nan.mat", images, bad, boxes)
    with pytest.raises(ValueError, match=r"nan\.mat, face 2: non-finite.*\[1\]"):
        read_cofw(tmp_path / "nan.mat")
    (tmp_path / "junk.mat").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="junk.mat"):
        read_cofw(tmp_path / "junk.mat")
    with pytest.raises(ValueError, match="not found"):
        read_cofw(tmp_path / "absent.mat")
