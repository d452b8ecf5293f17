"""Tests for the embedded synthetic-faces dataset (pyg_sdfl.data.synthetic)."""
from __future__ import annotations

import dataclasses
import math
import pickle
import time

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from pyg_sdfl.data.sample import FaceSample
from pyg_sdfl.data.synthetic import (
    FaceParams,
    SyntheticFaces,
    VariationRanges,
    build_shape,
    IDENTITY_PARAMETERS,
    landmarks_of,
    mean_template,
    occlusion_flags,
    project_points,
    render_face,
    rotation_matrix,
    sample_params,
)
from pyg_sdfl.schemes import get_scheme

SCHEME = get_scheme("300w")


def _luma(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = np.round(point).astype(int)
    return image[y, x].astype(np.float64)


# ----------------------------------------------------------------------------- template


def test_mean_template_is_mirror_symmetric_under_the_scheme_flip():
    t = mean_template()
    assert t.shape == (68, 3)
    mirrored = t * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored[list(SCHEME.flip_permutation)], t, atol=1e-12)


def test_any_identity_without_asymmetric_expression_is_mirror_symmetric():
    rng = np.random.default_rng(3)
    perm = list(SCHEME.flip_permutation)
    for _ in range(20):
        ident = {k: m + h * rng.uniform(-1, 1) for k, (m, h) in IDENTITY_PARAMETERS.items()}
        e = rng.uniform(0.1, 1.2)
        expr = {"mouth_open": rng.uniform(0, 1), "smile": rng.uniform(-0.3, 1), "brow_raise": rng.uniform(-0.5, 1),
                "eye_open_left": e, "eye_open_right": e}
        shape, forehead = build_shape(ident, expr)
        np.testing.assert_allclose((shape * [-1, 1, 1])[perm], shape, atol=1e-12)
        # the forehead arc runs from the right temple to the left one and is itself symmetric
        np.testing.assert_allclose((forehead * [-1, 1, 1])[::-1], forehead, atol=1e-12)


def test_mean_template_anatomy():
    t = mean_template()
    x, y = t[:, 0], t[:, 1]
    # image-left eye is 36..41 with 36 the outer (leftmost) corner; right eye 42..47 with 45 outermost
    assert x[36] < x[39] < x[42] < x[45]
    assert x[36] == x[36:42].min() and x[45] == x[42:48].max()
    assert x[17] < x[21] < x[22] < x[26]  # brows outer-left .. outer-right
    assert x[31] < x[33] < x[35] and x[48] < x[51] < x[54] and x[60] < x[62] < x[64]
    assert x[0] < x[8] < x[16]
    # top to bottom: brows, eyes, nose tip, mouth, chin
    assert y[19] < y[37] < y[40] < y[30] < y[33] < y[51] < y[57] < y[8]
    assert y[8] == y[0:17].max()
    # lips: upper outer above upper inner; closed mouth -> inner lips coincide
    assert y[51] < y[62] and y[57] > y[66]
    np.testing.assert_allclose(t[[61, 62, 63], :2], t[[67, 66, 65], :2])
    # the nose tip is the most protruding point; the jaw ends recede
    assert t[30, 2] == t[:, 2].max() and t[0, 2] < t[8, 2]
    assert set(SCHEME.parts) == {"jaw", "left_brow", "right_brow", "nose", "left_eye", "right_eye",
                                 "outer_lip", "inner_lip"}


# ----------------------------------------------------------------------------- projection


def test_rotation_matrix_is_a_rotation_and_matches_the_documented_sense():
    for angles in [(0, 0, 0), (30, -10, 20), (-35, 20, -25)]:
        r = rotation_matrix(*angles)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
    nose = np.array([0.0, 0.0, 1.0])
    assert (rotation_matrix(30, 0, 0) @ nose)[0] > 0  # positive yaw: nose towards +x
    assert (rotation_matrix(0, 20, 0) @ nose)[1] < 0  # positive pitch: nose towards -y (face looks up)
    # roll alone is a 2D rotation: (1, 0) -> (cos r, sin r), clockwise on screen for y down
    r = math.radians(25)
    np.testing.assert_allclose(rotation_matrix(0, 0, 25) @ [1, 0, 0], [math.cos(r), math.sin(r), 0], atol=1e-12)


