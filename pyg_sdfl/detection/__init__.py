"""Face detection for photos, and the link between a detector's boxes and the model's crops.

:mod:`.base` says what a detector is (the :class:`Detector` protocol, :class:`Detection`);
:mod:`.yuface` (libfacedetection, the Landmarker's default; a dependency on CPython 3.11 x86-64
Linux, else the ``[yuface]`` extra), :mod:`.haar` (OpenCV, always installed), :mod:`.mtcnn`
(``[mtcnn]`` extra) and :mod:`.dlib` (``[peers]`` extra) are detectors; :mod:`.registry` builds any registered detector by name
(one YAML per detector in ``pyg_sdfl/configs/detector``: :func:`create_detector`,
:func:`available_detectors`, :func:`detector_from_record`); :mod:`.mapping` relates a
detector's box to the face's landmark square, both ways. Box geometry (IoU, matching, squares)
is :mod:`pyg_sdfl.geometry`.
"""
from pyg_sdfl.detection.base import Detection, Detector, check_detections, check_image
from pyg_sdfl.detection.dlib import PEERS_EXTRA_HINT, DlibFaceDetector, box_to_rectangle, rectangle_to_box, require_dlib
from pyg_sdfl.detection.haar import HAAR_CASCADE, HaarFaceDetector
from pyg_sdfl.detection.registry import (
    available_detectors,
    create_detector,
    detector_config,
    detector_from_record,
    detector_parameters,
    installed_detectors,
)
from pyg_sdfl.detection.yuface import YUFACE_EXTRA_HINT, YuFaceDetector, require_yuface
from pyg_sdfl.detection.mapping import (
    BoxMapping,
    BoxStyle,
    DetectorBoxModel,
    collect_box_pairs,
    default_box_mapping_path,
    fit_box_mapping,
    fit_box_style,
    load_default_box_mapping,
    mapping_errors,
    summarize_errors,
)

__all__ = [
    "HAAR_CASCADE",
    "PEERS_EXTRA_HINT",
    "YUFACE_EXTRA_HINT",
    "BoxMapping",
    "BoxStyle",
    "Detection",
    "Detector",
    "DetectorBoxModel",
    "DlibFaceDetector",
    "HaarFaceDetector",
    "YuFaceDetector",
    "available_detectors",
    "box_to_rectangle",
    "check_detections",
    "check_image",
    "collect_box_pairs",
    "create_detector",
    "default_box_mapping_path",
    "detector_config",
    "detector_from_record",
    "detector_parameters",
    "fit_box_mapping",
    "fit_box_style",
    "installed_detectors",
    "load_default_box_mapping",
    "mapping_errors",
    "rectangle_to_box",
    "require_dlib",
    "require_yuface",
    "summarize_errors",
]
