"""Landmark schemes: how many points, how they mirror, and how faces are normalised.

A scheme is one :class:`LandmarkScheme` declaration registered with :func:`register_scheme`.
All indices are 0-based. "Left"/"right" refer to the *image* (viewer's) left and right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

__all__ = ["LandmarkScheme", "register_scheme", "get_scheme", "available_schemes", "check_flip_permutation", "SCHEMES"]


def check_flip_permutation(perm: Sequence[int], num_points: int, owner: str = "") -> np.ndarray:
    """``perm`` as an int64 array ``(N,)`` if it is a permutation of ``0..N-1`` that is its own
    inverse (mirroring twice is the identity); ``ValueError`` (prefixed with ``owner``) otherwise."""
    prefix = f"{owner}: " if owner else ""
    arr = np.asarray(list(perm), dtype=np.int64)
    if num_points < 1 or arr.shape != (num_points,) or sorted(arr.tolist()) != list(range(num_points)):
        raise ValueError(f"{prefix}flip_permutation is not a permutation of {num_points} points: {list(perm)!r}")
    if not np.array_equal(arr[arr], np.arange(num_points)):
        raise ValueError(f"{prefix}flip_permutation must be an involution (mirroring twice is the identity)")
    return arr


def _permutation_from_pairs(num_points: int, pairs: Iterable[Tuple[int, int]]) -> Tuple[int, ...]:
    perm = list(range(num_points))
    seen = set()
    for a, b in pairs:
        if a in seen or b in seen:
            raise ValueError(f"flip pair ({a}, {b}) reuses an index already paired")
        if not (0 <= a < num_points and 0 <= b < num_points):
            raise ValueError(f"flip pair ({a}, {b}) out of range for {num_points} points")
        perm[a], perm[b] = b, a
        seen.update((a, b))
    return tuple(perm)


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark annotation scheme.

    Attributes:
        name: registry key, e.g. ``"300w"``.
        num_points: N.
        flip_permutation: ``perm`` such that after mirroring an image horizontally, the new
            landmark ``i`` is the mirrored old landmark ``perm[i]``. An involution.
        inter_ocular: indices of the outer eye corners (image left, image right).
        left_pupil / right_pupil: indices whose mean is the pupil centre.
        parts: named groups of indices (jaw, brows, eyes, ...), for plots and sanity checks.
    """

    name: str
    num_points: int
    flip_permutation: Tuple[int, ...]
    inter_ocular: Tuple[int, int]
    left_pupil: Tuple[int, ...]
    right_pupil: Tuple[int, ...]
    parts: Dict[str, Tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_flip_permutation(self.flip_permutation, self.num_points, owner=f"scheme {self.name!r}")
        for idx in (*self.inter_ocular, *self.left_pupil, *self.right_pupil):
            if not 0 <= idx < self.num_points:
                raise ValueError(f"scheme {self.name!r}: index {idx} out of range")
        covered = sorted(i for part in self.parts.values() for i in part)
        if self.parts and covered != list(range(self.num_points)):
            raise ValueError(f"scheme {self.name!r}: parts must cover every point exactly once")

    def part_of(self, index: int) -> str:
        """Name of the facial part that landmark ``index`` belongs to."""
        for part, members in self.parts.items():
            if index in members:
                return part
        raise KeyError(index)

    def check_landmarks(self, landmarks: np.ndarray | Sequence) -> None:
        """Raise ``ValueError`` unless ``landmarks`` has shape ``(..., N, 2)`` for this scheme."""
        shape = tuple(np.shape(landmarks))
        if len(shape) < 2 or shape[-2:] != (self.num_points, 2):
            raise ValueError(
                f"landmarks of shape {shape} do not match scheme {self.name!r}: expected (..., {self.num_points}, 2)"
            )


SCHEMES: Dict[str, LandmarkScheme] = {}


def register_scheme(scheme: LandmarkScheme) -> LandmarkScheme:
    """Add ``scheme`` to the registry (a new scheme is this one call)."""
    if scheme.name in SCHEMES:
        raise ValueError(f"scheme {scheme.name!r} is already registered")
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str | LandmarkScheme) -> LandmarkScheme:
    """Look a scheme up by name; a clear ``KeyError`` lists the known ones."""
    if isinstance(name, LandmarkScheme):
        return name
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None


def available_schemes() -> Tuple[str, ...]:
    return tuple(sorted(SCHEMES))


def _r(a: int, b: int) -> Tuple[int, ...]:
    return tuple(range(a, b))


# 300-W / iBUG 68 points.
IBUG68 = register_scheme(
    LandmarkScheme(
        name="300w",
        num_points=68,
        flip_permutation=_permutation_from_pairs(
            68,
            [(i, 16 - i) for i in range(8)]  # jaw
            + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
            + [(31, 35), (32, 34)]  # nostrils
            + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
            + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
            + [(60, 64), (61, 63), (65, 67)],  # inner lips
        ),
        inter_ocular=(36, 45),
        left_pupil=_r(36, 42),
        right_pupil=_r(42, 48),
        parts={
            "jaw": _r(0, 17),
            "left_brow": _r(17, 22),
            "right_brow": _r(22, 27),
            "nose": _r(27, 36),
            "left_eye": _r(36, 42),
            "right_eye": _r(42, 48),
            "outer_lip": _r(48, 60),
            "inner_lip": _r(60, 68),
        },
    )
)

# WFLW 98 points.
WFLW98 = register_scheme(
    LandmarkScheme(
        name="wflw",
        num_points=98,
        flip_permutation=_permutation_from_pairs(
            98,
            [(i, 32 - i) for i in range(16)]  # jaw
            + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]
            + [(55, 59), (56, 58)]  # nostrils
            + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
            + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]  # outer lips
            + [(88, 92), (89, 91), (93, 95)]  # inner lips
            + [(96, 97)],  # pupils
        ),
        inter_ocular=(60, 72),
        left_pupil=(96,),
        right_pupil=(97,),
        parts={
            "jaw": _r(0, 33),
            "left_brow": _r(33, 42),
            "right_brow": _r(42, 51),
            "nose": _r(51, 60),
            "left_eye": _r(60, 68),
            "right_eye": _r(68, 76),
            "outer_lip": _r(76, 88),
            "inner_lip": _r(88, 96),
            "pupils": (96, 97),
        },
    )
)

# COFW 29 points (0-based; 16/17 are the pupils, 8/9 the outer eye corners).
COFW29 = register_scheme(
    LandmarkScheme(
        name="cofw",
        num_points=29,
        flip_permutation=_permutation_from_pairs(
            29,
            [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)],
        ),
        inter_ocular=(8, 9),
        left_pupil=(16,),
        right_pupil=(17,),
        parts={
            "brows": _r(0, 8),
            "eyes": _r(8, 18),
            "nose": _r(18, 22),
            "mouth": _r(22, 28),
            "chin": (28,),
        },
    )
)