def test_project_points_is_weak_perspective_into_pixel_centres():
    t = mean_template()
    params = FaceParams(shape3d=t, forehead3d=t[:2], yaw=30.0, pitch=0.0, roll=0.0, scale=0.25,
                        offset=np.array([0.5, 0.4]), gaze=np.zeros(2))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    # independent: rotation about the vertical axis by hand, then u = scale * xy + offset, p = u*S - 0.5
    x_rot = t[:, 0] * c + t[:, 2] * s
    expected = np.stack([x_rot, t[:, 1]], 1) * 0.25 + [0.5, 0.4]
    np.testing.assert_allclose(project_points(t, params), expected, atol=1e-12)
    np.testing.assert_allclose(project_points(t, params, 200), expected * 200 - 0.5, atol=1e-9)
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        project_points(t[:, :2], params)


def test_roll_is_the_angle_of_the_eye_line_for_an_upright_mean_face():
    data = SyntheticFaces(30, seed=5, yaw=0.0, pitch=0.0, roll=25.0, identity=0.0, shape_noise=0.0,
                          occlusion_prob=0.0)
    for i in range(len(data)):
        s = data[i]
        d = s.landmarks[45] - s.landmarks[36]
        assert math.degrees(math.atan2(d[1], d[0])) == pytest.approx(s.attributes["roll"], abs=1e-3)


def test_frontal_faces_without_pose_are_mirror_symmetric_in_the_image():
    data = SyntheticFaces(10, seed=2, yaw=0.0, pitch=0.0, roll=0.0, identity=1.0, shape_noise=0.0,
                          eye_open=(1.0, 1.0), occlusion_prob=0.0)
    perm = list(SCHEME.flip_permutation)
    for i in range(len(data)):
        params = data.params(i)
        # per-eye openness jitters independently; compare everything but the eye lids
        lm = landmarks_of(params, 256).astype(np.float64)
        axis_x = 0.5 * (lm[27, 0] + lm[8, 0])
        mirrored = lm.copy()
        mirrored[:, 0] = 2 * axis_x - mirrored[:, 0]
        keep = [k for k in range(68) if k not in (37, 38, 40, 41, 43, 44, 46, 47)]
        np.testing.assert_allclose(mirrored[perm][keep], lm[keep], atol=1e-3)


def test_image_size_only_rescales_the_geometry():
    small = SyntheticFaces(5, seed=4, image_size=128)
    large = SyntheticFaces(5, seed=4, image_size=256)
    for i in range(5):
        # the same normalised point u lands on p = u*S - 0.5 for each size
        np.testing.assert_allclose((small[i].landmarks + 0.5) * 2, large[i].landmarks + 0.5, atol=1e-3)
        assert small[i].load_image().shape == (128, 128, 3)


# ----------------------------------------------------------------------------- dataset


def test_dataset_is_a_sequence_of_face_samples():
    data = SyntheticFaces(7, seed=0, image_size=96)
    assert len(data) == 7
    samples = list(data)
    assert len(samples) == 7 and all(isinstance(s, FaceSample) for s in samples)
    assert len({s.name for s in samples}) == 7
    np.testing.assert_array_equal(data[-1].landmarks, data[6].landmarks)
    assert [s.name for s in data[2:5]] == [samples[k].name for k in (2, 3, 4)]
    with pytest.raises(IndexError):
        data[7]
    with pytest.raises(IndexError):
        data[-8]
    with pytest.raises(TypeError):
        data["0"]
    s = data[0]
    SCHEME.check_landmarks(s.landmarks)
    assert s.landmarks.dtype == np.float32 and s.landmarks.shape == (68, 2)
    assert s.occluded.shape == (68,) and s.occluded.dtype == bool
    assert callable(s.image) and "synthetic" in s.subsets
    img = s.load_image()
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert SyntheticFaces(0).__len__() == 0 and list(SyntheticFaces(0)) == []


