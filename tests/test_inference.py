"""Inference on photos: Landmarker, the exported weights file, and `pyg-sdfl predict`.

Most tests use a tiny model trained here for one step (no shipped weights needed): they check
geometry (original-image coordinates, several faces, huge images) and error paths, not accuracy.
The tests of the shipped 300-W weights skip while pyg_sdfl/weights/sdfl_300w.pt is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pyg_sdfl.cli import main
from pyg_sdfl.data.synthetic import SyntheticFaces
from pyg_sdfl.geometry import crop_matrix
from pyg_sdfl.detection import default_box_mapping_path
from pyg_sdfl.engine.checkpoint import CheckpointError
from pyg_sdfl.inference import Face, Landmarker, draw_faces, warp_crop
from pyg_sdfl.weights import pretrained_path

SHIPPED = pretrained_path("300w")
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped weights {SHIPPED.name} are absent "
                                   "(produced by `pyg-sdfl export` from the 300-W run)")


@pytest.fixture(scope="module")
def landmarker(tiny_ckpt) -> Landmarker:
    return Landmarker.from_checkpoint(tiny_ckpt, precision="fp32")  # exact comparisons with the fp32 model


@pytest.fixture(scope="module")
def face():
    """A synthetic face: (image (160, 160, 3) uint8, its landmark box)."""
    image, pts, _ = SyntheticFaces(1, seed=5, image_size=160).render(0)
    return image, np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float64)


def _png(tmp_path: Path, name: str, image: np.ndarray) -> Path:
    path = tmp_path / name
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------------------ geometry
def test_predictions_are_in_original_coordinates(landmarker, face):
    image, box = face
    base = landmarker.predict(image, boxes=[box])
    assert len(base) == 1 and base[0].landmarks.shape == (68, 2) and base[0].score == 1.0
    # pasted at an offset into a bigger canvas: the same crop, shifted landmarks
    canvas = np.zeros((400, 500, 3), np.uint8)
    canvas[70:230, 130:290] = image
    moved = landmarker.predict(canvas, boxes=[box + [130, 70, 130, 70]])
    np.testing.assert_allclose(moved[0].landmarks, base[0].landmarks + [130, 70], atol=1e-6)
    # scaled by 3 (pixel centres: p' = 3 p + 1): the crop is resampled, predictions scale back
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    scaled = landmarker.predict(big, boxes=[3 * box + 1])
    side = box[2] - box[0]
    err = np.abs((scaled[0].landmarks - 1) / 3 - base[0].landmarks).max()
    assert err < 0.03 * side, err
    np.testing.assert_allclose(scaled[0].crop_box, 3 * base[0].crop_box + 1, atol=1e-6)


def test_crop_matches_the_training_crop(landmarker, face):
    """The predicted landmarks are the crop-pixel output mapped through the inverse affine."""
    image, box = face
    out = landmarker.predict(image, boxes=[box])[0]
    cx, cy, side = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1])
    M = crop_matrix((cx, cy), 1.2 * side, 64)
    from pyg_sdfl.data.transforms import normalise_image

    crop = torch.from_numpy(normalise_image(warp_crop(image, M, 64)))[None]
    with torch.no_grad():
        in_crop = landmarker.model(crop)[0].numpy().astype(np.float64)
    back = (in_crop - M[:, 2]) @ np.linalg.inv(M[:, :2]).T
    np.testing.assert_allclose(out.landmarks, back, atol=1e-4)


def test_flip_test_averages_the_photo_and_its_mirror(tiny_ckpt, landmarker, face):
    """flip_test=True equals the mean of the prediction on the photo and the un-mirrored prediction
    on the mirrored photo (x' = W - 1 - x, indices through the scheme's flip permutation)."""
    from pyg_sdfl.data.transforms import flip_landmarks

    image, box = face
    W = image.shape[1]
    flipped = Landmarker.from_checkpoint(tiny_ckpt, flip_test=True, precision="fp32")
    assert "flip_test=True" in repr(flipped)
    averaged = flipped.predict(image, boxes=[box])[0].landmarks
    direct = landmarker.predict(image, boxes=[box])[0].landmarks
    mirror_box = np.array([W - 1 - box[2], box[1], W - 1 - box[0], box[3]])
    on_mirror = landmarker.predict(np.ascontiguousarray(image[:, ::-1]), boxes=[mirror_box])[0].landmarks
    expected = 0.5 * (direct + flip_landmarks(on_mirror, W, landmarker.scheme.flip_permutation))
    # the two views disagree by ~1 px (an untrained model); the mirrored crops differ from a pure
    # tensor mirror only by OpenCV's rounding of bilinear weights (~1e-4 px here)
    gap = np.abs(averaged - direct).max()
    assert gap > 0.1
    assert np.abs(averaged - expected).max() < 0.02 * gap


@pytest.mark.parametrize("offset", [0.89, -2.0])
def test_flip_test_puts_the_labels_offset_back_in_image_pixels(tiny_ckpt, face, offset):
    """With ``annotation_offset_x = b`` the flip average moves every landmark by exactly ``(b, 0)``
    image pixels against ``b = 0`` (the shift ``2 b A[:, 0]`` of the un-mirrored view, halved by the
    average, maps back through the crop matrix to ``b e_x``), whatever the crop's rotation."""
    image, box = face
    plain = Landmarker.from_checkpoint(tiny_ckpt, flip_test=True, precision="fp32", annotation_offset_x=0.0)
    shifted = Landmarker.from_checkpoint(tiny_ckpt, flip_test=True, precision="fp32", annotation_offset_x=offset)
    assert shifted.annotation_offset_x == offset
    move = shifted.predict(image, boxes=[box])[0].landmarks - plain.predict(image, boxes=[box])[0].landmarks
    assert np.allclose(move, [offset, 0.0], atol=1e-3), move[:3]


