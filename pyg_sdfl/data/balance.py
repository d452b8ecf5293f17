"""Pose-based data balancing: up-weight rare head poses.

1. Generalised Procrustes analysis: centre every shape, scale it to unit Frobenius norm, and
   rotate it onto the current mean shape (orthogonal Procrustes, no reflection); recompute the
   mean and repeat. What remains is shape, with position, size and in-plane rotation removed.
2. PCA of the aligned shapes (``sklearn.decomposition.PCA``); the first principal component
   mostly encodes yaw on face data.
3. Project each shape on it, cut the projections' range into ``bins`` equal-width bins, and
   weight each face by ``1 / (number of faces in its bin)``, normalised to sum to 1.

Sampling with these weights (``torch.utils.data.WeightedRandomSampler``) draws every non-empty
bin equally often.
"""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

__all__ = ["procrustes_align", "first_component_scores", "pose_balanced_weights"]


def _check_shapes(landmarks: np.ndarray) -> np.ndarray:
    shapes = np.asarray(landmarks, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[2] != 2 or shapes.shape[1] < 2:
        raise ValueError(f"landmarks must have shape (M, N, 2) with N >= 2, got {shapes.shape}")
    if shapes.shape[0] == 0:
        raise ValueError("no shapes given")
    if not np.isfinite(shapes).all():
        raise ValueError("landmarks contain NaN or infinite coordinates")
    return shapes


def _normalise(shapes: np.ndarray) -> np.ndarray:
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=(1, 2), keepdims=True)
    if (norms < 1e-12).any():
        bad = np.flatnonzero(norms.reshape(-1) < 1e-12)[:5].tolist()
        raise ValueError(f"degenerate shapes (all points coincide) at indices {bad}")
    return centred / norms


def _rotate_onto(shapes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate each centred shape ``(M, N, 2)`` onto ``target`` ``(N, 2)`` (least squares, det +1)."""
    cov = np.einsum("mni,nj->mij", shapes, target)  # (M, 2, 2) = X^T Y
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(shapes), 2))
    fix[:, 1] = np.where(d == 0, 1.0, d)
    rot = (u * fix[:, None, :]) @ vt  # R = U diag(1, d) V^T minimises |X R - Y|
    return shapes @ rot


def procrustes_align(landmarks: np.ndarray, iterations: int = 10, tol: float = 1e-9) -> np.ndarray:
    """Generalised Procrustes alignment of ``(M, N, 2)`` shapes; returns aligned ``(M, N, 2)``
    shapes of unit norm (centred, rotated onto their common mean)."""
    shapes = _normalise(_check_shapes(landmarks))
    mean = shapes[0]
    for _ in range(max(1, iterations)):
        aligned = _rotate_onto(shapes, mean)
        new_mean = aligned.mean(axis=0)
        new_mean /= np.linalg.norm(new_mean)
        new_mean = _rotate_onto(new_mean[None], mean)[0]  # keep the reference orientation fixed
        shift = np.linalg.norm(new_mean - mean)
        mean = new_mean
        if shift < tol:
            break
    return _rotate_onto(shapes, mean)


def first_component_scores(landmarks: np.ndarray) -> np.ndarray:
    """Projections ``(M,)`` of the Procrustes-aligned shapes on their first principal component."""
    aligned = procrustes_align(landmarks).reshape(len(landmarks), -1)
    if len(aligned) < 2:
        return np.zeros(len(aligned))
    return PCA(n_components=1, svd_solver="full").fit_transform(aligned)[:, 0]


def pose_balanced_weights(landmarks: np.ndarray, bins: int = 9) -> np.ndarray:
    """Per-face sampling weights ``(M,)`` (float64, summing to 1) that balance head poses.

    ``landmarks`` ``(M, N, 2)`` in any frame (image pixels or crops: the alignment removes
    position, scale and rotation). See the module docstring for the method.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    scores = first_component_scores(landmarks)
    lo, hi = scores.min(), scores.max()
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        return np.full(len(scores), 1.0 / len(scores))
    which = np.minimum(((scores - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    weights = 1.0 / counts[which]
    return weights / weights.sum()
