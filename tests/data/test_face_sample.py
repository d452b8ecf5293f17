import cv2
import numpy as np
import pytest

from pyg_sdfl.data.sample import FaceSample, ImageLoadError, probe_image, stack_landmarks


def _pts(n=5):
    return np.arange(2 * n, dtype=np.float64).reshape(n, 2)


def test_landmarks_become_float32_and_fields_normalised(tmp_path):
    s = FaceSample(image=str(tmp_path / "a.jpg"), landmarks=_pts().tolist(), box=[1, 2, 3, 4],
                   subsets="lfpw", name="a", occluded=[0, 1, 0, 0, 1])
    assert s.landmarks.dtype == np.float32 and s.landmarks.shape == (5, 2)
    assert s.box.dtype == np.float32 and s.box.tolist() == [1, 2, 3, 4]
    assert s.subsets == ("lfpw",)
    assert s.occluded.dtype == bool and s.occluded.tolist() == [False, True, False, False, True]
    assert "a.jpg" in repr(s) and "5 landmarks" in repr(s)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_landmarks_rejected_naming_sample(bad):
    pts = _pts()
    pts[3, 1] = bad
    with pytest.raises(ValueError, match=r"'face7'.*non-finite.*\[3\]"):
        FaceSample(image=np.zeros((4, 4, 3), np.uint8), landmarks=pts, name="face7")


def test_bad_shapes_rejected():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        FaceSample(image=img, landmarks=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="box"):
        FaceSample(image=img, landmarks=_pts(), box=[0, 0, 1])
    with pytest.raises(ValueError, match="x1 < x0"):
        FaceSample(image=img, landmarks=_pts(), box=[5, 0, 1, 3])
    with pytest.raises(ValueError, match="occluded has 3 flags for 5"):
        FaceSample(image=img, landmarks=_pts(), occluded=[1, 0, 1])
    with pytest.raises(TypeError, match="image must be"):
        FaceSample(image=42, landmarks=_pts())


def test_load_image_from_file_is_rgb(tmp_path):
    rgb = np.zeros((6, 9, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[2, 3] = (10, 20, 30)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    out = FaceSample(image=path, landmarks=_pts()).load_image()
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, rgb)
    assert probe_image(path) == (9, 6)


def test_missing_and_corrupt_files_raise_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="not found.*nope.jpg"):
        FaceSample(image=tmp_path / "nope.jpg", landmarks=_pts(), name="m").load_image()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(ImageLoadError, match="cannot decode.*junk.jpg"):
        FaceSample(image=junk, landmarks=_pts()).load_image()
    with pytest.raises(ImageLoadError, match="junk.jpg"):
        probe_image(junk)
    with pytest.raises(ImageLoadError, match="not found"):
        probe_image(tmp_path / "nope.jpg")


def test_in_memory_and_callable_images():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = FaceSample(image=gray, landmarks=_pts()).load_image()
    assert out.shape == (3, 4, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    rgb = np.random.default_rng(0).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    assert FaceSample(image=lambda: rgb, landmarks=_pts()).load_image() is rgb

    def broken():
        raise RuntimeError("renderer exploded")

    with pytest.raises(ImageLoadError, match="'s1'.*RuntimeError: renderer exploded"):
        FaceSample(image=broken, landmarks=_pts(), name="s1").load_image()
    with pytest.raises(ImageLoadError, match="uint8"):
        FaceSample(image=np.zeros((3, 4, 3), np.float32), landmarks=_pts()).load_image()
    with pytest.raises(ImageLoadError, match=r"\(H, W, 3\)"):
        FaceSample(image=np.zeros((3, 4, 4), np.uint8), landmarks=_pts()).load_image()


def test_stack_landmarks():
    a = FaceSample(image=np.zeros((2, 2, 3), np.uint8), landmarks=_pts(5))
    b = FaceSample(image=np.zeros((2, 2, 3), np.uint8), landmarks=_pts(5) + 1)
    stacked = stack_landmarks([a, b])
    assert stacked.shape == (2, 5, 2) and stacked.dtype == np.float64
    np.testing.assert_array_equal(stacked[1] - stacked[0], 1.0)
    with pytest.raises(ValueError, match="different numbers"):
        stack_landmarks([a, FaceSample(image=np.zeros((2, 2, 3), np.uint8), landmarks=_pts(4))])
    with pytest.raises(ValueError, match="no samples"):
        stack_landmarks([])