def test_several_faces_in_one_forward(landmarker, face):
    image, box = face
    pair = np.concatenate([image, image], axis=1)  # the face twice, side by side
    calls = []
    handle = landmarker.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        faces = landmarker.predict(pair, boxes=[box, box + [160, 0, 160, 0]])
    finally:
        handle.remove()
    assert calls == [2]
    assert len(faces) == 2
    np.testing.assert_allclose(faces[1].landmarks, faces[0].landmarks + [160, 0], atol=1e-4)
    assert landmarker.predict(pair, boxes=[]) == []


def test_huge_image(landmarker, face):
    image, box = face
    base = landmarker.predict(image, boxes=[box])[0]
    huge = np.zeros((4000, 6000, 3), np.uint8)
    k = 12.0
    face_big = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)  # 1920 x 1920
    huge[1000:2920, 3000:4920] = face_big
    big_box = k * (box + 0.5) - 0.5 + [3000, 1000, 3000, 1000]
    out = landmarker.predict(huge, boxes=[big_box])[0]
    back = (out.landmarks - [3000, 1000] + 0.5) / k - 0.5
    assert np.abs(back - base.landmarks).max() < 0.03 * (box[2] - box[0])
    # the detector runs on a <= 1024 px copy; whatever it finds must be the pasted face
    for found in landmarker.predict(huge):
        centre = (found.box[:2] + found.box[2:]) / 2
        assert big_box[0] < centre[0] < big_box[2] and big_box[1] < centre[1] < big_box[3], found.box
    assert landmarker.predict(np.zeros((4000, 6000, 3), np.uint8)) == []


