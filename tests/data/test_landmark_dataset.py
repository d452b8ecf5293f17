import logging

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyg_sdfl.data import (
    AugmentConfig,
    FaceSample,
    ImageLoadError,
    LandmarkDataset,
    crop_landmarks,
    mean_shape,
    read_300w,
)
from pyg_sdfl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pyg_sdfl.geometry import apply_affine, invert_affine
from pyg_sdfl.schemes import get_scheme

PERM = np.asarray(get_scheme("300w").flip_permutation)
PROBES = [0, 16, 36, 45, 57]  # placed far apart below
AUG = AugmentConfig(rotation=40, translation=30, scale=0.1, flip=0.5, occlusion_prob=0.0)


def _landmarks(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(40, 160, size=(68, 2))
    pts[PROBES] = [[70.3, 72.1], [131.7, 70.2], [85.4, 100.6], [118.1, 103.9], [101.2, 136.3]] + rng.uniform(-2, 2, (5, 2))
    return pts


def _blob_face(seed, sigma=2.0):
    """A 200x200 black image with a Gaussian blob on each probe landmark."""
    pts = _landmarks(seed)
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float64)
    img = np.zeros((200, 200))
    for x, y in pts[PROBES]:
        img = np.maximum(img, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    rgb = np.repeat(np.round(255 * img).astype(np.uint8)[:, :, None], 3, axis=2)
    return FaceSample(image=rgb, landmarks=pts, name=f"blob{seed}")


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    x = image.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _centroid(img, near, radius=7):
    x0, y0 = int(round(near[0])), int(round(near[1]))
    win = img[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


@pytest.fixture(scope="module")
def blob_faces():
    return [_blob_face(s) for s in range(6)]


def test_item_format_and_pixels_follow_landmarks(blob_faces):
    ds = LandmarkDataset(blob_faces, "300w", image_size=160, augment=AUG, seed=3)
    flips = checked = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 160, 160) and item["image"].dtype == torch.float32
        assert item["landmarks"].shape == (68, 2) and item["landmarks"].dtype == torch.float32
        assert item["matrix"].shape == (2, 3) and item["index"] == i
        flip = ds.augment_params(i).flip
        flips += flip
        crop, pts = _to_uint8(item["image"]), item["landmarks"].numpy()
        for j in PROBES:
            k = PERM[j] if flip else j  # the output index holding original landmark j
            if not (8 <= pts[k]).all() or not (pts[k] <= 151).all():
                continue  # the blob is (partly) outside the augmented crop
            np.testing.assert_allclose(_centroid(crop, pts[k]), pts[k], atol=0.15)
            checked += 1
        # the matrix maps the original landmarks to the returned ones (after the flip permutation)
        original = blob_faces[i].landmarks[PERM] if flip else blob_faces[i].landmarks
        np.testing.assert_allclose(apply_affine(original, item["matrix"].numpy()), pts, atol=1e-3)
        np.testing.assert_allclose(apply_affine(pts, invert_affine(item["matrix"].numpy())), original, atol=1e-2)
    assert 0 < flips < len(ds)  # both kinds were exercised (fixed by seed=3)
    assert checked >= 0.7 * len(ds) * len(PROBES)


def test_without_augmentation_the_crop_is_the_protocol_crop(blob_faces):
    ds = LandmarkDataset(blob_faces, "300w", image_size=256, crop_scale=1.25)
    pts = ds[2]["landmarks"].numpy().astype(np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [127.5, 127.5], atol=1e-3)  # landmark box centred
    assert (hi - lo).max() == pytest.approx(256 / 1.25, abs=1e-3)  # longer side = S / crop_scale
    np.testing.assert_allclose(pts, crop_landmarks(blob_faces[2].landmarks, 256, 1.25), atol=1e-3)


def test_augmentation_is_reproducible_and_changes_with_epoch(blob_faces):
    a = LandmarkDataset(blob_faces, "300w", image_size=64, augment=AUG, seed=5)
    b = LandmarkDataset(blob_faces, "300w", image_size=64, augment=AUG, seed=5)
    assert torch.equal(a[1]["image"], b[1]["image"]) and torch.equal(a[1]["landmarks"], a[1]["landmarks"])
    epoch0 = a[1]["landmarks"].clone()
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.allclose(a[1]["landmarks"], epoch0)
    a.set_epoch(0)
    assert torch.equal(a[1]["landmarks"], epoch0)
    other_seed = LandmarkDataset(blob_faces, "300w", image_size=64, augment=AUG, seed=6)
    assert not torch.allclose(other_seed[1]["landmarks"], epoch0)
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)


def test_dataloader_workers_give_the_same_items_and_see_set_epoch(blob_faces):
    ds = LandmarkDataset(blob_faces, "300w", image_size=48, augment=AUG, seed=1)
    loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = torch.cat([batch["landmarks"] for batch in loader])
        expected = torch.stack([ds[i]["landmarks"] for i in range(len(ds))])
        assert torch.equal(got, expected), f"epoch {epoch}"
    assert not torch.equal(got, torch.stack([LandmarkDataset(blob_faces, "300w", image_size=48, augment=AUG, seed=1)[i]["landmarks"] for i in range(len(ds))]))


