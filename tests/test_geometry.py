"""pyg_sdfl.geometry: the pixel/box convention, checked on hand-computed cases."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pyg_sdfl import geometry as g


# ----------------------------------------------------------------------------- boxes and squares
def test_check_boxes_shapes_and_rules():
    np.testing.assert_array_equal(g.check_boxes([0, 0, 1, 2]), [[0.0, 0.0, 1.0, 2.0]])
    assert g.check_boxes(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError, match=r"where: boxes must have shape \(M, 4\)"):
        g.check_boxes(np.zeros((2, 3)), "where")
    with pytest.raises(ValueError, match="NaN"):
        g.check_boxes([0, 0, np.nan, 1])
    with pytest.raises(ValueError, match="x1 <= x0"):
        g.check_boxes([1, 0, 1, 1])  # empty: refused by default
    np.testing.assert_array_equal(g.check_boxes([1, 0, 1, 1], allow_empty=True), [[1, 0, 1, 1]])
    with pytest.raises(ValueError, match="x1 < x0"):
        g.check_boxes([2, 0, 1, 1], allow_empty=True)


def test_landmark_box_of_one_face_and_of_a_batch():
    pts = np.array([[[3.0, 4.0], [10.0, 1.0], [5.0, 9.0]], [[0.0, 0.0], [2.0, 2.0], [1.0, 5.0]]])
    np.testing.assert_array_equal(g.landmark_box(pts), [[3, 1, 10, 9], [0, 0, 2, 5]])
    np.testing.assert_array_equal(g.landmark_box(pts[0]), [3, 1, 10, 9])
    with pytest.raises(ValueError, match="NaN"):
        g.landmark_box(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        g.landmark_box(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        g.landmark_box(np.zeros((0, 2)))


def test_landmark_square_crop_square_and_square_to_box_by_hand():
    pts = np.array([[10.0, 20.0], [30.0, 60.0], [25.0, 30.0]])  # box 10..30 x 20..60: centre (20, 40), sides 20, 40
    assert g.landmark_square(pts) == (20.0, 40.0, 40.0)
    assert g.crop_square(pts, 1.2) == (20.0, 40.0, 48.0)
    assert all(type(v) is float for v in g.crop_square(pts, 1.2))
    np.testing.assert_array_equal(g.box_square([[10, 20, 30, 60], [0, 0, 4, 2]]), [[20, 40, 40], [2, 1, 4]])
    np.testing.assert_array_equal(g.square_to_box((20.0, 40.0, 48.0)), [-4, 16, 44, 64])
    np.testing.assert_array_equal(g.square_to_box([[20.0, 40.0, 48.0]] * 2), [[-4, 16, 44, 64]] * 2)
    with pytest.raises(ValueError, match="one point"):
        g.landmark_square(np.ones((4, 2)))
    with pytest.raises(ValueError, match="crop scale"):
        g.crop_square(pts, 0)
    with pytest.raises(ValueError, match="crop scale"):
        g.crop_square(pts, "big")


def test_crop_square_equals_the_old_formula_on_random_landmarks():
    """The training/evaluation crop square, bit for bit as transforms.crop_box_from_landmarks
    computed it: centre of min/max, side = scale * max(width, height)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        pts = rng.uniform(-100, 2000, size=(68, 2)) * rng.uniform(0.01, 1)
        scale = float(rng.choice([1.0, 1.2, 1.25, 1.3, rng.uniform(0.5, 2)]))
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        cx, cy = (lo + hi) / 2.0
        assert g.crop_square(pts, scale) == (float(cx), float(cy), float(scale * (hi - lo).max()))