def test_warp_crop_antialiases_large_downscales():
    rng = np.random.default_rng(0)
    stripes = np.zeros((1200, 1200, 3), np.uint8)
    stripes[:, ::2] = 255  # a pattern that aliases badly when point-sampled
    stripes[:600] = (rng.random((600, 1200, 1)) * 255).astype(np.uint8)
    M = crop_matrix((600, 600), 1200, 64)
    crop = warp_crop(stripes, M, 64).astype(np.float64)
    plain = cv2.warpAffine(stripes, M, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float64)
    assert np.abs(plain[40:] - 127.5).max() > 50  # the pattern does alias under one bilinear warp
    assert np.abs(crop[40:] - 127.5).max() <= 2  # the stripes average to grey everywhere
    reference = cv2.resize(stripes, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(crop[:30] - reference[:30]).mean() < 6  # the noise half: as an area resize
    # small downscales use one plain warp
    M2 = crop_matrix((600, 600), 96, 64)
    np.testing.assert_array_equal(warp_crop(stripes, M2, 64), cv2.warpAffine(stripes, M2, (64, 64), flags=cv2.INTER_LINEAR))


@pytest.mark.parametrize("centre, side, angle, offset", [((1300.0, 1000.0), 900, 0.0, (-0.1, 0.05)),
                                                         ((2950.0, 1000.0), 700, 20.0, (-0.1, 0.05)),
                                                         ((60.0, 1960.0), 1500, -35.0, (0.1, -0.05))])
def test_warp_crop_keeps_positions_when_it_reduces_first(centre, side, angle, offset):
    """A blob lands where the crop matrix sends its centre, to 0.015 crop px (half an image pixel is 0.02 or more), also where the crop runs
    past the image's edge (the reduced region is then padded with black)."""
    blob = np.array([centre[0] + offset[0] * side + 0.25, centre[1] + offset[1] * side - 0.5])
    ys, xs = np.mgrid[0:2000, 0:3000]
    sigma = side / 40
    image = np.exp(-((xs - blob[0]) ** 2 + (ys - blob[1]) ** 2) / (2 * sigma**2))
    image = np.repeat((255 * image).astype(np.uint8)[..., None], 3, axis=2)
    M = crop_matrix(centre, side, 64, rotation_deg=angle)
    assert np.sqrt(abs(np.linalg.det(M[:, :2]))) * 2 < 1 / 4  # three or more halvings
    crop = warp_crop(image, M, 64)[..., 0].astype(np.float64)
    gy, gx = np.mgrid[0:64, 0:64]
    found = np.array([(crop * gx).sum(), (crop * gy).sum()]) / crop.sum()
    np.testing.assert_allclose(found, M[:, :2] @ blob + M[:, 2], atol=0.015)


def test_predict_input_errors(landmarker, face, tmp_path):
    image, box = face
    from pyg_sdfl.data.sample import ImageLoadError

    with pytest.raises(ImageLoadError, match="not found"):
        landmarker.predict(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="x1 <= x0"):
        landmarker.predict(image, boxes=[[50, 50, 40, 90]])
    with pytest.raises(ValueError, match="outside"):
        landmarker.predict(image, boxes=[[500, 500, 600, 600]])
    with pytest.raises(ValueError, match="box_type"):
        landmarker.predict(image, boxes=[box], box_type="face")
    with pytest.raises(ImageLoadError, match="uint8"):
        landmarker.predict(image.astype(np.float32))


def test_photos_are_read_upright(landmarker, face, tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to display)."""
    from PIL import Image

    image, box = face
    stored = np.ascontiguousarray(np.rot90(image, k=1))  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = landmarker.load_image(path)
    assert upright.shape == image.shape
    assert np.abs(upright.astype(int) - image.astype(int)).mean() < 6  # JPEG noise only
    assert len(landmarker.predict(path, boxes=[box])) == 1


def test_draw_faces(face):
    image, box = face
    f = Face(box=box, landmarks=np.full((68, 2), 80.0), score=1.0, crop_box=box)
    drawn = draw_faces(image, [f])
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert np.array_equal(image, face[0])  # the input is not drawn on


# ------------------------------------------------------------------------------ weights
def test_from_pretrained_names_the_missing_file(monkeypatch, tmp_path):
    import pyg_sdfl.weights as weights

    monkeypatch.setattr(weights, "pretrained_path", lambda name: tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="nothing.pt is missing"):
        Landmarker.from_pretrained("300w")
    with pytest.raises(ValueError, match="unknown pretrained"):
        pretrained_path("nosuch")


# ------------------------------------------------------------------------------ CLI
def test_cli_predict_json_and_annotated_png(tiny_ckpt, face, tmp_path, capsys):
    image, box = face
    a, b = _png(tmp_path, "a.png", image), _png(tmp_path, "b.png", image)
    rc = main(["predict", str(a), str(b), "--checkpoint", str(tiny_ckpt), "--box", *map(str, box),
               "--out", str(tmp_path / "ann.png"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    payload = json.loads(captured.out)
    assert [p["image"] for p in payload] == [str(a), str(b)]
    first = payload[0]["faces"][0]
    assert first["box"] == pytest.approx(box.tolist(), abs=0.01) and first["score"] == 1.0
    assert np.asarray(first["landmarks"]).shape == (68, 2)
    for index in (0, 1):
        drawn = cv2.imread(str(tmp_path / f"ann_{index}.png"))
        assert drawn is not None and drawn.shape == image.shape


def test_cli_predict_no_face_exits_1(tiny_ckpt, tmp_path, capsys):
    if not default_box_mapping_path().is_file():
        pytest.skip("pyg_sdfl/weights/haar_box_mapping.json is absent")
    blank = _png(tmp_path, "blank.png", np.full((240, 320, 3), 90, np.uint8))
    rc = main(["predict", str(blank), "--checkpoint", str(tiny_ckpt)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"no face found in {blank}" in err


@pytest.mark.parametrize("case", ["missing", "not_an_image", "bad_box", "bad_out", "missing_checkpoint"])
def test_cli_predict_errors_exit_2(case, tiny_ckpt, face, tmp_path, capsys):
    image, box = face
    good = _png(tmp_path, "good.png", image)
    args = {
        "missing": [str(tmp_path / "nope.jpg"), "--checkpoint", str(tiny_ckpt)],
        "not_an_image": [str(tmp_path / "text.jpg"), "--checkpoint", str(tiny_ckpt)],
        "bad_box": [str(good), "--checkpoint", str(tiny_ckpt), "--box", "50", "50", "10", "90"],
        "bad_out": [str(good), "--checkpoint", str(tiny_ckpt), "--box", *map(str, box), "--out", str(tmp_path / "x.txt")],
        "missing_checkpoint": [str(good), "--checkpoint", str(tmp_path / "none.ckpt")],
    }[case]
    (tmp_path / "text.jpg").write_text("this is not a picture")
    rc = main(["predict", *args])
    err = capsys.readouterr().err
    assert rc == 2
    expected = {"missing": "image file not found: " + str(tmp_path / "nope.jpg"),
                "not_an_image": "not an image", "bad_box": "--box 50 50 10 90",
                "bad_out": ".png", "missing_checkpoint": "checkpoint not found"}[case]
    assert expected in err and err.startswith("pyg-sdfl predict: error:")


def _truncated_jpeg(tmp_path: Path, image: np.ndarray, name: str = "cut.jpg") -> Path:
    full = tmp_path / f"full_{name}"
    assert cv2.imwrite(str(full), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_is_not_predicted_on(landmarker, face, tmp_path):
    """OpenCV alone decodes it with grey rows and predict gave landmarks on them (exit 0), or
    "no face found" without --box; now it is an ImageLoadError naming the file."""
    from pyg_sdfl.data.sample import ImageLoadError

    image, box = face
    cut = _truncated_jpeg(tmp_path, image)
    with pytest.raises(ImageLoadError, match=r"truncated JPEG.*cut.jpg"):
        landmarker.predict(cut, boxes=[box])


@pytest.mark.parametrize("with_box", [True, False])
def test_cli_predict_truncated_jpeg_exits_2_naming_it(tiny_ckpt, face, tmp_path, capsys, with_box):
    image, box = face
    cut = _truncated_jpeg(tmp_path, image)
    rc = main(["predict", str(cut), "--checkpoint", str(tiny_ckpt)] + (["--box", *map(str, box)] if with_box else []))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("pyg-sdfl predict: error: truncated JPEG") and str(cut) in err
    assert "no face found" not in err and len(err.strip().splitlines()) == 1


def test_cli_predict_keeps_the_good_results_when_one_image_is_bad(tiny_ckpt, face, tmp_path, capsys):
    image, box = face
    a, c = _png(tmp_path, "a.png", image), _png(tmp_path, "c.png", image)
    bad = _truncated_jpeg(tmp_path, image, "bad.jpg")
    missing = tmp_path / "missing.png"
    rc = main(["predict", str(a), str(bad), str(c), str(missing), "--checkpoint", str(tiny_ckpt),
               "--box", *map(str, box), "--out", str(tmp_path / "ann.png"), "--json"])
    captured = capsys.readouterr()
    assert rc == 2
    payload = json.loads(captured.out)
    assert [p["image"] for p in payload] == [str(a), str(bad), str(c), str(missing)]
    for good, index in ((payload[0], 0), (payload[2], 2)):
        assert len(good["faces"]) == 1 and "error" not in good
        assert good["annotated"] == str(tmp_path / f"ann_{index}.png") and Path(good["annotated"]).is_file()
    assert payload[0]["faces"] == payload[2]["faces"]
    assert "truncated JPEG" in payload[1]["error"] and str(bad) in payload[1]["error"] and "faces" not in payload[1]
    assert "not found" in payload[3]["error"]
    assert not (tmp_path / "ann_1.png").exists() and not (tmp_path / "ann_3.png").exists()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("pyg-sdfl predict: error: ") for line in lines)
    assert str(bad) in lines[0] and str(missing) in lines[1]
    # text mode: the good images are listed, the same exit code
    rc = main(["predict", str(a), str(bad), "--checkpoint", str(tiny_ckpt), "--box", *map(str, box)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out.startswith(f"{a}: 1 face(s)") and str(bad) not in captured.out


def test_cli_predict_a_box_outside_one_image_fails_that_image_only(tiny_ckpt, face, tmp_path, capsys):
    image, box = face
    small = _png(tmp_path, "small.png", image[:40, :40])
    big = _png(tmp_path, "big.png", image)
    rc = main(["predict", str(small), str(big), "--checkpoint", str(tiny_ckpt), "--box", "60", "60", "120", "120",
               "--json"])
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert rc == 2 and "outside" in payload[0]["error"] and len(payload[1]["faces"]) == 1
    assert captured.err.strip() == f"pyg-sdfl predict: error: {payload[0]['error']}" and str(small) in captured.err


def test_cli_predict_huge_image_is_one_line_naming_it(tiny_ckpt, tmp_path, capsys):
    """A 400-megapixel header (above MAX_IMAGE_PIXELS): one line naming the file, no traceback,
    no decoding. (PIL's DecompressionBombError used to escape as a traceback from 179 MP on.)"""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    giant = tmp_path / "giant.png"
    giant.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                      + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    rc = main(["predict", str(giant), "--checkpoint", str(tiny_ckpt)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pyg-sdfl predict: error: image too large: 20000 x 20000") and str(giant) in err


# ------------------------------------------------------------------------------ shipped weights
@needs_shipped
def test_shipped_weights_load_strictly_and_are_small():
    assert SHIPPED.stat().st_size <= 30 * 2**20
    raw = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert raw["scheme"] == "300w" and raw["box_mapping"] is not None
    lm = Landmarker.from_pretrained()  # strict: every key and shape must match the rebuilt model
    assert lm.scheme.num_points == 68 and lm.box_mapping is not None


@needs_shipped
def test_shipped_weights_on_real_test_faces(w300_root):
    """LFPW test faces (never used for training or model selection), ground-truth landmark box
    given: a loose bound on the mean NME (inter-ocular), and the Haar detector path."""
    from pyg_sdfl.data import read_300w
    from pyg_sdfl.metrics import nme

    lm = Landmarker.from_pretrained()
    samples = read_300w(w300_root, folders=["test/lfpw"])[::28][:8]
    preds, targets = [], []
    detected_err = []
    for s in samples:
        image = s.load_image()
        pts = s.landmarks.astype(np.float64)
        faces = lm.predict(image, boxes=[np.concatenate([pts.min(axis=0), pts.max(axis=0)])])
        preds.append(faces[0].landmarks)
        targets.append(pts)
        found = lm.predict(image)  # Haar detector + fitted mapping
        if found:
            best = min(found, key=lambda f: np.linalg.norm(f.landmarks.mean(axis=0) - pts.mean(axis=0)))
            detected_err.append(float(nme(best.landmarks[None], pts[None], "300w")[0]))
    errors = nme(np.stack(preds), np.stack(targets), "300w")
    assert errors.mean() < 0.15, errors
    assert len(detected_err) >= 4, f"the detector found only {len(detected_err)} of {len(samples)} faces"
    assert np.median(detected_err) < 0.15, detected_err


FAST = {"300w-fast": 128, "300w-fast-160": 160}  # the small models and their crop sizes


def lfpw_errors_in_landmark_boxes(lm: Landmarker, w300_root) -> np.ndarray:
    """Per-face NME (inter-ocular) of ``lm`` on 8 LFPW test faces (never trained or selected on),
    each given its ground-truth landmark box: the accuracy protocol's crop, one pass."""
    from pyg_sdfl.data import read_300w
    from pyg_sdfl.metrics import nme

    samples = read_300w(w300_root, folders=["test/lfpw"])[::28][:8]
    preds = [lm.predict(s.load_image(), boxes=[np.concatenate([s.landmarks.min(axis=0), s.landmarks.max(axis=0)])])[0]
             .landmarks for s in samples]
    return nme(np.stack(preds), np.stack([s.landmarks for s in samples]), "300w")


def test_shipped_models_are_listed_by_one_function():
    from pyg_sdfl.weights import PRETRAINED, available_pretrained

    assert set(PRETRAINED) == {"300w", "300w-160", *FAST}
    assert available_pretrained() == [name for name in PRETRAINED if pretrained_path(name).is_file()]
    with pytest.raises(ValueError, match=r"unknown pretrained model 'wflw'; known: "
                                         r"\['300w', '300w-160', '300w-fast', '300w-fast-160'\]"):
        pretrained_path("wflw")


def test_the_160_px_accurate_model_is_int8_stored_and_loads_strictly():
    """300w-160: the accurate network at 160 px, its weights stored in int8 (format 2) to keep the
    repository small; strict load, every weight read back in fp32 as s_o q."""
    path = pretrained_path("300w-160")
    if not path.is_file():
        pytest.skip(f"{path.name} is absent")
    assert path.stat().st_size <= 15 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == 2 and raw["config"]["backbone"]["name"] == "resnet18" and raw["int8_scales"]
    lm = Landmarker.from_pretrained("300w-160", precision="fp32")
    assert lm.image_size == 160 and lm.scheme.num_points == 68 and lm.box_mapping is not None
    state = lm.model.state_dict()
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())
    for key, scale in raw["int8_scales"].items():
        q = raw["model"][key]
        assert torch.equal(state[key], q.float() * scale.view(-1, *[1] * (q.dim() - 1))), key


def test_the_160_px_accurate_model_predicts_real_faces(w300_root):
    """A loose NME bound on real LFPW test faces (never trained or selected on), through the
    accuracy protocol's crop."""
    if not pretrained_path("300w-160").is_file():
        pytest.skip("sdfl_300w_160.pt is absent")
    errors = lfpw_errors_in_landmark_boxes(Landmarker.from_pretrained("300w-160", precision="fp32"), w300_root)
    assert errors.mean() < 0.06, errors


@pytest.mark.parametrize("name", list(FAST))
def test_fast_model_loads_strictly_is_small_and_predicts_real_faces(name, w300_root):
    """A small model: under 10 MB, strict load, and on real LFPW test faces (never trained or
    selected on) a loose bound on the NME through the accuracy protocol's crop."""
    path = pretrained_path(name)
    if not path.is_file():
        pytest.skip(f"{path.name} is absent")
    assert path.stat().st_size <= 10 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["scheme"] == "300w" and raw["config"]["backbone"]["name"] == "mobilenetv2_050"
    lm = Landmarker.from_pretrained(name, precision="fp32", detector="haar")
    assert lm.image_size == FAST[name] and lm.scheme.num_points == 68
    errors = lfpw_errors_in_landmark_boxes(lm, w300_root)
    assert errors.mean() < 0.08, errors


def test_cli_threads_sets_the_runtime_threads_and_refuses_zero(tiny_ckpt, face, tmp_path, capsys):
    path = _png(tmp_path, "face.png", face[0])
    before = torch.get_num_threads()
    try:
        assert main(["predict", str(path), "--checkpoint", str(tiny_ckpt), "--threads", "1", "--detector", "haar",
                     "--out", str(tmp_path / "out.png")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(path), "--checkpoint", str(tiny_ckpt), "--threads", "0"])
    assert exit_info.value.code == 2 and "--threads: expected a whole number >= 1, got 0" in capsys.readouterr().err


def test_cli_checkpoint_and_model_together_are_refused(tiny_ckpt, face, tmp_path, capsys):
    path = _png(tmp_path, "face.png", face[0])
    assert main(["predict", str(path), "--checkpoint", str(tiny_ckpt), "--model", "300w-fast"]) == 2
    assert "give --checkpoint FILE or --model NAME, not both" in capsys.readouterr().err


def test_cli_predict_an_empty_file_is_one_line_and_loads_no_model(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["predict", str(empty), "--checkpoint", str(tmp_path / "absent.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty (0 bytes)" in err  # the missing checkpoint is never opened
