from pathlib import Path

import cv2
import numpy as np
import pytest

from pyg_sdfl.data import ImageLoadError, LandmarkDataset, load_dataset, read_wflw, read_wflw_attribute_lists

ATTR_FILES = {"largepose": "pose", "expression": "expression", "illumination": "illumination",
              "makeup": "makeup", "occlusion": "occlusion", "blur": "blur"}


def _line_rect_attr(pts, box, attrs, name):
    return " ".join([f"{v:.6f}" for v in pts.reshape(-1)] + [str(b) for b in box] + [str(a) for a in attrs] + [name])


def _line_points(pts, name):
    return " ".join([f"{v:.6f}" for v in pts.reshape(-1)] + [name])


def _face98(seed):
    return np.random.default_rng(seed).uniform(20, 120, size=(98, 2))


# ---------------------------------------------------------------- real WFLW test lists
def test_real_attribute_list_without_images(wflw_annotations_root):
    path = wflw_annotations_root / "list_98pt_test_blur.txt"
    samples = read_wflw(path, image_root="/nonexistent/WFLW_images")
    lines = [l.split() for l in path.read_text().splitlines() if l.strip()]
    assert len(samples) == len(lines) == 773
    assert all(s.subsets == ("blur",) and s.box is None for s in samples)
    np.testing.assert_allclose(samples[0].landmarks.reshape(-1), [float(v) for v in lines[0][:196]], rtol=1e-6)
    assert samples[0].image == Path("/nonexistent/WFLW_images") / lines[0][196]
    assert len({s.name for s in samples}) == len(samples)  # several faces per image get #k names
    with pytest.raises(ImageLoadError, match="not found"):
        samples[0].load_image()  # images are needed only when loaded


def test_real_lists_merge_into_distinct_faces(wflw_annotations_root):
    merged = read_wflw_attribute_lists(wflw_annotations_root, image_root="/nonexistent")
    assert len(merged) == 1966
    assert len({s.name for s in merged}) == 1966
    for stem, tag in ATTR_FILES.items():
        n_lines = sum(1 for l in (wflw_annotations_root / f"list_98pt_test_{stem}.txt").read_text().splitlines() if l.strip())
        assert sum(tag in s.subsets for s in merged) == n_lines, stem
    via_layout = load_dataset("wflw", wflw_annotations_root, "test")
    assert [s.name for s in via_layout] == [s.name for s in merged]


# ---------------------------------------------------------------- written files
def test_rect_attr_format(tmp_path):
    a, b = _face98(0), _face98(1)
    lines = [
        _line_rect_attr(a, (10, 12, 130, 140), (1, 0, 0, 1, 0, 1), "1--Handshaking/img_a.jpg"),
        _line_rect_attr(b, (5, 6, 7, 8), (0, 0, 0, 0, 0, 0), "2--Demonstration/img_b.jpg"),
    ]
    path = tmp_path / "list_98pt_rect_attr_train.txt"
    path.write_text("\n".join(lines) + "\n")
    s = read_wflw(path, tmp_path / "imgs")
    assert len(s) == 2
    np.testing.assert_allclose(s[0].landmarks, a, atol=1e-5)  # WFLW coordinates are used as given
    assert s[0].box.tolist() == [10, 12, 130, 140]
    assert s[0].attributes == {"pose": 1, "expression": 0, "illumination": 0, "makeup": 1, "occlusion": 0, "blur": 1}
    assert s[0].subsets == ("pose", "makeup", "blur") and s[1].subsets == ()
    assert s[0].image == tmp_path / "imgs" / "1--Handshaking" / "img_a.jpg"
    assert s[0].name == "1--Handshaking/img_a.jpg"


def test_points_only_format_and_duplicate_image_names(tmp_path):
    path = tmp_path / "list_98pt_test.txt"
    path.write_text("\n".join([_line_points(_face98(0), "x.jpg"), _line_points(_face98(1), "x.jpg"),
                               _line_points(_face98(2), "y.jpg")]))
    s = read_wflw(path, tmp_path)
    assert [x.name for x in s] == ["x.jpg#0", "x.jpg#1", "y.jpg"]
    assert all(x.subsets == () for x in s)  # the full test list names no attribute


def test_bad_wflw_lines(tmp_path):
    good = _line_rect_attr(_face98(0), (1, 2, 3, 4), (0,) * 6, "a.jpg")
    cases = {
        "fields.txt": (good.rsplit(" ", 2)[0] + " a.jpg", r"line 1: 206 fields is neither"),
        "mixed.txt": (good + "\n" + _line_points(_face98(1), "b.jpg"), r"line 2: 197 fields, but earlier lines have 207"),
        "attr.txt": (_line_rect_attr(_face98(0), (1, 2, 3, 4), (0, 2, 0, 0, 0, 0), "a.jpg"), "attributes must be 0 or 1"),
        "nan.txt": (_line_points(np.where(np.arange(196).reshape(98, 2) == 7, np.nan, _face98(0)), "n.jpg"),
                    r"nan\.txt, line 1: non-finite.*\[3\]"),
        "word.txt": ("oops " + _line_points(_face98(0), "a.jpg").split(" ", 1)[1], r"line 1: non-numeric"),
        "empty.txt": ("\n\n", "no faces"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_wflw(tmp_path / name, tmp_path)
    with pytest.raises(ValueError, match="not found"):
        read_wflw(tmp_path / "absent.txt", tmp_path)
    (tmp_path / "rect.txt").write_text(good)
    with pytest.raises(ValueError, match="rect_attr list"):
        read_wflw_attribute_lists([tmp_path / "rect.txt"], tmp_path)


def test_standard_layout_loads_images_at_load_time(tmp_path):
    ann = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    ann.mkdir(parents=True)
    pts = _face98(3)
    (ann / "list_98pt_rect_attr_train.txt").write_text(
        _line_rect_attr(pts, (0, 0, 150, 150), (0, 1, 0, 0, 0, 0), "9--Press/p.jpg") + "\n")
    samples = load_dataset("wflw", tmp_path, "train")
    assert samples[0].image == tmp_path / "WFLW_images" / "9--Press" / "p.jpg"
    with pytest.raises(ValueError, match="list_98pt_rect_attr_test.txt not found"):
        load_dataset("wflw", tmp_path, "test")
    (tmp_path / "WFLW_images" / "9--Press").mkdir(parents=True)
    cv2.imwrite(str(samples[0].image), np.full((160, 160, 3), 90, np.uint8))
    item = LandmarkDataset(samples, "wflw", image_size=64)[0]
    assert item["image"].shape == (3, 64, 64) and item["landmarks"].shape == (98, 2)