# ----------------------------------------------------------------------------- IoU and matching
def test_box_iou_of_known_boxes_including_empty_ones():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0],    # overlap 1, union 7
                  [0.0, 0.0, 2.0, 2.0],    # itself
                  [5.0, 5.0, 6.0, 6.0],    # disjoint
                  [0.0, 0.0, 1.0, 2.0],    # half of it
                  [2.0, 0.0, 4.0, 2.0],    # touching edge: no area in common
                  [1.0, 1.0, 1.0, 1.0]])   # empty box (a point) inside a
    np.testing.assert_allclose(g.box_iou(a, b), [[1 / 7, 1.0, 0.0, 0.5, 0.0, 0.0]])
    assert g.box_iou(b, a).shape == (6, 1)
    assert g.box_iou(b[-1:], b[-1:])[0, 0] == 0.0  # empty with empty: union 0 gives 0, not NaN
    assert g.box_iou(np.zeros((0, 4)), a).shape == (0, 1)
    with pytest.raises(ValueError, match="x1 < x0"):
        g.box_iou([[2.0, 0.0, 1.0, 1.0]], a)


def test_match_detection_needs_the_centre_inside_and_takes_the_best_iou():
    face = np.array([100.0, 100.0, 200.0, 220.0])
    dets = np.array([[0.0, 0.0, 90.0, 90.0],         # centre outside, IoU 0
                     [110.0, 90.0, 190.0, 170.0],    # centre inside, IoU 5600 / 12800
                     [140.0, 140.0, 160.0, 160.0]])  # centre inside, IoU 400 / 12000
    iou = g.box_iou(dets, face)[:, 0]
    # dets[1]: intersection 80 x 70 = 5600, union 12000 + 6400 - 5600 = 12800
    np.testing.assert_allclose(iou, [0.0, 5600 / 12800, 400 / 12000])
    assert g.match_detection(face, dets) == 1
    assert g.match_detection(face, list(dets)) == 1  # a sequence of (4,) boxes works too
    assert g.match_detection(face, dets[[0]]) is None  # centre outside: never the face
    assert g.match_detection(face, dets[[2]]) == 0  # no threshold by default
    assert g.match_detection(face, dets[[2]], min_iou=0.3) is None
    assert g.match_detection(face, dets[[0, 2, 1]], min_iou=0.3) == 2
    assert g.match_detection(face, np.zeros((0, 4))) is None
    assert g.match_detection(face, []) is None


def test_match_detection_rejects_a_big_overlapping_box_whose_centre_is_off_the_face():
    face = np.array([0.0, 0.0, 100.0, 100.0])
    shifted = np.array([[2.0, 0.0, 200.0, 100.0]])  # centre x = 101: outside, yet IoU 0.49
    assert g.box_iou(shifted, face)[0, 0] == pytest.approx(0.49)
    assert g.match_detection(face, shifted, min_iou=0.3) is None
    edge = np.array([[0.0, 0.0, 200.0, 100.0]])  # centre x = 100, on the edge: inside
    assert g.match_detection(face, edge, min_iou=0.3) == 0


def test_match_detection_with_a_threshold_as_the_peers_benchmark_uses_it():
    face = np.array([10.0, 10.0, 110.0, 110.0])
    dets = np.array([[300.0, 300.0, 400.0, 400.0], [20.0, 5.0, 120.0, 105.0], [0.0, 0.0, 60.0, 60.0]])
    assert g.match_detection(face, dets) == 1
    assert g.match_detection(face, dets[[0]]) is None
    assert g.match_detection(face, np.zeros((0, 4))) is None
    assert g.match_detection(face, dets[[2]], min_iou=0.1) == 0  # IoU 0.25
    assert g.match_detection(face, dets[[2]], min_iou=0.3) is None


def test_match_detection_ties_go_to_the_first_detection():
    face = np.array([0.0, 0.0, 10.0, 10.0])
    dets = np.array([[1.0, 1.0, 9.0, 9.0], [1.0, 1.0, 9.0, 9.0]])
    assert g.match_detection(face, dets) == 0