def test_occlusion_is_painted_in_the_crop(blob_faces):
    cfg = AugmentConfig(rotation=0, translation=0, scale=0, flip=0, occlusion_prob=1.0, occlusion_fraction=0.2)
    ds = LandmarkDataset(blob_faces, "300w", image_size=64, augment=cfg)
    crop = _to_uint8(ds[0]["image"])
    x0, y0, x1, y1 = ds.augment_params(0).occlusion_box
    assert (crop[y0:y1, x0:x1] == np.asarray(ds.augment_params(0).occlusion_colour, np.uint8)).all()
    plain = _to_uint8(LandmarkDataset(blob_faces, "300w", image_size=64)[0]["image"])
    outside = np.ones((64, 64), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(crop[outside], plain[outside])


# ---------------------------------------------------------------- bad input
def test_scheme_mismatch_empty_and_nan_errors(blob_faces):
    with pytest.raises(ValueError, match="empty"):
        LandmarkDataset([], "300w")
    with pytest.raises(ValueError, match=r"sample 0 \('blob0'\).*\(68, 2\).*scheme 'wflw' has 98 points"):
        LandmarkDataset(blob_faces, "wflw")
    bad = FaceSample(image=np.zeros((8, 8, 3), np.uint8), landmarks=_landmarks(0), name="later-nan")
    bad.landmarks[4, 0] = np.nan  # corrupted after construction
    with pytest.raises(ValueError, match=r"sample 1 \('later-nan'\).*non-finite.*\[4\]"):
        LandmarkDataset([blob_faces[0], bad], "300w")
    with pytest.raises(ValueError, match="on_bad_image"):
        LandmarkDataset(blob_faces, "300w", on_bad_image="ignore")
    with pytest.raises(KeyError, match="known"):
        LandmarkDataset(blob_faces, "68pts")


def _file_faces(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((200, 200, 3), 77, np.uint8))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg" * 20)
    return [
        FaceSample(image=good, landmarks=_landmarks(0), name="good0"),
        FaceSample(image=tmp_path / "missing.jpg", landmarks=_landmarks(1), name="missing"),
        FaceSample(image=junk, landmarks=_landmarks(2), name="junk"),
        FaceSample(image=good, landmarks=_landmarks(3), name="good3"),
    ]


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_files_skipped_with_warning_or_fail(tmp_path, caplog, cache):
    faces = _file_faces(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pyg_sdfl.data.dataset"):
        ds = LandmarkDataset(faces, "300w", image_size=32, augment=AUG, cache_images=cache)
    assert len(ds) == 2 and ds.skipped == 2 and ds.kept_indices.tolist() == [0, 3]
    assert [s.name for s in ds.samples] == ["good0", "good3"]
    assert "skipping 2 of 4" in caplog.text and "missing.jpg" in caplog.text
    assert ds[1]["index"] == 1
    with pytest.raises(ImageLoadError, match=r"2 of 4 images cannot be read.*'missing'.*on_bad_image='skip'"):
        LandmarkDataset(faces, "300w", augment=AUG, on_bad_image="fail", cache_images=cache)
    with pytest.raises(ValueError, match="none of the 2 images"):
        LandmarkDataset(faces[1:3], "300w", augment=AUG)


def _damaged_png(path):
    """A PNG whose header is valid and whose pixel data (IDAT) is overwritten in the middle."""
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (200, 200, 3)).astype(np.uint8))
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("cache", [False, True])
def test_an_evaluation_set_never_loses_or_replaces_a_face(tmp_path, cache):
    """Without augmentation (evaluation crops) a bad image fails, naming the file, even with
    on_bad_image='skip' (the default); it is never dropped nor swapped for the next face."""
    faces = _file_faces(tmp_path)
    faces[1] = FaceSample(image=_damaged_png(tmp_path / "damaged.png"), landmarks=_landmarks(1), name="damaged")
    faces[2] = faces[3]
    with pytest.raises(ImageLoadError, match=r"1 of 4 images of an evaluation set.*damaged.png.*never skipped"):
        LandmarkDataset(faces, "300w", image_size=32, cache_images=cache)


def test_training_set_skips_a_damaged_png_before_the_first_epoch(tmp_path, caplog):
    faces = _file_faces(tmp_path)
    faces[1] = FaceSample(image=_damaged_png(tmp_path / "damaged.png"), landmarks=_landmarks(1), name="damaged")
    faces[2] = faces[3]
    with caplog.at_level(logging.WARNING, logger="pyg_sdfl.data.dataset"):
        ds = LandmarkDataset(faces, "300w", image_size=32, augment=AUG)
    assert len(ds) == 3 and ds.skipped == 1 and ds.kept_indices.tolist() == [0, 2, 3]
    assert caplog.text.count("damaged.png") == 1 and "CRC mismatch" in caplog.text
    assert [int(ds[i]["index"]) for i in range(3)] == [0, 1, 2]