def test_same_seed_and_index_is_identical_and_other_seeds_differ():
    a, b = SyntheticFaces(6, seed=11), SyntheticFaces(6, seed=11)
    c = SyntheticFaces(6, seed=12)
    for i in range(6):
        sa, sb, sc = a[i], b[i], c[i]
        img_a = sa.load_image()
        np.testing.assert_array_equal(img_a, sb.load_image())
        np.testing.assert_array_equal(img_a, sa.load_image())  # rendering twice is repeatable
        np.testing.assert_array_equal(sa.landmarks, sb.landmarks)
        np.testing.assert_array_equal(sa.occluded, sb.occluded)
        assert sa.subsets == sb.subsets and sa.attributes == sb.attributes
        assert not np.array_equal(img_a, sc.load_image())
        assert np.abs(sa.landmarks - sc.landmarks).max() > 1.0
    # a sample does not depend on the dataset length or on which samples were drawn before
    np.testing.assert_array_equal(SyntheticFaces(100, seed=11)[5].load_image(), a[5].load_image())
    assert np.abs(a[0].landmarks - a[1].landmarks).max() > 1.0


def test_samples_and_dataset_pickle():
    data = SyntheticFaces(3, seed=6, image_size=64)
    samples = pickle.loads(pickle.dumps(list(data)))
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(s.load_image(), data[i].load_image())
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone[2].landmarks, data[2].landmarks)


def test_render_matches_the_dataset_sample():
    data = SyntheticFaces(4, seed=8, occlusion_prob=1.0)
    for i in range(4):
        image, lm, occ = data.render(i)
        s = data[i]
        np.testing.assert_array_equal(image, s.load_image())
        np.testing.assert_array_equal(lm, s.landmarks)
        np.testing.assert_array_equal(occ, s.occluded)
        np.testing.assert_array_equal(occ, occlusion_flags(data.params(i)))


def test_landmarks_inside_image_and_face_region():
    data = SyntheticFaces(150, seed=21, image_size=200)
    for i in range(len(data)):
        params = data.params(i)
        lm = data[i].landmarks.astype(np.float64)
        assert np.isfinite(lm).all()
        assert lm.min() >= 0 and lm.max() <= 199
        # every non-jaw landmark is inside the head outline (jaw contour + forehead arc) ...
        head = np.concatenate([lm[:17], project_points(params.forehead3d, params, 200)])
        assert MplPath(head).contains_points(lm[17:]).all()
        # ... and the inner features are inside the 300-W face contour (jaw, then brows right-to-left)
        contour = np.concatenate([lm[:17], lm[26:16:-1]])
        assert MplPath(contour).contains_points(lm[27:]).all()


def test_face_size_and_pose_follow_the_ranges():
    data = SyntheticFaces(200, seed=3)
    attrs = [data[i].attributes for i in range(len(data))]
    yaw = np.array([a["yaw"] for a in attrs])
    roll = np.array([a["roll"] for a in attrs])
    pitch = np.array([a["pitch"] for a in attrs])
    assert np.abs(yaw).max() <= 35 and np.abs(roll).max() <= 25 and np.abs(pitch).max() <= 20
    assert yaw.std() > 10 and roll.std() > 7 and pitch.std() > 5  # uniform: std = r / sqrt(3)
    sides = np.array([np.ptp(data[i].landmarks, axis=0).max() for i in range(len(data))]) / 256
    assert 0.3 < sides.min() and sides.max() < 0.92
    # narrower ranges are honoured
    narrow = SyntheticFaces(50, seed=3, yaw=5.0, roll=0.0, face_size=(0.5, 0.5))
    for i in range(50):
        a = narrow[i].attributes
        assert abs(a["yaw"]) <= 5 and a["roll"] == 0.0 and a["face_size"] == pytest.approx(0.5)


def test_left_right_structure_for_near_frontal_faces():
    data = SyntheticFaces(120, seed=9, yaw=20.0, roll=15.0)
    for i in range(len(data)):
        lm = data[i].landmarks
        x = lm[:, 0]
        assert x[36] < x[39] < x[42] < x[45]
        assert x[17] < x[21] < x[22] < x[26]
        assert x[31] < x[35] and x[48] < x[54] and x[60] < x[64]
        assert x[0] < x[8] < x[16]
        assert lm[8, 1] > lm[30, 1] > lm[27, 1]  # chin below nose tip below nose root


