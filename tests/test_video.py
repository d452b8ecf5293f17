"""Video files: reading, writing (mp4v / MJPG, odd sizes), and annotate_video end to end."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyg_sdfl.inference import Face, Landmarker
from pyg_sdfl.video import VideoError, VideoReader, VideoWriter, annotate_video

FRAMES = 12


def _write_video(path: Path, frames, fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _read_back(path: Path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def face_video(w300_root, tmp_path_factory) -> Path:
    """A 300-W test face (160 px) moving along a path across a 320x240 grey frame, 12 frames at 10 fps."""
    from pyg_sdfl.data.sample import read_image

    face = cv2.resize(read_image(w300_root / "test" / "lfpw" / "image_0002.jpg"), (160, 160),
                      interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(FRAMES):
        frame = np.full((240, 320, 3), 110, np.uint8)
        x, y = 10 + 12 * i, 40 + int(20 * np.sin(i / 3))
        frame[y:y + 160, x:x + 160] = face
        frames.append(frame)
    return _write_video(tmp_path_factory.mktemp("video") / "walk.mp4", frames)


@pytest.fixture(scope="module")
def landmarker(tiny_ckpt) -> Landmarker:
    return Landmarker.from_checkpoint(tiny_ckpt)


def test_annotate_video_end_to_end(landmarker, face_video, tmp_path):
    out, lines = tmp_path / "out" / "walk_faces.mp4", tmp_path / "walk.jsonl"
    stats = annotate_video(landmarker, face_video, out_path=out, jsonl_path=lines, progress=False)
    assert stats["frames"] == FRAMES and stats["video_fps"] == pytest.approx(10.0)
    assert (stats["width"], stats["height"]) == (320, 240)
    assert stats["frames_with_faces"] >= FRAMES // 2, stats  # the Haar detector sees this face
    assert 1 <= stats["detector_runs"] <= FRAMES and stats["track"] == landmarker.last_track_stats
    written = _read_back(out)
    original = _read_back(face_video)
    assert len(written) == FRAMES and written[0].shape == (240, 320, 3)
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time_s"] for r in records] == pytest.approx([i / 10.0 for i in range(FRAMES)])
    assert sum(len(r["faces"]) for r in records) == stats["faces"]
    for r, before, after in zip(records, original, written):
        drawn = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 60  # beyond codec noise
        assert drawn.any() == bool(r["faces"]), r["frame"]
        for f in r["faces"]:
            assert np.asarray(f["landmarks"]).shape == (68, 2)
    # the face moves right by 12 px a frame: so do the detections
    centres = [np.mean(r["faces"][0]["box"][0::2]) for r in records if r["faces"]]
    assert centres[-1] - centres[0] > 60


class LookaheadTracker:
    """A stand-in for Landmarker.track that reads one frame ahead before answering (as a tracker
    that buffers could): each answer's score is its frame's mean, so the pairing can be checked."""

    def __init__(self) -> None:
        self.last_track_stats = {}

    def track(self, frames):
        self.last_track_stats = {"frames": 0, "detector_runs": 0}
        held = None
        for frame in frames:
            if held is not None:
                yield self._faces(held)
            held = frame
        if held is not None:
            yield self._faces(held)

    def _faces(self, frame):
        self.last_track_stats["frames"] += 1
        return [Face(box=np.array([10.0, 10, 60, 60]), landmarks=np.full((68, 2), 30.0), score=float(frame.mean()),
                     crop_box=np.array([0.0, 0, 70, 70]))]


def test_each_frame_is_drawn_with_its_own_faces(tmp_path):
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(6)]
    video = _write_video(tmp_path / "grey.mp4", frames)
    stats = annotate_video(LookaheadTracker(), video, out_path=tmp_path / "o.avi", jsonl_path=tmp_path / "o.jsonl",
                           progress=False)
    assert stats["frames"] == 6 and stats["faces"] == 6 and stats["detector_runs"] == 0
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    scores = [r["faces"][0]["score"] for r in records]
    assert scores == pytest.approx([40.0 * i for i in range(6)], abs=8)  # frame i's faces carry frame i's mean
    assert len(_read_back(tmp_path / "o.avi")) == 6


def test_odd_sized_frames_are_padded_to_even_sides(tmp_path):
    frames = [np.full((47, 65, 3), 200, np.uint8) for _ in range(3)]
    for suffix in (".mp4", ".avi"):
        with VideoWriter(tmp_path / f"odd{suffix}", fps=5, size=(65, 47)) as w:
            for frame in frames:
                w.write(frame)
            with pytest.raises(VideoError, match="is 64x48, the video is 65x47"):
                w.write(np.zeros((48, 64, 3), np.uint8))
        back = _read_back(tmp_path / f"odd{suffix}")
        assert len(back) == 3 and back[0].shape == (48, 66, 3)
        # a black row and column: no pixel was dropped (the encoders crop odd sides), codec blur aside
        assert back[0][:46, :64].mean() > 190 and back[0][47:].mean() < 80 and back[0][:, 65:].mean() < 80
        with VideoReader(tmp_path / f"odd{suffix}") as reader:
            assert (reader.info.width, reader.info.height, reader.info.frame_count) == (66, 48, 3)
            assert reader.info.fps == pytest.approx(5.0)


def test_bad_inputs_and_outputs_are_clear_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    loads = []

    def factory():
        loads.append(1)
        return LookaheadTracker()

    with pytest.raises(VideoError, match=f"cannot open video file .*: {text}"):
        annotate_video(factory, text, jsonl_path=tmp_path / "x.jsonl", progress=False)
    with pytest.raises(VideoError, match=f"video file not found: {tmp_path / 'none.mp4'}"):
        VideoReader(tmp_path / "none.mp4")
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=str(empty)):
        VideoReader(empty)
    assert loads == [] and not (tmp_path / "x.jsonl").exists()  # no model load, nothing written
    video = _write_video(tmp_path / "ok.mp4", [np.zeros((32, 32, 3), np.uint8)] * 2)
    with pytest.raises(VideoError, match=r"use a file name ending in \.avi or \.mp4"):
        annotate_video(factory, video, out_path=tmp_path / "out.mov", progress=False)
    with pytest.raises(VideoError, match="the output video is the input video"):
        annotate_video(factory, video, out_path=video, progress=False)
    with pytest.raises(ValueError, match="out_path and/or jsonl_path"):
        annotate_video(factory, video, progress=False)
    reader = VideoReader(video)
    assert len(list(reader.frames())) == 2
    with pytest.raises(VideoError, match="already read"):
        next(reader.frames())
    reader.close()