def test_a_file_damaged_after_construction_fails_naming_it(tmp_path):
    faces = _file_faces(tmp_path)
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 256, (200, 200, 3)).astype(np.uint8))
    faces = [faces[0], FaceSample(image=photo, landmarks=_landmarks(1), name="photo"), faces[3]]
    for augment in (None, AUG):
        ds = LandmarkDataset(faces, "300w", image_size=32, augment=augment)
        data = photo.read_bytes()
        photo.write_bytes(data[: len(data) // 2])  # truncated after the dataset was built
        with pytest.raises(ImageLoadError, match=r"face 1 of this dataset.*'photo'.*truncated JPEG.*photo.jpg.*changed"):
            ds[1]
        assert ds[2]["index"] == 2 and ds.skipped == 0
        photo.write_bytes(data)


def test_cached_items_equal_uncached(tmp_path):
    faces = [_file_faces(tmp_path)[0], _file_faces(tmp_path)[3]]
    a = LandmarkDataset(faces, "300w", image_size=32, augment=AUG, cache_images=True)
    b = LandmarkDataset(faces, "300w", image_size=32, augment=AUG)
    assert a._images is not None and b._images is None
    assert torch.equal(a[1]["image"], b[1]["image"])


@pytest.mark.parametrize("on_bad_image", ["skip", "fail"])
def test_load_time_failure_raises_naming_the_face_never_substitutes(blob_faces, on_bad_image):
    def broken():
        raise OSError("truncated file")

    faces = [blob_faces[0], FaceSample(image=broken, landmarks=_landmarks(9), name="broken"), blob_faces[2]]
    ds = LandmarkDataset(faces, "300w", image_size=32, augment=AUG, on_bad_image=on_bad_image)
    assert len(ds) == 3 and ds.skipped == 0  # callables are not run up front
    with pytest.raises(ImageLoadError, match="face 1 of this dataset.*'broken'.*OSError: truncated file"):
        ds[1]
    assert ds[2]["index"] == 2
    # inside DataLoader workers too: the epoch stops with the face named, no other face stands in
    with pytest.raises(ImageLoadError, match="'broken'"):
        list(DataLoader(ds, batch_size=3, num_workers=1))


# ---------------------------------------------------------------- mean shape
def test_mean_shape_needs_no_images(tmp_path):
    base = _landmarks(4)
    # the same shape moved and scaled has the same crop coordinates
    faces = [FaceSample(image=tmp_path / f"{i}.jpg", landmarks=base * s + t)
             for i, (s, t) in enumerate([(1.0, 0.0), (2.0, 30.0), (0.5, -7.0)])]
    expected = crop_landmarks(base, 128, 1.2)
    np.testing.assert_allclose(mean_shape(faces, image_size=128, crop_scale=1.2), expected, atol=1e-3)
    other = FaceSample(image=tmp_path / "x.jpg", landmarks=_landmarks(5))
    np.testing.assert_allclose(mean_shape([faces[0], other], 128), (expected + crop_landmarks(_landmarks(5), 128)) / 2, atol=1e-3)
    np.testing.assert_allclose(mean_shape(np.stack([base, _landmarks(5)]), 128), mean_shape([faces[0], other], 128), atol=1e-3)
    with pytest.raises(ValueError, match="at least one"):
        mean_shape([])


# ---------------------------------------------------------------- real faces
def test_real_300w_faces(w300_root):
    samples = read_300w(w300_root, folders=["test/lfpw"])[:4]
    ds = LandmarkDataset(samples, "300w", image_size=256, augment=AugmentConfig(), seed=0)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.isfinite(item["image"]).all()
        pts = item["landmarks"].numpy()
        # even augmented, most points stay in the crop (rotation/shift/zoom are moderate)
        assert ((pts > -20) & (pts < 276)).mean() > 0.95
    # the face's image content survives the crop: not a black image
    plain = LandmarkDataset(samples, "300w")[0]
    assert _to_uint8(plain["image"]).std() > 20


def test_forked_workers_do_not_deadlock_when_the_parent_uses_opencv_threads(tmp_path):
    """``cv2.setNumThreads`` in a child forked while the parent's OpenCV pool is busy hangs; the
    dataset must not call it there. Run in a subprocess so that a hang fails instead of blocking."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import cv2, numpy as np
        from torch.utils.data import DataLoader
        from pyg_sdfl.data import FaceSample, LandmarkDataset
        rng = np.random.default_rng(0)
        faces = [FaceSample(image=np.zeros((120, 120, 3), np.uint8), landmarks=rng.uniform(20, 100, (68, 2)))
                 for _ in range(4)]
        ds = LandmarkDataset(faces, "300w", image_size=64)
        cv2.setNumThreads(2)  # the user turns OpenCV threads back on and uses them before forking
        big = np.zeros((1500, 1500, 3), np.uint8)
        for _ in range(3):
            cv2.warpAffine(big, np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]), (1400, 1400))
        loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
        print(sum(len(b["index"]) for b in loader))
    """)
    # own session, so that on a hang the forked workers are killed along with their parent
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("DataLoader workers deadlocked (cv2.setNumThreads called in a forked worker?)")
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "4"
