"""calibration_faces: int8 calibration crops from a folder of unlabelled photos."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from pyg_sdfl.calibration_faces import calibration_crops_from_images, visiting_order
from pyg_sdfl.inference import Landmarker
from pyg_sdfl.weights import pretrained_path


def test_visiting_order_spreads_first_then_fills_in():
    assert visiting_order(10, 3) == [0, 4, 9, 1, 2, 3, 5, 6, 7, 8]
    assert visiting_order(3, 8) == [0, 1, 2]
    assert sorted(visiting_order(100, 64)) == list(range(100))


def test_a_folder_without_faces_or_images_is_one_clear_error(tiny_ckpt, tmp_path):
    lm = Landmarker.from_checkpoint(tiny_ckpt, precision="fp32", detector="haar")
    with pytest.raises(ValueError, match="no image files in"):
        calibration_crops_from_images(lm, tmp_path, 4)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((120, 160, 3), 128, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"no face found in the 2 image\(s\) under .* \(detector haar\)"):
        calibration_crops_from_images(lm, tmp_path, 4)
    with pytest.raises(ValueError, match="at least one face"):
        calibration_crops_from_images(lm, tmp_path, 0)


@pytest.mark.skipif(not pretrained_path("300w-fast").is_file(), reason="the shipped 300w-fast weights are absent")
def test_crops_of_real_photos_match_the_labelled_protocol(w300_root, tmp_path):
    """300-W training photos copied without their labels: each crop found by detection is the
    labelled protocol's crop of the same face to within a few pixels' shift, and a grey image in
    the folder is counted as a photo without a face."""
    from pyg_sdfl.data import LandmarkDataset, read_300w

    samples = read_300w(w300_root, folders=["train/lfpw"])[:40:8]
    for i, s in enumerate(samples):
        shutil.copy(s.image, tmp_path / f"{i:02d}{s.image.suffix}")
    cv2.imwrite(str(tmp_path / "zz_grey.png"), np.full((200, 200, 3), 128, np.uint8))
    lm = Landmarker.from_pretrained("300w-fast", precision="fp32")
    crops, record = calibration_crops_from_images(lm, tmp_path, 8)
    assert crops.dtype == np.float32 and crops.shape == (len(samples), 3, lm.image_size, lm.image_size)
    assert record["faces"] == len(samples) and record["images_visited"] == len(samples) + 1
    assert record["images_without_face"] == 1 and record["unreadable_images"] == 0
    labelled = LandmarkDataset(samples, lm.scheme, lm.image_size, lm.crop_scale, augment=None)
    for i in range(len(samples)):
        reference = labelled[i]["image"].numpy()
        assert np.abs(crops[i] - reference).mean() < 0.4 * np.abs(reference).mean(), i  # measured 0.08-0.26; other faces 0.65-1.15
