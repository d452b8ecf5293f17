"""The pyg-sdfl command line: graph mining, the train alias, evaluation, and clear errors on bad data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyg_sdfl.graph import LandmarkGraph

CLI = [sys.executable, "-m", "pyg_sdfl.cli"]


def _run(args, cwd, timeout=600):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_graph_on_real_300w(w300_root, tmp_path):
    out = _run(["graph", "--dataset", "300w", "--root", str(w300_root), "--k", "3", "--out", str(tmp_path / "g.pt")], tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["num_nodes"] == 68 and info["num_edges"] == 68 * 4
    graph = LandmarkGraph.load(tmp_path / "g.pt")
    assert graph.edge_index.shape == (2, 272)
    # the outer eye corner's neighbours stay in its eye or brow
    assert set(graph.neighbours(36)) <= set(range(17, 22)) | set(range(36, 42))
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_graph_on_synthetic_faces_needs_no_files(tmp_path):
    out = _run(["graph", "--dataset", "synthetic", "--k", "2", "--mode", "joint", "--out", str(tmp_path / "s.pt")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert LandmarkGraph.load(tmp_path / "s.pt").k == 2


def test_graph_bad_k_is_a_clear_error(tmp_path):
    out = _run(["graph", "--dataset", "synthetic", "--k", "68"], tmp_path)
    assert out.returncode == 2
    assert "error" in out.stderr and "k" in out.stderr


def test_evaluate_missing_checkpoint(tmp_path):
    out = _run(["evaluate", "--checkpoint", str(tmp_path / "nope.ckpt"), "--dataset", "synthetic"], tmp_path)
    assert out.returncode == 2
    assert "checkpoint not found" in out.stderr


def test_train_alias_runs_the_hydra_entry_point(tmp_path):
    out = _run(["train", "dataset.image_size=64", "dataset.train.num_faces=64", "dataset.test.num_faces=8",
                "dataset.val_fraction=0.25", "train.batch_size=16", "train.num_workers=0", "train.epochs=1",
                "train.max_steps_per_epoch=1", "evaluate.grid_faces=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["test"]["all"]["count"] == 8


def test_evaluate_with_and_without_flip_test(tmp_path):
    """`evaluate --flip-test` scores the mirrored-average predictions and says so in its JSON."""
    out = _run(["train", "dataset.image_size=64", "dataset.train.num_faces=32", "dataset.test.num_faces=8",
                "dataset.val_fraction=0.25", "train.batch_size=16", "train.num_workers=0", "train.epochs=1",
                "train.max_steps_per_epoch=1", "evaluate.grid_faces=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = {}
    for flag in ([], ["--flip-test"]):
        out = _run(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.ckpt"), "--dataset", "synthetic",
                    "--device", "cpu"] + flag, tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        payload = json.loads(out.stdout)
        assert payload["flip_test"] is bool(flag)
        scores[bool(flag)] = payload["metrics"]["test"]["all"]["nme"]
    assert scores[True] != scores[False]


# ---- evaluate on bad data: one line on stderr, exit 2 ----

def _write_face(folder: Path, name: str, num_points: int = 68) -> None:
    """A 300-W style face: ``name.pts`` (headered, 1-based) next to ``name.png`` (200x200 noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)  # every face written is the same face
    points = rng.uniform(60, 140, (num_points, 2))
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    (folder / f"{name}.pts").write_text(f"version: 1\nn_points: {num_points}\n{{\n{body}\n}}\n")
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(folder / f"{name}.png")


def _evaluate(checkpoint: Path, root: Path, *extra: str):
    return _run(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "300w", "--root", str(root),
                 "--device", "cpu", *extra], root.parent)


def _one_line_error(out) -> str:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pyg-sdfl evaluate: error: "), out.stderr[-2000:]
    return lines[0]


def test_evaluate_a_67_point_file_names_the_file(tiny_ckpt, tmp_path):
    root = tmp_path / "w300"
    _write_face(root / "test" / "lfpw", "good")
    _write_face(root / "test" / "lfpw", "short", num_points=67)
    line = _one_line_error(_evaluate(tiny_ckpt, root))
    assert line.endswith(f"{root / 'test' / 'lfpw' / 'short.pts'}: expected 68 points, found 67")


@pytest.mark.parametrize("layout, expected", [
    ("empty", "300-W: folder {root}/test not found (expected root/test/<part>/*.pts)"),
    ("missing", "dataset '300w': root folder {root} not found (check dataset.root / --root)"),
])
def test_evaluate_an_empty_or_missing_root_names_it(tiny_ckpt, tmp_path, layout, expected):
    root = tmp_path / "w300"
    if layout == "empty":
        root.mkdir()
    assert _one_line_error(_evaluate(tiny_ckpt, root)).endswith(expected.format(root=root))