def test_subset_tags_agree_with_pose_and_occlusion():
    data = SyntheticFaces(200, seed=13, occlusion_prob=0.5)
    counts = {"occluded": 0, "frontal": 0, "profile": 0}
    for i in range(len(data)):
        s = data[i]
        yaw, pitch = abs(s.attributes["yaw"]), abs(s.attributes["pitch"])
        assert s.subsets[0] == "synthetic"
        assert ("occluded" in s.subsets) == bool(s.occluded.any())
        assert ("frontal" in s.subsets) == (yaw < 12 and pitch < 12)
        assert ("profile" in s.subsets) == (yaw >= 25)
        for k in counts:
            counts[k] += k in s.subsets
    assert all(v > 10 for v in counts.values()), counts
    assert SyntheticFaces(50, seed=13, occlusion_prob=0.0)[0].occluded.sum() == 0
    assert not any(SyntheticFaces(50, seed=13, occlusion_prob=0.0)[i].occluded.any() for i in range(50))


# ----------------------------------------------------------------------------- occlusion


def test_occluded_flags_agree_with_occluder_polygons():
    data = SyntheticFaces(80, seed=17, occlusion_prob=1.0)
    kinds, total = set(), 0
    for i in range(len(data)):
        params = data.params(i)
        lm = data[i].landmarks.astype(np.float64)
        inside = np.zeros(68, bool)
        near_edge = np.zeros(68, bool)
        for occ in params.occluders:
            kinds.add(occ.kind)
            for poly in occ.polygons:
                px = poly * 256 - 0.5
                path = MplPath(px)
                inside |= path.contains_points(lm)
                near_edge |= path.contains_points(lm, radius=1e-3) != path.contains_points(lm, radius=-1e-3)
        flags = data[i].occluded
        assert np.array_equal(flags[~near_edge], inside[~near_edge])
        total += flags.sum()
    assert kinds == {"rectangle", "ellipse", "bar", "sunglasses", "mask"}
    assert total > 80