# ----------------------------------------------------------------------------- crops
def test_crop_matrix_round_trip_crop_image_crop():
    rng = np.random.default_rng(3)
    B, N = 6, 68
    squares = np.stack([rng.uniform(0, 500, B), rng.uniform(0, 500, B), rng.uniform(50, 400, B)], axis=1)
    mats = np.stack([g.crop_matrix(sq[:2], sq[2], 128, rotation_deg=rng.uniform(-30, 30), scale=rng.uniform(0.9, 1.1),
                                   shift=rng.uniform(-5, 5, 2), flip=bool(i % 2)) for i, sq in enumerate(squares)])
    crop_pts = rng.uniform(0, 128, size=(B, N, 2))
    image_pts = g.crop_to_image(crop_pts, mats)
    back = np.stack([g.apply_affine(p, M) for p, M in zip(image_pts, mats)])
    np.testing.assert_allclose(back, crop_pts, atol=1e-9)
    for p, q, M in zip(image_pts, crop_pts, mats):
        np.testing.assert_allclose(g.apply_affine(q, g.invert_affine(M)), p, atol=1e-9)
        np.testing.assert_allclose(g.invert_affine(M), cv2.invertAffineTransform(M), atol=1e-12)


def test_crop_matrix_checks_its_arguments():
    with pytest.raises(ValueError, match="side"):
        g.crop_matrix((0, 0), 0.0, 64)
    with pytest.raises(ValueError, match="out_size"):
        g.crop_matrix((0, 0), 10.0, 6.5)


def _homogeneous(M):
    return np.vstack([M, [0, 0, 1]])


def test_crop_square_hand_values_and_errors():
    cx, cy, side = g.crop_square(np.array([[10.0, 20.0], [30.0, 60.0], [25.0, 30.0]]), 1.2)
    assert (cx, cy) == (20.0, 40.0) and side == pytest.approx(48.0)
    assert g.crop_square(np.array([[0.0, 0.0], [10.0, 5.0]]), 1.0)[2] == 10.0
    with pytest.raises(ValueError, match="NaN"):
        g.crop_square(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="zero size"):
        g.crop_square(np.ones((4, 2)))
    with pytest.raises(ValueError, match="positive"):
        g.crop_square(np.eye(2), 0)


def test_crop_matrix_hand_values():
    M = g.crop_matrix((50, 80), 100, 256)
    # the centre goes to the output centre; the crop square's edges to the outer pixel edges
    np.testing.assert_allclose(g.apply_affine([[50, 80], [100, 80], [0, 30]], M), [[127.5, 127.5], [255.5, 127.5], [-0.5, -0.5]])
    # +90 deg turns the face counter-clockwise on screen: a point right of the centre goes up
    M = g.crop_matrix((50, 80), 100, 256, rotation_deg=90)
    np.testing.assert_allclose(g.apply_affine([[60, 80]], M), [[127.5, 127.5 - 25.6]], atol=1e-9)
    # zoom, shift, mirror
    M = g.crop_matrix((50, 80), 100, 256, scale=2.0, shift=(3, -4), flip=True)
    np.testing.assert_allclose(g.apply_affine([[60, 81]], M), [[127.5 - 51.2 + 3, 127.5 + 5.12 - 4]], atol=1e-9)


def test_crop_matrix_equals_hand_composition_with_opencv_rotation():
    c, side, S, angle, s, t = np.array([123.4, 87.6]), 151.0, 256, 27.0, 1.07, np.array([11.0, -6.5])
    k = s * S / side
    to_origin = np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1.0]])
    rot = _homogeneous(cv2.getRotationMatrix2D((0.0, 0.0), angle, k))  # OpenCV: positive = counter-clockwise
    mirror = np.diag([-1.0, 1.0, 1.0])
    to_out = np.array([[1, 0, (S - 1) / 2 + t[0]], [0, 1, (S - 1) / 2 + t[1]], [0, 0, 1.0]])
    for flip in (False, True):
        expected = to_out @ (mirror if flip else np.eye(3)) @ rot @ to_origin
        np.testing.assert_allclose(g.crop_matrix(c, side, S, angle, s, t, flip), expected[:2], atol=1e-10)