def test_evaluate_the_test_split_needs_no_training_folder(tiny_ckpt, tmp_path):
    root = tmp_path / "w300"
    for name in ("a", "b"):
        _write_face(root / "test" / "helen", name)
    out = _evaluate(tiny_ckpt, root, "--split", "test")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["metrics"]["test"]["all"]["count"] == 2
    # val is carved from train: asking for it says which folder is missing
    assert _one_line_error(_evaluate(tiny_ckpt, root, "--split", "val")).endswith(
        f"300-W: folder {root}/train not found (expected root/train/<part>/*.pts)")


def test_evaluate_an_unknown_split_is_a_usage_error(tiny_ckpt, tmp_path):
    out = _evaluate(tiny_ckpt, tmp_path / "w300", "--split", "bogus")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --split: invalid choice: 'bogus' (choose from 'train', 'val', 'test')" in out.stderr


def test_evaluate_scores_training_faces_on_evaluation_crops(tiny_ckpt, tmp_path):
    """Ten copies of one face in train/, one in test/: on plain crops every copy scores exactly as the
    test face does; augmented (rotated, flipped, occluded) crops would not."""
    root = tmp_path / "w300"
    for i in range(10):
        _write_face(root / "train" / "lfpw", f"face_{i}")
    _write_face(root / "test" / "lfpw", "face")
    out = _evaluate(tiny_ckpt, root, "--split", "train", "test")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["train"]["all"]["count"] == 9  # 10 less the validation face (val_fraction 0.1)
    assert metrics["train"]["all"]["nme"] == pytest.approx(metrics["test"]["all"]["nme"], rel=1e-6)


# ---- predict on folders (JSON Lines, resume) and video ----

