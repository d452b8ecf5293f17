"""pyg_sdfl.detection.keypoint_mapping: five keypoints -> oriented landmark square, model-free.

Faces are the synthetic mean face's 68 points under known similarity maps; their "detected"
keypoints are the eye centres, nose tip and mouth corners plus noise. The fitted mapping must
recover each face's oriented landmark square (centre, side and roll) from the keypoints alone.
"""
from __future__ import annotations

import numpy as np
import pytest

from pyg_sdfl.data.synthetic import mean_template
from pyg_sdfl.detection.base import Detection
from pyg_sdfl.detection.keypoint_mapping import KeypointMapping, fit_keypoint_mapping, keypoint_errors
from pyg_sdfl.detection.mapping import BoxMapping, load_mapping
from pyg_sdfl.geometry import line_angle, oriented_landmark_square, rotate_points

LEFT, RIGHT = 36, 45  # 300-W outer eye corners


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres (36-41, 42-47), nose tip 30, mouth corners 48, 54: ``(..., 5, 2)``."""
    return np.stack([landmarks[..., 36:42, :].mean(-2), landmarks[..., 42:48, :].mean(-2), landmarks[..., 30, :],
                     landmarks[..., 48, :], landmarks[..., 54, :]], axis=-2)


def faces(n: int, seed: int, max_angle: float = 60.0, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    base = mean_template()[:, :2]
    scale = rng.uniform(40, 200, n)
    angle = rng.uniform(-max_angle, max_angle, n)
    shift = rng.uniform(100, 500, (n, 2))
    lm = scale[:, None, None] * rotate_points(np.broadcast_to(base, (n, 68, 2)), angle) + shift[:, None]
    kp = five_points(lm) + rng.normal(scale=noise, size=(n, 5, 2)) * scale[:, None, None] * 0.01
    return lm, kp


def test_fit_recovers_the_oriented_square_of_every_face():
    lm, kp = faces(200, seed=0, noise=1.0)
    mapping = fit_keypoint_mapping(kp, lm, LEFT, RIGHT)
    test_lm, test_kp = faces(50, seed=1)
    err = keypoint_errors(mapping, test_kp, test_lm, LEFT, RIGHT)
    assert err["centre"].max() < 0.02 and np.abs(np.log(err["side_ratio"])).max() < 0.02
    assert np.abs(err["angle"]).max() < 1.0  # degrees, with +-60 degree faces
    sq = mapping.oriented_squares(test_kp)
    roll = line_angle(test_lm[:, LEFT], test_lm[:, RIGHT])
    np.testing.assert_allclose(sq[:, :3], oriented_landmark_square(test_lm, roll), rtol=0, atol=0.03 * sq[:, 2:3].max())


def test_trim_drops_wrong_matches():
    lm, kp = faces(100, seed=2, noise=0.5)
    kp[:5] += 400.0  # five detections paired with the wrong face
    trimmed = fit_keypoint_mapping(kp, lm, LEFT, RIGHT, trim=4.0)
    plain = fit_keypoint_mapping(kp, lm, LEFT, RIGHT, trim=None)
    assert trimmed.info["faces_trimmed"] >= 5 and plain.info["faces_trimmed"] == 0
    clean_lm, clean_kp = faces(30, seed=3)
    assert keypoint_errors(trimmed, clean_kp, clean_lm, LEFT, RIGHT)["centre"].max() < \
        keypoint_errors(plain, clean_kp, clean_lm, LEFT, RIGHT)["centre"].max()
    with pytest.raises(ValueError, match="at least 3"):
        fit_keypoint_mapping(kp[:2], lm[:2], LEFT, RIGHT)


def test_crop_squares_use_keypoints_and_fall_back_to_the_box(tmp_path):
    lm, kp = faces(60, seed=4)
    box = BoxMapping(0.5, 0.6, 0.9)
    mapping = fit_keypoint_mapping(kp, lm, LEFT, RIGHT, box=box.to_dict(), detector={"name": "x"})
    dets = [Detection(np.array([0.0, 0.0, 100.0, 100.0]), 1.0, kp[0]), Detection(np.array([10.0, 20.0, 50.0, 60.0]), 0.5)]
    sq = mapping.crop_squares(dets)
    np.testing.assert_allclose(sq[0], mapping.oriented_squares(kp[:1])[0])
    np.testing.assert_allclose(sq[1], [10 + 0.5 * 40, 20 + 0.6 * 40, 0.9 * 40, 0.0])
    no_box = KeypointMapping(mapping.template)
    with pytest.raises(ValueError, match="fallback"):
        no_box.crop_squares(dets[1:])
    # file round trip through the kind-dispatching loader
    path = mapping.save(tmp_path / "m.json")
    again = load_mapping(path)
    assert isinstance(again, KeypointMapping) and again.detector == {"name": "x"}
    np.testing.assert_allclose(again.template, mapping.template, atol=1e-6)
    assert isinstance(load_mapping(box.save(tmp_path / "b.json")), BoxMapping)
    (tmp_path / "bad.json").write_text('{"kind": "ellipse"}')
    with pytest.raises(ValueError, match="bad.json: unknown box mapping kind 'ellipse'"):
        load_mapping(tmp_path / "bad.json")


def test_template_is_checked():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        KeypointMapping(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coincide"):
        KeypointMapping(np.ones((5, 2)))


def test_the_box_centred_variant_is_chosen_when_the_box_knows_the_centre_better():
    """Keypoints with a large noise but exact boxes (the box's centre is the landmark centre plus a fixed
    offset in the face's frame): the fit takes the centre from the box, turned with the face."""
    lm, kp = faces(200, seed=5, noise=8.0)
    roll = line_angle(lm[:, LEFT], lm[:, RIGHT])
    sq = oriented_landmark_square(lm, roll)
    offset = rotate_points(np.broadcast_to([0.0, -0.1], (len(lm), 1, 2)), roll)[:, 0] * sq[:, 2:3]
    centre = sq[:, :2] + offset  # the box sits 10% of the side higher than the landmark square
    boxes = np.concatenate([centre - sq[:, 2:3] / 2, centre + sq[:, 2:3] / 2], axis=1)
    mapping = fit_keypoint_mapping(kp, lm, LEFT, RIGHT, boxes=boxes)
    assert mapping.info["centre_from"] == "box" and mapping.centre_offset is not None
    np.testing.assert_allclose(mapping.centre_offset, [0.0, 0.1], atol=0.01)
    err = keypoint_errors(mapping, kp, lm, LEFT, RIGHT, boxes)
    assert np.median(err["centre"]) < 0.5 * mapping.info["centre_error_median"]["keypoints"]
    with pytest.raises(ValueError, match="boxes"):
        mapping.oriented_squares(kp)
    # without boxes only the keypoint variant exists
    assert fit_keypoint_mapping(kp, lm, LEFT, RIGHT).centre_offset is None
