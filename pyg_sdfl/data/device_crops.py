"""Training crops resampled on the training device, from images packed there once.

The loader path (:class:`~pyg_sdfl.data.dataset.LandmarkDataset` in DataLoader workers) warps each
crop with OpenCV on the CPU. On a GPU that caps training at what the CPU cores can warp (about 820
faces/s at 160 px on a 16-core H200 host; a 256 px crop costs 2.2x), far below what the GPU can
train. Here the same crops come from the device:

1. :class:`ImageBank` packs, once, the pixels of every face that any augmentation draw can reach
   (:func:`reach_radius` around its crop square, clipped to the image) into one flat ``(P, 3)`` uint8
   tensor on the device (the 1,811 faces of 300-W's training split: 256 M pixels, 0.72 GiB).
2. Per batch, the augmentation draws, crop matrices and crop landmarks are the dataset's own
   (:meth:`~pyg_sdfl.data.dataset.LandmarkDataset.augment_params`, ``crop_matrix``,
   ``crop_landmarks``: the same random numbers, epoch by epoch, as the loader path), computed on
   the CPU (microseconds a face), and only the pixels are resampled on the device by
   :func:`warp_bilinear`, OpenCV's ``warpAffine`` (``INTER_LINEAR``, black outside) in float
   arithmetic, rounded to integers as the uint8 crop is; the occluder is painted and the crop
   normalised there too.

The two paths give the same landmarks and matrices, and crops that differ only where OpenCV's
fixed-point arithmetic rounds (it puts the source point on a 1/32 px grid): at most a few grey
levels at sharp edges (``tests/data/test_device_crops.py`` bounds it).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig
from pyg_sdfl.geometry import invert_affine

__all__ = ["DeviceCropLoader", "ImageBank", "reach_radius", "reach_region", "warp_bilinear"]

log = logging.getLogger(__name__)


def reach_radius(side: float, out_size: int, augment: Optional[AugmentConfig]) -> float:
    """How far (image pixels) from its crop square's centre any crop of a face can sample.

    Output pixel centres ``q`` lie in ``[0, S-1]^2`` and the crop centre at ``(S-1)/2 + t`` with the
    shift ``|t_x|, |t_y| <= T`` (``augment.translation``, output pixels), so ``|q - centre| <=
    sqrt(2) ((S-1)/2 + T)``; the inverse crop map scales by ``side / (S z)`` with the zoom ``z >= 1 -
    augment.scale`` and turns (rotation, mirror) without changing lengths. Hence
    ``r = sqrt(2) ((S-1)/2 + T) side / (S (1 - scale))``; ``augment=None`` is the plain crop
    (``T = 0``, ``scale = 0``).
    """
    translation = 0.0 if augment is None else float(augment.translation)
    zoom_out = 1.0 if augment is None else 1.0 - float(augment.scale)
    return math.sqrt(2.0) * ((out_size - 1) / 2.0 + translation) * float(side) / (out_size * zoom_out)


def reach_region(center: Tuple[float, float], radius: float, width: int, height: int) -> Tuple[int, int, int, int]:
    """The image pixels ``(x0, y0, x1, y1)`` (exclusive ends) bilinear sampling can read within
    ``radius`` of ``center``: the 2 x 2 neighbours of every point of that disc, plus one pixel of
    slack for rounding, clipped to the ``width x height`` image (possibly empty)."""
    cx, cy = center
    x0 = max(0, math.floor(cx - radius) - 1)
    y0 = max(0, math.floor(cy - radius) - 1)
    x1 = min(int(width), math.floor(cx + radius) + 3)
    y1 = min(int(height), math.floor(cy + radius) + 3)
    return x0, y0, max(x0, x1), max(y0, y1)


def warp_bilinear(pixels: torch.Tensor, starts: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                  inverse: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample ``B`` packed images into ``(B, S, S, C)`` float32 crops, as ``cv2.warpAffine`` does.

    Args:
        pixels: ``(P, C)`` uint8, the images one after another: pixel ``(x, y)`` of image ``b`` is
            row ``starts[b] + y * widths[b] + x``.
        starts, heights, widths: ``(B,)`` int64, each crop's image (on ``pixels``' device).
        inverse: ``(B, 2, 3)`` float32, crop pixel centre ``q = (x, y)`` -> image pixel centre
            ``u = inverse[:, :, :2] q + inverse[:, :, 2]`` (the inverse of the crop matrix).
        out_size: ``S``.

    ``out[b, y, x] = sum_{dx, dy in {0, 1}} (1 - |u_x - (i + dx)|)(1 - |u_y - (j + dy)|) I_b(i + dx, j + dy)``
    with ``(i, j) = floor(u)`` and ``I_b = 0`` outside the image (``INTER_LINEAR``, ``BORDER_CONSTANT``
    0). In float arithmetic: OpenCV puts ``u`` on a 1/32 px grid and its weights on 15 bits. Not
    rounded; values in ``[0, 255]`` for uint8 pixels.
    """
    if pixels.dtype != torch.uint8 or pixels.dim() != 2:
        raise ValueError(f"pixels must be a (P, C) uint8 tensor, got {tuple(pixels.shape)} {pixels.dtype}")
    if inverse.dim() != 3 or inverse.shape[1:] != (2, 3):
        raise ValueError(f"inverse must have shape (B, 2, 3), got {tuple(inverse.shape)}")
    batch, size, device = inverse.shape[0], int(out_size), pixels.device
    axis = torch.arange(size, device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    inverse = inverse.to(device=device, dtype=torch.float32)
    # (B, S*S) source coordinates of every crop pixel centre
    u = (inverse[:, 0, 0, None] * xs.reshape(1, -1) + inverse[:, 0, 1, None] * ys.reshape(1, -1)
         + inverse[:, 0, 2, None])
    v = (inverse[:, 1, 0, None] * xs.reshape(1, -1) + inverse[:, 1, 1, None] * ys.reshape(1, -1)
         + inverse[:, 1, 2, None])
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.long(), v0.long()
    w_img, h_img, start = widths[:, None], heights[:, None], starts[:, None]
    out = torch.zeros(batch, size * size, pixels.shape[1], device=device, dtype=torch.float32)
    for dy in (0, 1):
        row = v0 + dy
        weight_y = fv if dy else 1.0 - fv
        row_inside = (row >= 0) & (row < h_img)
        for dx in (0, 1):
            col = u0 + dx
            inside = row_inside & (col >= 0) & (col < w_img)
            index = start + row.clamp(min=0) * w_img + col.clamp(min=0)
            index = torch.where(inside, index, 0)  # any valid row (an empty region has none of its own); weight 0
            weight = (fu if dx else 1.0 - fu) * weight_y * inside
            out += weight[..., None] * pixels[index.reshape(-1)].reshape(batch, size * size, -1).float()
    return out.reshape(batch, size, size, pixels.shape[1])


class ImageBank:
    """Every face of a :class:`LandmarkDataset`, the pixels its crops can reach, packed on ``device``.

    Attributes:
        dataset: the dataset whose draws, matrices and landmarks the batches use.
        pixels: ``(P, 3)`` uint8 on ``device``; face ``i``'s region is rows ``starts[i]`` on,
            ``heights[i] x widths[i]`` pixels, its top-left pixel at ``origins[i]`` of the image.
        nbytes: the size of ``pixels``.

    ``announce`` logs the bank's size and build time (off on all but one process of a torchrun job).
    """

    def __init__(self, dataset: LandmarkDataset, device: torch.device | str = "cpu", announce: bool = True) -> None:
        if not isinstance(dataset, LandmarkDataset):
            raise TypeError(f"ImageBank needs a LandmarkDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.device = torch.device(device)
        started = time.perf_counter()
        size = dataset.image_size
        regions, origins, shapes = [], [], []
        for index in range(len(dataset)):
            image = dataset.image(index)
            cx, cy, side = dataset.crop_square(index)
            x0, y0, x1, y1 = reach_region((cx, cy), reach_radius(side, size, dataset.augment),
                                          image.shape[1], image.shape[0])
            # one C-ordered copy: a view would keep the whole decoded picture alive until packing ends
            regions.append(image[y0:y1, x0:x1].copy().reshape(-1, 3))
            origins.append((x0, y0))
            shapes.append((y1 - y0, x1 - x0))
        counts = [h * w for h, w in shapes]
        # at least one row: the sampler points weightless reads at row 0 (a face whose crop lies wholly
        # outside its picture has an empty region and comes out black, as OpenCV makes it)
        self.pixels = torch.zeros((max(sum(counts), 1), 3), dtype=torch.uint8, device=self.device)
        offset = 0
        for region, count in zip(regions, counts):
            if count:
                self.pixels[offset:offset + count] = torch.from_numpy(region).to(self.device)
            offset += count
        del regions
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.starts = torch.as_tensor(starts, device=self.device)
        self.heights = torch.as_tensor([h for h, _ in shapes], dtype=torch.int64, device=self.device)
        self.widths = torch.as_tensor([w for _, w in shapes], dtype=torch.int64, device=self.device)
        self.origins = np.asarray(origins, dtype=np.float64).reshape(-1, 2)
        self._mean = torch.as_tensor(IMAGENET_MEAN * 255.0, device=self.device)
        self._std = torch.as_tensor(IMAGENET_STD * 255.0, device=self.device)
        if announce:  # one line per run, not one per process of a torchrun job
            log.info("image bank: %d faces, %.1f M pixels (%.2f GiB) on %s, packed in %.1f s", len(dataset),
                     self.pixels.shape[0] / 1e6, self.nbytes / 2**30, self.device, time.perf_counter() - started)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.numel() * self.pixels.element_size())

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int], channels_last: bool = False) -> Dict[str, torch.Tensor]:
        """The training batch of faces ``indices`` under the dataset's current epoch's draws.

        Returns what a DataLoader collates from the dataset's items: ``"image"`` float32
        ``(B, 3, S, S)`` ImageNet-normalised on the bank's device (channels-last memory with
        ``channels_last``); ``"landmarks"`` float32 ``(B, N, 2)`` and ``"matrix"`` float32
        ``(B, 2, 3)`` on the CPU, equal to the dataset's; ``"index"`` int64 ``(B,)``.
        """
        ds = self.dataset
        index = [int(i) for i in indices]
        if not index:
            raise ValueError("ImageBank.batch needs at least one face index")
        bad = [i for i in index if not 0 <= i < len(ds)]
        if bad:
            raise IndexError(f"face indices {bad[:5]} out of range for a bank of {len(ds)} faces")
        params = [ds.augment_params(i) for i in index]
        matrices = np.stack([ds.crop_matrix(i, p) for i, p in zip(index, params)])
        landmarks = np.stack([ds.crop_landmarks(i, p) for i, p in zip(index, params)])
        inverse = np.stack([invert_affine(m) for m in matrices])
        inverse[:, :, 2] -= self.origins[index]  # image pixels -> the face's region of the bank
        rows = self._send(np.asarray(index, dtype=np.int64))
        crops = warp_bilinear(self.pixels, self.starts[rows], self.heights[rows], self.widths[rows],
                              self._send(inverse.astype(np.float32)), ds.image_size)
        crops = crops.round_().clamp_(0.0, 255.0)  # the uint8 crop of the loader path
        occluded = [(b, p) for b, p in enumerate(params) if p.occlusion_box is not None]
        if occluded:
            crops = self._paint(crops, occluded)
        images = ((crops - self._mean) / self._std).permute(0, 3, 1, 2)
        target = torch.from_numpy(landmarks.astype(np.float32))
        return {
            "image": images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format),
            "landmarks": target.pin_memory() if self.device.type == "cuda" else target,  # as a pinning DataLoader
            "matrix": torch.from_numpy(matrices.astype(np.float32)),
            "index": torch.as_tensor(index, dtype=torch.int64),
        }

    def _send(self, array: np.ndarray) -> torch.Tensor:
        """A small host array on the bank's device; to a GPU through pinned memory without blocking (a
        copy from pageable memory would wait for the GPU's queued work, the previous step's backward)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _paint(self, crops: torch.Tensor, occluded: list) -> torch.Tensor:
        """Fill each drawn occluder box ``[x0, x1) x [y0, y1)`` with its colour: ``crops (B, S, S, 3)``."""
        size = crops.shape[1]
        rows = self._send(np.asarray([b for b, _ in occluded], dtype=np.int64))
        boxes = self._send(np.asarray([p.occlusion_box for _, p in occluded], dtype=np.int64))
        colours = self._send(np.asarray([p.occlusion_colour for _, p in occluded], dtype=np.float32))
        axis = torch.arange(size, device=crops.device)
        inside_x = (axis[None] >= boxes[:, 0:1]) & (axis[None] < boxes[:, 2:3])  # (K, S)
        inside_y = (axis[None] >= boxes[:, 1:2]) & (axis[None] < boxes[:, 3:4])
        mask = inside_y[:, :, None] & inside_x[:, None, :]  # (K, S, S)
        crops[rows] = torch.where(mask[..., None], colours[:, None, None, :], crops[rows])
        return crops


class DeviceCropLoader:
    """Batches of an :class:`ImageBank` in a batch sampler's order: a DataLoader's stand-in for training.

    ``batch_sampler`` yields lists of face indices (e.g. :class:`pyg_sdfl.engine.sampling.GlobalBatchShards`);
    ``len()`` is its number of batches.
    """

    def __init__(self, bank: ImageBank, batch_sampler: Iterable[Sequence[int]], channels_last: bool = False) -> None:
        self.bank = bank
        self.batch_sampler = batch_sampler
        self.channels_last = bool(channels_last)

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        for indices in self.batch_sampler:
            yield self.bank.batch(indices, self.channels_last)
