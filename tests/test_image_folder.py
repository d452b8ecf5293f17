"""Folders of images: finding the files, decoding them in worker processes, batching the faces, JSON Lines."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyg_sdfl.image_folder import (IMAGE_EXTENSIONS, ImageFiles, JsonlWriter, completed_images, find_images,
                                   iter_decoded, predict_directory, predict_images, read_jsonl)
from pyg_sdfl.inference import Face


def _png(path: Path, value: int, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))
    return path


def _truncated_jpeg(path: Path) -> Path:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert ok
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    return path


class CountingLandmarker:
    """A stand-in for Landmarker.predict_batch: one face per image whose score is the image's mean
    pixel value (so results can be traced to their image); records every call's image count."""

    def __init__(self, min_side: int = 0) -> None:
        self.calls = []
        self.min_side = min_side

    def predict_batch(self, images, boxes=None, box_type="landmark"):
        self.calls.append(len(images))
        if boxes is not None:
            assert len(boxes) == len(images)
        if any(min(im.shape[:2]) < self.min_side for im in images):
            raise ValueError("box [0, 0, 50, 50] lies outside the image")
        return [[Face(box=np.array([0.0, 0, 1, 1]), landmarks=np.zeros((68, 2)), score=float(im.mean()),
                      crop_box=np.array([0.0, 0, 1, 1]))] for im in images]