def _distance_to_polygons(point: np.ndarray, polygons) -> float:
    best = np.inf
    for poly in polygons:
        a, b = poly, np.roll(poly, -1, axis=0)
        ab = b - a
        t = np.clip(((point - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
        best = min(best, np.linalg.norm(a + t[:, None] * ab - point, axis=1).min())
    return best


def test_occluders_cover_exactly_the_flagged_landmarks_in_the_rendered_image():
    """Render with and without the occluders (same appearance seed, no degradation): pixels change
    at flagged landmarks and stay put at unflagged ones (ignoring points within 2 px of an edge)."""
    data = SyntheticFaces(40, seed=23, occlusion_prob=1.0)
    changed_flagged, flagged = 0, 0
    for i in range(len(data)):
        params = data.params(i)
        with_occ, lm, occ = render_face(params, np.random.default_rng([23, i, 1]), 256, degrade=False)
        bare = dataclasses.replace(params, occluders=())
        without, lm2, occ2 = render_face(bare, np.random.default_rng([23, i, 1]), 256, degrade=False)
        np.testing.assert_array_equal(lm, lm2)
        assert not occ2.any()
        polys = [p * 256 - 0.5 for o in params.occluders for p in o.polygons]
        diff = np.abs(with_occ.astype(int) - without.astype(int)).max(-1) > 0
        for k in range(68):
            if _distance_to_polygons(lm[k].astype(np.float64), polys) < 2.0:
                continue
            x, y = np.round(lm[k]).astype(int)
            if occ[k]:
                flagged += 1
                changed_flagged += diff[y, x]
            else:
                assert not diff[y, x], f"sample {i}: unflagged landmark {k} was painted over"
    assert flagged > 50
    assert changed_flagged >= 0.95 * flagged


# ----------------------------------------------------------------------------- appearance


def test_images_vary():
    data = SyntheticFaces(12, seed=31)
    images = np.stack([data[i].load_image() for i in range(len(data))]).astype(np.float64)
    assert all(img.std() > 15 for img in images)
    assert images.std(axis=0).mean() > 30  # samples differ from each other pixel-wise
    means = images.mean(axis=(1, 2))
    assert np.ptp(means, axis=0).max() > 20


def test_features_are_drawn_at_the_landmarks():
    """Eyes, brows and lips differ in colour from the cheek next to them; the jaw line is an edge."""
    data = SyntheticFaces(60, seed=37, occlusion_prob=0.0, yaw=20.0)
    ok = {"eye": 0, "brow": 0, "lip": 0, "mouth_line": 0}
    for i in range(len(data)):
        params = data.params(i)
        image, lm, _ = render_face(params, np.random.default_rng([37, i, 1]), 256, degrade=False)
        lm = lm.astype(np.float64)
        # cheek on the side facing the camera (the far cheek is shaded)
        near = (3, 31, 41) if params.yaw > 0 else (13, 35, 46)
        cheek = _pixel(image, lm[list(near)].mean(0))
        eye = _pixel(image, lm[36:42].mean(0) if params.yaw > 0 else lm[42:48].mean(0))
        brow = _pixel(image, lm[19] if params.yaw > 0 else lm[24])
        lip = _pixel(image, 0.5 * (lm[57] + lm[66]))  # middle of the lower lip
        ok["eye"] += np.linalg.norm(eye - cheek) > 40
        ok["brow"] += _luma(cheek) - _luma(brow) > 25
        ok["lip"] += np.linalg.norm(lip - cheek) > 15
        # a closed mouth is a dark line through the inner lips
        if np.linalg.norm(lm[62] - lm[66]) < 1e-6:
            ok["mouth_line"] += _luma(_pixel(image, lm[62])) < _luma(lip) - 10
        else:  # an open mouth shows teeth or the dark inside, both unlike the lips
            ok["mouth_line"] += np.linalg.norm(_pixel(image, 0.5 * (lm[62] + lm[66])) - lip) > 25
    n = len(data)
    assert ok["eye"] >= 0.9 * n and ok["brow"] >= 0.9 * n and ok["mouth_line"] >= 0.9 * n, ok
    assert ok["lip"] >= 0.8 * n, ok


def test_jaw_outline_is_darker_than_the_cheek_inside_it():
    data = SyntheticFaces(40, seed=41, occlusion_prob=0.0, yaw=10.0)
    darker = []
    for i in range(len(data)):
        image, lm, _ = render_face(data.params(i), np.random.default_rng([41, i, 1]), 256, degrade=False)
        lm = lm.astype(np.float64)
        centre = lm[30]
        for k in (2, 3, 4, 12, 13, 14):
            inside = lm[k] + 0.15 * (centre - lm[k])
            darker.append(_luma(_pixel(image, lm[k])) < _luma(_pixel(image, inside)))
    assert np.mean(darker) > 0.85


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_faces=-1), "num_faces"),
        (dict(num_faces=3, seed=-2), "seed"),
        (dict(num_faces=3, image_size=8), "image_size"),
        (dict(num_faces=3, occlusion_prob=1.5), "occlusion_prob"),
        (dict(num_faces=3, wobble=2.0), "unknown variation"),
        (dict(num_faces=3, yaw=-5.0), "'yaw'"),
        (dict(num_faces=3, yaw=float("nan")), "'yaw'"),
        (dict(num_faces=3, face_size=(0.7, 0.4)), "'face_size'"),
        (dict(num_faces=3, face_size=(0.4, 1.4)), "'face_size'"),
        (dict(num_faces=3, mouth_open=0.5), "'mouth_open'"),
        (dict(num_faces=3, smile=(0.0, 1.0, 2.0)), "'smile'"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticFaces(**kwargs)


def test_ranges_accept_lists_and_reject_bad_render_size():
    assert VariationRanges.from_kwargs(face_size=[0.5, 0.6]).face_size == (0.5, 0.6)
    params = sample_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="image_size"):
        render_face(params, np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match="occlusion_prob"):
        sample_params(np.random.default_rng(0), occlusion_prob=-0.1)


# ----------------------------------------------------------------------------- speed (reported)


def test_render_speed_is_reported(record_property, capsys):
    data = SyntheticFaces(60, seed=0, image_size=256)
    data[0].load_image()
    start = time.perf_counter()
    for i in range(len(data)):
        data[i].load_image()
    per_sample_ms = (time.perf_counter() - start) / len(data) * 1e3
    record_property("synthetic_ms_per_sample_256", per_sample_ms)
    with capsys.disabled():
        print(f"\n[synthetic] {per_sample_ms:.2f} ms per 256x256 sample (params + render)")
    assert math.isfinite(per_sample_ms) and per_sample_ms > 0
