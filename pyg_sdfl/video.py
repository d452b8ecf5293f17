"""Landmarks on video files: read frames, track the faces, write an annotated copy and JSON Lines.

    from pyg_sdfl.inference import Landmarker
    from pyg_sdfl.video import annotate_video

    stats = annotate_video(Landmarker.from_pretrained(), "clip.mp4", out_path="clip_faces.mp4",
                           jsonl_path="clip_faces.jsonl")
    stats["frames"], stats["faces"], stats["detector_runs"]

Reading uses :class:`cv2.VideoCapture` (the FFmpeg backend of ``opencv-python-headless``: mp4,
mov, avi, mkv, webm, ...). A file that is missing, cannot be opened or has no readable first frame
is a :class:`VideoError` naming it. FFmpeg's own console messages are silenced (set
``OPENCV_FFMPEG_LOGLEVEL``, e.g. to 24, before the first video is opened to see them).

Writing (:class:`VideoWriter`) supports two containers, chosen by the output's suffix:
``.mp4`` (MPEG-4 Part 2, fourcc ``mp4v``: the only mp4 encoder that the pip OpenCV wheels carry;
H.264 is not among them) and ``.avi`` (Motion JPEG, fourcc ``MJPG``: larger files, every frame a
JPEG). Any other suffix is a :class:`VideoError`. Both encoders need even frame sides: a frame
with an odd width or height is padded with one black column or row at the right or bottom (pixel
coordinates, and so the drawn landmarks, are unchanged).
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Tuple, Union

import cv2
import numpy as np

from pyg_sdfl.data.sample import as_rgb_uint8
from pyg_sdfl.image_folder import JsonlWriter
from pyg_sdfl.inference import draw_faces

__all__ = ["VIDEO_WRITE_FORMATS", "VideoError", "VideoInfo", "VideoReader", "VideoWriter", "annotate_video"]

VIDEO_WRITE_FORMATS: Dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}
"""Output suffix -> the fourcc written (see the module docstring)."""

DEFAULT_FPS = 25.0
"""The frame rate written when the input's is unknown (0 or not a number in its header)."""

PathLike = Union[str, os.PathLike]


class VideoError(ValueError):
    """A video file that cannot be opened, read or written (the message names it)."""