def test_invert_affine_round_trip():
    M = g.crop_matrix((40, 60), 90, 128, rotation_deg=-20, scale=0.9, shift=(5, 2), flip=True)
    pts = np.random.default_rng(0).uniform(0, 100, (10, 2))
    np.testing.assert_allclose(g.apply_affine(g.apply_affine(pts, M), g.invert_affine(M)), pts, atol=1e-9)
    np.testing.assert_allclose(g.invert_affine(M), cv2.invertAffineTransform(M), atol=1e-12)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        g.apply_affine(pts, np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        g.invert_affine(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- pixels
def test_half_pixels_round_up():
    """floor(p + 0.5): 2.5 is in pixel 3 and -0.5 in pixel 0 (np.rint would say 2 and -0)."""
    pts = np.array([[2.5, 2.49], [-0.5, -0.51], [3.5, 0.0]])
    np.testing.assert_array_equal(g.pixel_index(pts), [[3, 2], [0, -1], [4, 0]])


def test_points_in_pixel_box_at_half_pixels():
    box = (2, 0, 4, 10)  # columns 2 and 3, exclusive end 4
    pts = np.array([[1.49, 5.0],   # pixel 1: out
                    [1.5, 5.0],    # pixel 2: in
                    [2.5, 5.0],    # pixel 3: in (np.rint would put it in 2: also in)
                    [3.49, 5.0],   # pixel 3: in
                    [3.5, 5.0],    # pixel 4: out (np.rint: 4, out as well)
                    [0.5, 5.0]])   # pixel 1: out (np.rint: 0)
    np.testing.assert_array_equal(g.points_in_pixel_box(pts, box), [False, True, True, True, False, False])
    # where the two rules disagree: 4.5 is pixel 5 here, np.rint says 4
    assert not g.points_in_pixel_box([[4.5, 5.0]], (0, 0, 5, 10))[0]
    with pytest.raises(ValueError, match="NaN"):
        g.points_in_pixel_box([[np.nan, 0.0]], box)


def test_box_pixels_hand_values_and_every_landmark_is_in_its_box_pixels():
    assert g.box_pixels((1.5, 2.4, 3.5, 7.5), 100) == (2, 2, 5, 9)
    assert g.box_pixels((-10.0, -3.0, 200.0, 50.0), 64) == (0, 0, 64, 51)  # clipped
    with pytest.raises(ValueError, match="degenerate"):
        g.box_pixels((3.0, 0.0, 3.0, 1.0), 10)
    with pytest.raises(ValueError, match="no pixel inside"):
        g.box_pixels((20.0, 20.0, 30.0, 30.0), 10)
    with pytest.raises(ValueError, match="positive integer"):
        g.box_pixels((0.0, 0.0, 1.0, 1.0), 0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        pts = rng.uniform(5, 120, size=(68, 2))
        pts[:3] = np.floor(pts[:3]) + 0.5  # half pixels on purpose
        assert g.points_in_pixel_box(pts, g.box_pixels(g.landmark_box(pts), 128)).all()


def test_box_pixels_match_math_floor():
    for x in (-0.5, 0.49999, 0.5, 1.5, 2.5, 63.49):
        c0, _, _, _ = g.box_pixels((x, 0.0, 63.9, 1.0), 64)
        assert c0 == max(0, math.floor(x + 0.5))


# ----------------------------------------------------------------------------- rotation
def test_line_angle_and_rotate_points_by_hand():
    assert g.line_angle([0, 0], [1, 0]) == 0.0
    assert g.line_angle([0, 0], [1, 1]) == pytest.approx(45.0)  # y down: clockwise on screen
    assert g.line_angle([[0, 0], [2, 2]], [[0, 1], [1, 2]]).tolist() == pytest.approx([90.0, 180.0])
    np.testing.assert_allclose(g.rotate_points([1.0, 0.0], 90.0), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(g.rotate_points([[1.0, 0.0], [0.0, 2.0]], 180.0), [[-1, 0], [0, -2]], atol=1e-12)
    # one angle per point set
    pts = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    np.testing.assert_allclose(g.rotate_points(pts, [90.0, -90.0]), [[[0, 1]], [[0, -1]]], atol=1e-12)
    # the direction (1, 0) turned by a has line_angle a
    for a in (-170.0, -60.0, 0.0, 33.0, 120.0):
        assert g.line_angle([0, 0], g.rotate_points([1.0, 0.0], a)) == pytest.approx(a)


def test_oriented_landmark_square_of_a_turned_rectangle():
    """A 4 x 2 rectangle of points turned by 30 degrees: at 30 its square is side 4 at the centre;
    at 0 it is the axis-aligned box of the turned corners; angle 0 equals landmark_square."""
    rect = np.array([[-2.0, -1.0], [2.0, -1.0], [2.0, 1.0], [-2.0, 1.0]])
    turned = g.rotate_points(rect, 30.0) + [10.0, 5.0]
    np.testing.assert_allclose(g.oriented_landmark_square(turned, 30.0), [10.0, 5.0, 4.0], atol=1e-9)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    np.testing.assert_allclose(g.oriented_landmark_square(turned, 0.0), [10.0, 5.0, 4 * c + 2 * s], atol=1e-9)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 50, size=(3, 9, 2))
    for p in pts:
        np.testing.assert_allclose(g.oriented_landmark_square(p, 0.0), g.landmark_square(p), atol=1e-12)
    batch = g.oriented_landmark_square(pts, [0.0, 10.0, -20.0])
    np.testing.assert_allclose(batch[2], g.oriented_landmark_square(pts[2], -20.0), atol=1e-12)


def test_crop_of_an_oriented_square_is_upright():
    """crop_matrix(c, side, S, rotation_deg=roll) puts the turned rectangle level and centred."""
    rect = np.array([[-2.0, -1.0], [2.0, -1.0], [2.0, 1.0], [-2.0, 1.0]])
    turned = g.rotate_points(rect, -40.0) + [30.0, 20.0]
    cx, cy, side = g.oriented_landmark_square(turned, -40.0)
    M = g.crop_matrix((cx, cy), side, 64, rotation_deg=-40.0)
    crop = g.apply_affine(turned, M)
    assert g.line_angle(crop[0], crop[1]) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(crop.mean(axis=0), [31.5, 31.5], atol=1e-9)
    np.testing.assert_allclose(crop[1, 0] - crop[0, 0], 64.0, atol=1e-9)
    corners = g.oriented_square_corners(np.array([[cx, cy, side]]), -40.0)[0]
    np.testing.assert_allclose(g.apply_affine(corners, M), [[-0.5, -0.5], [63.5, -0.5], [63.5, 63.5], [-0.5, 63.5]],
                               atol=1e-9)


def test_fit_similarity_recovers_a_known_map_and_is_least_squares():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(5, 2))
    dst = 2.5 * g.rotate_points(src, -35.0) + [3.0, -7.0]
    s, a, t = g.fit_similarity(src, dst)
    assert s == pytest.approx(2.5) and a == pytest.approx(-35.0)
    np.testing.assert_allclose(t, [3.0, -7.0], atol=1e-12)
    noisy = dst + rng.normal(scale=0.05, size=dst.shape)
    s, a, t = g.fit_similarity(src, noisy)
    best = ((s * g.rotate_points(src, a) + t - noisy) ** 2).sum()
    for ds, da in ((1e-3, 0), (-1e-3, 0), (0, 0.05), (0, -0.05)):  # a local minimum of the squared error
        other = (((s + ds) * g.rotate_points(src, a + da) + t - noisy) ** 2).sum()
        assert other > best
    with pytest.raises(ValueError, match="coincide"):
        g.fit_similarity(np.ones((3, 2)), dst[:3])
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        g.fit_similarity(src[:1], dst[:1])