def _photo_folder(w300_root: Path, tmp_path: Path) -> Path:
    """Two real faces (one in a sub-folder), a truncated JPEG and a blank picture."""
    import cv2

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    lfpw = w300_root / "test" / "lfpw"
    (root / "a_good.jpg").write_bytes((lfpw / "image_0001.jpg").read_bytes())
    (root / "sub" / "b_good.JPG").write_bytes((lfpw / "image_0002.jpg").read_bytes())
    data = (lfpw / "image_0003.jpg").read_bytes()
    (root / "c_cut.jpg").write_bytes(data[: len(data) // 2])
    assert cv2.imwrite(str(root / "d_blank.png"), np.full((240, 320, 3), 90, np.uint8))
    (root / "notes.txt").write_text("not a picture, and not looked at")
    return root


def _jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _count_model_use(monkeypatch):
    """Count checkpoint loads and the images given to Landmarker.predict_batch."""
    from pyg_sdfl.inference import Landmarker

    calls = {"loads": 0, "images": []}
    load, batch = Landmarker.from_checkpoint.__func__, Landmarker.predict_batch

    def counting_load(cls, *args, **kwargs):
        calls["loads"] += 1
        return load(cls, *args, **kwargs)

    def counting_batch(self, images, *args, **kwargs):
        calls["images"].append(len(images))
        return batch(self, images, *args, **kwargs)

    monkeypatch.setattr(Landmarker, "from_checkpoint", classmethod(counting_load))
    monkeypatch.setattr(Landmarker, "predict_batch", counting_batch)
    return calls


def test_predict_a_folder_writes_every_record_and_resumes(w300_root, tiny_ckpt, tmp_path, capsys, monkeypatch):
    from pyg_sdfl.cli import main

    root = _photo_folder(w300_root, tmp_path)
    lines = tmp_path / "faces.jsonl"
    calls = _count_model_use(monkeypatch)
    rc = main(["predict", str(root), "--checkpoint", str(tiny_ckpt), "--jsonl", str(lines), "--json",
               "--workers", "2", "--batch-images", "3"])
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    records = _jsonl(lines)
    order = [root / "a_good.jpg", root / "c_cut.jpg", root / "d_blank.png", root / "sub" / "b_good.JPG"]
    assert [r["image"] for r in records] == [str(p) for p in order]
    assert json.loads(captured.out) == records  # --json prints the records of --jsonl
    good, cut, blank, good2 = records
    assert len(good["faces"]) >= 1 and len(good2["faces"]) >= 1 and np.asarray(good["faces"][0]["landmarks"]).shape == (68, 2)
    assert "truncated JPEG" in cut["error"] and str(order[1]) in cut["error"] and "faces" not in cut
    assert blank["faces"] == []
    err = captured.err.strip().splitlines()
    assert [line for line in err if "error" in line] == [f"pyg-sdfl predict: error: {cut['error']}"]
    assert any(line.startswith(f"pyg-sdfl predict: no face found in {order[2]}") for line in err)
    assert calls["loads"] == 1 and calls["images"] == [3]  # the three readable images in one call

    # resumed: only the failed image is tried again, and it is still unreadable: no model is loaded
    calls["loads"], calls["images"] = 0, []
    rc = main(["predict", str(root), "--checkpoint", str(tiny_ckpt), "--jsonl", str(lines), "--resume"])
    captured = capsys.readouterr()
    assert rc == 2 and calls == {"loads": 0, "images": []}
    assert f"resuming {lines}: 3 image(s) already done, 1 to go" in captured.err
    assert [r["image"] for r in _jsonl(lines)] == [str(p) for p in order] + [str(order[1])]

    # the file is mended: the resumed run predicts that image only, and all is done
    (root / "c_cut.jpg").write_bytes((w300_root / "test" / "lfpw" / "image_0003.jpg").read_bytes())
    rc = main(["predict", str(root), "--checkpoint", str(tiny_ckpt), "--jsonl", str(lines), "--resume"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert calls["loads"] == 1 and calls["images"] == [1]
    assert captured.out.startswith(f"{order[1]}: ") and "face(s)" in captured.out
    final = _jsonl(lines)
    assert len(final) == 6 and final[-1]["image"] == str(order[1]) and len(final[-1]["faces"]) >= 1


def test_predict_an_empty_folder_fails_it_and_goes_on(tiny_ckpt, tmp_path, capsys):
    from pyg_sdfl.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    rc = main(["predict", str(empty), str(tmp_path / "missing.png"), "--checkpoint", str(tiny_ckpt), "--json"])
    captured = capsys.readouterr()
    assert rc == 2
    payload = json.loads(captured.out)
    assert payload[0]["image"] == str(empty) and "no image files in" in payload[0]["error"]
    assert "not found" in payload[1]["error"]
    assert len(captured.err.strip().splitlines()) == 2
    assert main(["predict", str(empty), "--resume"]) == 2
    assert "--resume needs --jsonl" in capsys.readouterr().err


def _face_video(w300_root: Path, path: Path, frames: int = 10) -> Path:
    import cv2

    from pyg_sdfl.data.sample import read_image

    face = cv2.resize(read_image(w300_root / "test" / "lfpw" / "image_0005.jpg"), (150, 150))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (300, 200))
    for i in range(frames):
        frame = np.full((200, 300, 3), 120, np.uint8)
        frame[25:175, 10 + 12 * i:160 + 12 * i] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_writes_the_annotated_copy_and_json_lines(w300_root, tiny_ckpt, tmp_path, capsys):
    import cv2

    from pyg_sdfl.cli import main

    video = _face_video(w300_root, tmp_path / "clip.mp4")
    out, lines = tmp_path / "clip_faces.mp4", tmp_path / "clip.jsonl"
    rc = main(["video", str(video), "--out", str(out), "--jsonl", str(lines), "--checkpoint", str(tiny_ckpt),
               "--passes", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = captured.out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"{video}: 10 frames, ") and "detector runs" in summary[0]
    assert summary[0].endswith(f"frames/s -> {out}, {lines}")
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 300
    cap.release()
    records = _jsonl(lines)
    assert [r["frame"] for r in records] == list(range(10)) and records[1]["time_s"] == pytest.approx(0.125)
    assert sum(bool(r["faces"]) for r in records) >= 5
    assert all("recrop_change" not in f for r in records for f in r["faces"])  # --passes 1: no re-crop


@pytest.mark.parametrize("case", ["not_a_video", "missing", "bad_suffix", "no_output"])
def test_video_errors_are_one_line_and_exit_2(case, tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    args = {"not_a_video": ["notes.mp4", "--out", "o.mp4"], "missing": ["nope.mp4", "--jsonl", "o.jsonl"],
            "bad_suffix": ["notes.mp4", "--out", "o.gif"], "no_output": ["notes.mp4"]}[case]
    out = _run(["video", *args, "--checkpoint", str(tmp_path / "absent.ckpt")], tmp_path, timeout=300)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]  # FFmpeg's own messages included
    assert len(lines) == 1 and lines[0].startswith("pyg-sdfl video: error: "), out.stderr
    expected = {"not_a_video": "cannot open video file", "missing": "video file not found: nope.mp4",
                "bad_suffix": "use a file name ending in .avi or .mp4", "no_output": "--out OUT.mp4"}[case]
    assert expected in lines[0]
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.jsonl").exists()


def test_predict_draws_a_progress_bar_only_on_a_terminal(tiny_ckpt, tmp_path, capsys, monkeypatch):
    """Several images and a terminal: a bar and a closing tally on stderr; --quiet, or stderr not
    a terminal (pipes, logs, CI): neither."""
    import cv2

    from pyg_sdfl.cli import main
    from pyg_sdfl.data.synthetic import SyntheticFaces

    image, pts, _ = SyntheticFaces(1, seed=5, image_size=160).render(0)
    box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    args = ["predict", str(tmp_path), "--checkpoint", str(tiny_ckpt), "--box", *map(str, box), "--workers", "0"]
    assert main(args) == 0
    assert capsys.readouterr().err == ""  # captured: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "predict: 100%" in err and "2/2" in err
    assert err.rstrip().endswith("pyg-sdfl predict: 2 image(s) with faces, 0 without, 0 failed")
    assert main(args + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""