# ---------------------------------------------------------------------------- find_images
def test_find_images_recursion_extensions_and_case(tmp_path):
    for rel in ("b.png", "a.JPG", "sub/c.jpeg", "sub/deep/d.TiFF", "z.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")  # find_images looks at names only
    for rel in ("notes.txt", "sub/data.json", ".hidden.jpg", "sub/._resource.png", ".git/x.png", "noext"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.JPG", "b.png", "sub/c.jpeg", "sub/deep/d.TiFF",
                                                                    "z.webp"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["a.JPG", "b.png", "z.webp"]
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"} <= IMAGE_EXTENSIONS


def test_find_images_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder not found: {tmp_path / 'nope'}"):
        find_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        find_images(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=f"no image files in {tmp_path} or its sub-folders"):
        find_images(tmp_path)
    _png(tmp_path / "sub" / "a.png", 3)
    with pytest.raises(ValueError, match="no image files"):
        find_images(tmp_path, recursive=False)
    assert len(find_images(tmp_path)) == 1


# ---------------------------------------------------------------------------- decoding
def test_the_dataset_returns_error_records_for_bad_files(tmp_path):
    good = _png(tmp_path / "good.png", 77)
    cut = _truncated_jpeg(tmp_path / "cut.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not a picture")
    data = ImageFiles([good, cut, empty, text, tmp_path / "missing.png"])
    items = [data[i] for i in range(len(data))]
    assert items[0].error is None and items[0].image.shape == (24, 32, 3) and items[0].image.dtype == np.uint8
    assert (items[0].image == 77).all()
    expected = ["truncated JPEG", "empty (0 bytes)", "corrupt or not an image", "not found"]
    for item, words, path in zip(items[1:], expected, [cut, empty, text, tmp_path / "missing.png"]):
        assert item.image is None and words in item.error and str(path) in item.error, item.error


def test_order_is_kept_with_two_workers(tmp_path):
    """Large and small files alternate (uneven decode times across the two workers), bad files
    among them: items come back in the order of the paths, with the right pixels."""
    paths, values = [], []
    for i in range(14):
        if i % 5 == 3:
            paths.append(_truncated_jpeg(tmp_path / f"{i:02d}_bad.jpg"))
            values.append(None)
        else:
            size = (900, 1200) if i % 2 == 0 else (8, 8)
            paths.append(_png(tmp_path / f"{i:02d}.png", 10 * i, size))
            values.append(10 * i)
    items = list(iter_decoded(paths, num_workers=2))
    assert [it.index for it in items] == list(range(14))
    assert [it.path for it in items] == paths
    for item, value in zip(items, values):
        if value is None:
            assert item.image is None and "truncated JPEG" in item.error
        else:
            assert item.error is None and int(item.image[0, 0, 0]) == value
    # in-process decoding gives the same
    same = list(iter_decoded(paths, num_workers=0))
    assert [it.error for it in same] == [it.error for it in items]
    with pytest.raises(ValueError, match="num_workers"):
        list(iter_decoded(paths, num_workers=-1))


# ---------------------------------------------------------------------------- prediction
def test_predict_images_batches_faces_of_several_images(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", 20 * i) for i in range(5)]
    paths.insert(2, _truncated_jpeg(tmp_path / "bad.jpg"))
    lm = CountingLandmarker()
    results = list(predict_images(lm, paths, batch_images=2, num_workers=2))
    assert lm.calls == [2, 2, 1]  # five readable images, two per call
    assert [r.path for r in results] == paths
    assert "truncated JPEG" in results[2].error and results[2].faces is None and results[2].image is None
    good = [r for r in results if r.ok]
    assert [r.faces[0].score for r in good] == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert good[0].image.shape == (24, 32, 3)
    assert results[2].to_record() == {"image": str(paths[2]), "error": results[2].error}
    assert results[0].to_record()["faces"][0]["score"] == 0.0


def test_no_model_is_loaded_when_no_image_is_readable(tmp_path):
    paths = [_truncated_jpeg(tmp_path / "a.jpg"), tmp_path / "missing.png"]
    loads = []
    results = list(predict_images(lambda: loads.append(1) or CountingLandmarker(), paths, num_workers=0))
    assert loads == [] and all(r.error for r in results)
    _png(tmp_path / "missing.png", 5)
    results = list(predict_images(lambda: loads.append(1) or CountingLandmarker(), paths, num_workers=0))
    assert loads == [1] and results[1].faces[0].score == 5.0


def test_a_box_outside_one_image_fails_that_image_only(tmp_path):
    paths = [_png(tmp_path / "big.png", 1, (100, 100)), _png(tmp_path / "small.png", 2, (10, 10)),
             _png(tmp_path / "big2.png", 3, (100, 100))]
    lm = CountingLandmarker(min_side=50)
    results = list(predict_images(lm, paths, batch_images=8, num_workers=0, boxes=np.array([[0.0, 0, 50, 50]])))
    assert lm.calls == [3, 1, 1, 1]  # the batch, then image by image
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == f"{paths[1]}: box [0, 0, 50, 50] lies outside the image"


def test_predict_directory_skips_the_done_images(tmp_path):
    root = tmp_path / "photos"
    paths = [_png(root / f"{i}.png", i) for i in range(4)] + [_png(root / "sub" / "x.png", 9)]
    lm = CountingLandmarker()
    assert [r.path for r in predict_directory(lm, root, num_workers=0)] == sorted(paths)
    lm = CountingLandmarker()
    done = {str(paths[0]), str(paths[3])}
    left = list(predict_directory(lm, root, num_workers=0, skip=done))
    assert [r.path for r in left] == [paths[1], paths[2], paths[4]] and lm.calls == [3]


# ---------------------------------------------------------------------------- JSON Lines
def test_jsonl_writer_and_resume_after_an_interrupted_run(tmp_path, caplog):
    path = tmp_path / "out" / "faces.jsonl"
    with JsonlWriter(path) as w:
        w.write({"image": "a.png", "faces": []})
        w.write({"image": "b.png", "error": "truncated JPEG: b.png"})
        w.write({"image": "c.png", "faces": [{"box": [0, 0, 1, 1]}]})
        assert path.read_text().count("\n") == 3  # flushed line by line, before closing
    with open(path, "a") as f:
        f.write('{"image": "d.png", "fa')  # the run was killed mid-line
    with caplog.at_level(logging.WARNING, logger="pyg_sdfl.image_folder"):
        assert completed_images(path) == {"a.png", "c.png"}  # b failed: retried; d incomplete: retried
    assert "incomplete last line 4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyg_sdfl.image_folder"):
        with JsonlWriter(path, append=True) as w:  # resuming: the fragment goes, new records follow
            w.write({"image": "d.png", "faces": []})
    assert "dropping an incomplete last line" in caplog.text
    records = read_jsonl(path)
    assert [r["image"] for r in records] == ["a.png", "b.png", "c.png", "d.png"]
    assert completed_images(path) == {"a.png", "c.png", "d.png"}
    # a complete last record without its newline is kept
    path.write_text(json.dumps({"image": "e.png", "faces": []}))
    with JsonlWriter(path, append=True) as w:
        w.write({"image": "f.png", "faces": []})
    assert completed_images(path) == {"e.png", "f.png"}
    # starting afresh truncates; a missing file is an empty set
    JsonlWriter(path).close()
    assert path.read_text() == "" and completed_images(tmp_path / "none.jsonl") == set()


def test_a_damaged_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "faces.jsonl"
    path.write_text('{"image": "a.png", "faces": []}\nnot json\n{"image": "b.png", "faces": []}\n')
    with pytest.raises(ValueError, match=f"{path}, line 2: not valid JSON"):
        completed_images(path)
    path.write_text('{"image": "a.png", "faces": []}\n[1, 2]\n{"image": "b.png", "faces": []}\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        read_jsonl(path)