def _quiet_ffmpeg() -> None:
    # read by OpenCV when it first initialises FFmpeg; -8 is AV_LOG_QUIET
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: ``fps`` and ``frame_count`` are ``None`` when it does not say
    (a frame count from the header can be approximate for some containers)."""

    path: Path
    width: int
    height: int
    fps: Optional[float]
    frame_count: Optional[int]


class VideoReader:
    """The frames of a video file as ``(H, W, 3)`` uint8 RGB arrays, in order.

    Opening reads the first frame, so that a file OpenCV opens but cannot decode fails here, with
    a :class:`VideoError`, and not after a model was loaded. Iterate once; use as a context manager
    (or call :meth:`close`).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"video file not found: {self.path}")
        _quiet_ffmpeg()
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoError(f"cannot open video file (not a video, or a format OpenCV's FFmpeg cannot read): {self.path}")
        ok, first = self._cap.read()
        if not ok or first is None or first.size == 0:
            self._cap.release()
            raise VideoError(f"video file has no readable frame (empty or corrupt): {self.path}")
        self._first: Optional[np.ndarray] = first
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.info = VideoInfo(
            path=self.path, width=int(first.shape[1]), height=int(first.shape[0]),
            fps=fps if np.isfinite(fps) and 0 < fps < 1000 else None,
            frame_count=int(count) if np.isfinite(count) and 0 < count < 2**40 else None,
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def frames(self) -> Iterator[np.ndarray]:
        """RGB frames until the video ends (or a frame can no longer be decoded)."""
        if self._first is None:
            raise VideoError(f"the frames of {self.path} were already read (open the video again)")
        frame, self._first = self._first, None
        while frame is not None:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            ok, frame = self._cap.read()
            if not ok:
                frame = None

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VideoWriter:
    """Write RGB frames of one size to ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``); see the module
    docstring. A suffix not in :data:`VIDEO_WRITE_FORMATS`, or a file OpenCV cannot create, is a
    :class:`VideoError` naming it."""

    def __init__(self, path: PathLike, fps: float, size: Tuple[int, int]) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_WRITE_FORMATS:
            raise VideoError(f"cannot write video {self.path}: use a file name ending in "
                             f"{' or '.join(sorted(VIDEO_WRITE_FORMATS))}")
        if not (np.isfinite(fps) and fps > 0):
            raise VideoError(f"cannot write video {self.path}: frame rate must be positive, got {fps!r}")
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise VideoError(f"cannot write video {self.path}: frame size must be positive, got {size!r}")
        self._padded = (self.width + self.width % 2, self.height + self.height % 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _quiet_ffmpeg()
        self.frames_written = 0
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*VIDEO_WRITE_FORMATS[suffix]),
                                       float(fps), self._padded)
        if not self._writer.isOpened():
            raise VideoError(f"cannot write video {self.path} (OpenCV could not open it for writing)")

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 RGB frame."""
        frame = as_rgb_uint8(frame, f"frame {self.frames_written} for {self.path}")
        if frame.shape[:2] != (self.height, self.width):
            raise VideoError(f"frame {self.frames_written} for {self.path} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the video is {self.width}x{self.height}")
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if self._padded != (self.width, self.height):
            bgr = cv2.copyMakeBorder(bgr, 0, self._padded[1] - self.height, 0, self._padded[0] - self.width,
                                     cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(bgr)
        self.frames_written += 1

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def annotate_video(landmarker: Union[Any, Callable[[], Any]], in_path: PathLike, out_path: Optional[PathLike] = None,
                   jsonl_path: Optional[PathLike] = None, progress: bool = True, decimals: int = 2) -> Dict[str, Any]:
    """Track the faces of a video with ``landmarker.track``; write an annotated copy and/or JSON Lines.

    Args:
        landmarker: a :class:`~pyg_sdfl.inference.Landmarker`, or a zero-argument callable returning
            one, called once the video is known to be readable (no model load for a bad file).
        in_path: the video to read (:class:`VideoReader`).
        out_path: ``.mp4`` or ``.avi``: every frame with its faces drawn by
            :func:`~pyg_sdfl.inference.draw_faces`, at the input's frame rate (25 when unknown).
        jsonl_path: one line per frame, ``{"frame": i, "time_s": i / fps (None when the frame rate
            is unknown), "faces": [Face.to_dict(), ...]}``.
        progress: a tqdm bar on stderr (total: the header's frame count, when it has one).

    Returns:
        ``{"video", "frames", "faces", "frames_with_faces", "detector_runs", "seconds", "fps",
        "video_fps", "width", "height", "out", "jsonl", "track"}``: ``fps`` is the processing speed
        (frames per second of wall time), ``video_fps`` the input's frame rate, ``track`` the
        tracker's :attr:`last_track_stats`. ``VideoError`` for an unreadable input, an output
        that cannot be written, or ``out_path`` naming the input itself.
    """
    if out_path is None and jsonl_path is None:
        raise ValueError("annotate_video: give out_path and/or jsonl_path (nothing would be written)")
    in_path = Path(in_path)
    if out_path is not None:
        out_path = Path(out_path)
        if out_path.suffix.lower() not in VIDEO_WRITE_FORMATS:  # before reading anything
            raise VideoError(f"cannot write video {out_path}: use a file name ending in "
                             f"{' or '.join(sorted(VIDEO_WRITE_FORMATS))}")
        if out_path.exists() and in_path.exists() and out_path.resolve() == in_path.resolve():
            raise VideoError(f"the output video is the input video: {out_path}")
    from tqdm.auto import tqdm

    with VideoReader(in_path) as reader:
        info = reader.info
        model = landmarker if hasattr(landmarker, "track") else landmarker()
        start = time.perf_counter()  # the processing speed, without the model's loading
        video_fps = info.fps
        writer = VideoWriter(out_path, video_fps or DEFAULT_FPS, (info.width, info.height)) if out_path else None
        lines = JsonlWriter(jsonl_path) if jsonl_path is not None else None
        fed: Deque[np.ndarray] = deque()  # frames given to the tracker whose faces have not come back yet

        def frames() -> Iterator[np.ndarray]:
            for frame in reader.frames():
                fed.append(frame)
                yield frame

        bar = tqdm(total=info.frame_count, unit="frame", desc=in_path.name, file=sys.stderr, disable=not progress,
                   leave=False)
        count = faces_total = with_faces = 0
        try:
            for index, faces in enumerate(model.track(frames())):
                frame = fed.popleft()
                faces = list(faces)
                count += 1
                faces_total += len(faces)
                with_faces += bool(faces)
                if writer is not None:
                    writer.write(draw_faces(frame, faces))
                if lines is not None:
                    time_s = round(index / video_fps, 4) if video_fps else None
                    lines.write({"frame": index, "time_s": time_s, "faces": [f.to_dict(decimals) for f in faces]})
                bar.update(1)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if lines is not None:
                lines.close()
    seconds = time.perf_counter() - start
    track = dict(getattr(model, "last_track_stats", None) or {})
    return {
        "video": str(in_path), "frames": count, "faces": faces_total, "frames_with_faces": with_faces,
        "detector_runs": track.get("detector_runs"), "seconds": round(seconds, 3),
        "fps": round(count / seconds, 2) if seconds > 0 else None, "video_fps": video_fps,
        "width": info.width, "height": info.height,
        "out": str(out_path) if out_path is not None else None,
        "jsonl": str(jsonl_path) if jsonl_path is not None else None, "track": track,
    }
