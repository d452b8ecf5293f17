"""Data pipeline: files -> :class:`FaceSample` lists -> crops and augmentation -> tensors.

Readers (:mod:`pyg_sdfl.data.readers`) turn dataset files into samples, :mod:`.transforms`
folds crop and augmentation into one affine warp, :class:`LandmarkDataset` serves tensors,
:mod:`.balance` and :mod:`.splits` build pose-balanced weights and the validation split. Nothing
here knows about models.
"""
from pyg_sdfl.data.balance import pose_balanced_weights, procrustes_align
from pyg_sdfl.data.dataset import LandmarkDataset, crop_landmarks, mean_shape, worker_init_fn
from pyg_sdfl.data.readers import (
    DATASETS,
    load_dataset,
    read_300w,
    read_cofw,
    read_pts,
    read_wflw,
    read_wflw_attribute_lists,
    register_dataset,
)
from pyg_sdfl.data.sample import FaceSample, ImageLoadError, stack_landmarks
from pyg_sdfl.data.splits import train_val_split
from pyg_sdfl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    denormalise_image,
    flip_landmarks,
    normalise_image,
    warp_sample,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "DATASETS",
    "FaceSample",
    "ImageLoadError",
    "LandmarkDataset",
    "crop_landmarks",
    "denormalise_image",
    "flip_landmarks",
    "load_dataset",
    "mean_shape",
    "normalise_image",
    "pose_balanced_weights",
    "procrustes_align",
    "read_300w",
    "read_cofw",
    "read_pts",
    "read_wflw",
    "read_wflw_attribute_lists",
    "register_dataset",
    "stack_landmarks",
    "train_val_split",
    "warp_sample",
    "worker_init_fn",
]
