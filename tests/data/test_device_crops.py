"""Device-side training crops (pyg_sdfl.data.device_crops) against the loader path's OpenCV crops."""
import math

import cv2
import numpy as np
import pytest
import torch

from pyg_sdfl.data import AugmentConfig, FaceSample, LandmarkDataset, load_dataset
from pyg_sdfl.data.device_crops import DeviceCropLoader, ImageBank, reach_radius, reach_region, warp_bilinear
from pyg_sdfl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pyg_sdfl.geometry import crop_matrix, invert_affine

from tests.conftest import W300

AUG = AugmentConfig(rotation=40, translation=30, scale=0.1, flip=0.5, occlusion_prob=0.5, occlusion_fraction=0.2)
# OpenCV puts the source point on a 1/32 px grid and rounds its weights to 15 bits; the float path does
# neither: a few grey levels apart at a sharp edge (255 over one pixel moves 255/64 ~ 4 levels per 1/64 px)
MAX_LEVELS, MEAN_LEVELS = 4, 0.15
# the bank on every device here: on a GPU machine the same comparisons run on CUDA too
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _picture(height, width, seed):
    """Smooth noise with sharp-edged blocks: both interpolation regimes."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    img[height // 3: height // 2, width // 4: width // 2] = (255, 0, 128)
    return img


def _one(image, M, size):
    """warp_bilinear of one unpacked image."""
    h, w = image.shape[:2]
    inverse = torch.as_tensor(invert_affine(M)[None], dtype=torch.float32)
    return warp_bilinear(torch.from_numpy(image.reshape(-1, 3)), torch.tensor([0]), torch.tensor([h]),
                         torch.tensor([w]), inverse, size)[0].numpy()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rotation, scale, shift, side", [
    (0.0, 1.0, (0.0, 0.0), 80.0),      # a plain crop (downscale 80 -> 64)
    (33.0, 0.9, (6.0, -9.0), 80.0),    # augmented
    (-40.0, 1.1, (30.0, 30.0), 80.0),  # partly outside the picture
    (10.0, 1.0, (0.0, 0.0), 400.0),    # mostly outside: the black border
    (5.0, 1.0, (0.0, 0.0), 20.0),      # an upscale (20 -> 64)
])
def test_warp_bilinear_is_opencv_warp_affine(flip, rotation, scale, shift, side):
    image = _picture(90, 120, seed=1)
    M = crop_matrix((60.3, 44.8), side, 64, rotation_deg=rotation, scale=scale, shift=shift, flip=flip)
    reference = cv2.warpAffine(image, M, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0, 0, 0)).astype(np.float32)
    ours = np.round(_one(image, M, 64))
    diff = np.abs(ours - reference)
    assert diff.max() <= MAX_LEVELS and diff.mean() < MEAN_LEVELS, (diff.max(), diff.mean())


def test_a_wrong_sampler_is_caught_by_the_opencv_comparison():
    # the comparison can fail: the same crop half a pixel off (the classic centre/corner mix-up)
    image = _picture(90, 120, seed=1)
    M = crop_matrix((60.3, 44.8), 80.0, 64, rotation_deg=20)
    reference = cv2.warpAffine(image, M, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float32)
    shifted = M.copy()
    shifted[:, 2] += 0.5
    diff = np.abs(np.round(_one(image, shifted, 64)) - reference)
    assert diff.mean() > 10 * MEAN_LEVELS


def test_packed_images_of_different_sizes_warp_as_each_alone():
    images = [_picture(70, 50, 2), _picture(40, 90, 3), _picture(64, 64, 4)]
    pixels = torch.from_numpy(np.concatenate([im.reshape(-1, 3) for im in images]))
    counts = [im.shape[0] * im.shape[1] for im in images]
    starts = torch.tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]))
    matrices = [crop_matrix((25, 35), 50, 32, rotation_deg=15), crop_matrix((45, 20), 60, 32, flip=True),
                crop_matrix((30, 30), 90, 32, shift=(4, 4))]
    inverse = torch.as_tensor(np.stack([invert_affine(m) for m in matrices]), dtype=torch.float32)
    packed = warp_bilinear(pixels, starts[[0, 1, 2]], torch.tensor([70, 40, 64]), torch.tensor([50, 90, 64]),
                           inverse, 32).numpy()
    for b, (image, M) in enumerate(zip(images, matrices)):
        np.testing.assert_allclose(packed[b], _one(image, M, 32), atol=1e-3)


def test_warp_bilinear_refuses_what_it_cannot_sample():
    with pytest.raises(ValueError, match=r"\(P, C\) uint8"):
        warp_bilinear(torch.zeros(4, 3), torch.tensor([0]), torch.tensor([2]), torch.tensor([2]), torch.zeros(1, 2, 3), 8)
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        warp_bilinear(torch.zeros(4, 3, dtype=torch.uint8), torch.tensor([0]), torch.tensor([2]), torch.tensor([2]),
                      torch.zeros(1, 3, 3), 8)


def test_the_reach_covers_every_point_any_draw_samples():
    # the extremes of an affine map over the crop are at its corners: every draw's four corners (and
    # their bilinear neighbours) must fall inside the region
    side, size = 100.0, 64
    augment = AugmentConfig(rotation=45, translation=20, scale=0.3, flip=0.5)
    radius = reach_radius(side, size, augment)
    x0, y0, x1, y1 = reach_region((500.0, 400.0), radius, 10_000, 10_000)
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], dtype=np.float64)
    reached = []
    for _ in range(2000):
        p = augment.sample(rng, size)
        M = crop_matrix((500.0, 400.0), side, size, rotation_deg=p.rotation_deg, scale=p.scale, shift=p.shift,
                        flip=p.flip)
        inv = invert_affine(M)
        pts = corners @ inv[:, :2].T + inv[:, 2]
        reached.append(pts)
        assert (np.floor(pts) >= [x0, y0]).all() and (np.floor(pts) + 1 < [x1, y1]).all()
    # and it is not a vacuous bound: the worst draws come within a few pixels of the radius
    farthest = np.abs(np.concatenate(reached) - [500.0, 400.0]).max()
    assert farthest > 0.9 * radius / math.sqrt(2)


def _faces(count=5):
    rng = np.random.default_rng(7)
    faces = []
    for i in range(count):
        h, w = int(rng.integers(150, 260)), int(rng.integers(150, 260))
        points = rng.uniform([40, 40], [w - 40, h - 40], size=(68, 2))
        faces.append(FaceSample(image=_picture(h, w, 10 + i), landmarks=points, name=f"face{i}"))
    return faces


def _to_levels(images):
    """normalised (B, 3, S, S) -> grey levels (B, S, S, 3), not rounded."""
    return images.permute(0, 2, 3, 1).numpy() * (IMAGENET_STD * 255) + IMAGENET_MEAN * 255


def _compare_with_loader(dataset, indices, epochs=(0, 3), device="cpu"):
    bank = ImageBank(dataset, device)
    for epoch in epochs:
        dataset.set_epoch(epoch)
        batch = bank.batch(indices)
        assert batch["image"].device.type == torch.device(device).type
        batch["image"] = batch["image"].cpu()
        items = [dataset[i] for i in indices]
        assert batch["image"].shape == (len(indices), 3, dataset.image_size, dataset.image_size)
        np.testing.assert_array_equal(batch["landmarks"].numpy(), np.stack([it["landmarks"].numpy() for it in items]))
        np.testing.assert_array_equal(batch["matrix"].numpy(), np.stack([it["matrix"].numpy() for it in items]))
        assert batch["index"].tolist() == [it["index"] for it in items]
        ours = _to_levels(batch["image"])
        theirs = _to_levels(torch.stack([it["image"] for it in items]))
        diff = np.abs(ours - theirs)
        assert diff.max() <= MAX_LEVELS + 0.01 and diff.mean() < MEAN_LEVELS, (epoch, diff.max(), diff.mean())
    return bank


@pytest.mark.parametrize("device", DEVICES)
def test_a_bank_batch_is_the_datasets_augmented_items(device):
    faces = _faces()
    dataset = LandmarkDataset(faces, "300w", image_size=48, augment=AUG, seed=3)
    _compare_with_loader(dataset, [4, 0, 2, 2, 1, 3], device=device)
    # the draws of these epochs include mirrored and occluded faces (the comparison covered both)
    draws = [dataset.augment_params(i, e) for i in range(len(faces)) for e in (0, 3)]
    assert any(p.flip for p in draws) and any(p.occlusion_box is not None for p in draws)


@pytest.mark.parametrize("device", DEVICES)
def test_small_faces_in_large_pictures_are_cut_to_their_reach(device):
    # a 60 px face in a 600 x 600 picture: its region is a small part of the picture, offset in x and y
    # (and clipped where the face sits near an edge), so the bank's origin shift is exercised
    rng = np.random.default_rng(11)
    picture = _picture(600, 600, 21)
    faces = []
    for i, (cx, cy) in enumerate([(300, 200), (120, 470), (560, 40), (30, 580)]):
        points = np.array([cx, cy]) + rng.uniform(-30, 30, size=(68, 2))
        faces.append(FaceSample(image=picture, landmarks=points, name=f"small{i}"))
    dataset = LandmarkDataset(faces, "300w", image_size=48, augment=AUG, seed=5)
    bank = _compare_with_loader(dataset, [0, 1, 2, 3], epochs=(0, 1, 2), device=device)
    assert (bank.origins[0] > 0).all() and (bank.origins[1:] == 0).any()  # offset in x and y; clipped at an edge
    assert bank.pixels.shape[0] < 0.25 * len(faces) * 600 * 600


@pytest.mark.parametrize("device", DEVICES)
def test_a_face_whose_crop_misses_its_picture_comes_out_black(device):
    # annotations wholly outside the picture: an empty region, the last face of the bank
    faces = _faces(2) + [FaceSample(image=_picture(100, 100, 5), landmarks=np.random.default_rng(0).uniform(
        400, 420, size=(68, 2)), name="outside")]
    dataset = LandmarkDataset(faces, "300w", image_size=32)
    bank = _compare_with_loader(dataset, [2, 0], epochs=(0,), device=device)
    assert bank.heights[2] * bank.widths[2] == 0
    black = _to_levels(bank.batch([2])["image"].cpu())
    np.testing.assert_allclose(black, 0.0, atol=1e-3)


def test_occluders_are_painted_as_the_loader_paints_them():
    augment = AugmentConfig(rotation=0, translation=0, scale=0, flip=0, occlusion_prob=1.0, occlusion_fraction=0.3)
    dataset = LandmarkDataset(_faces(3), "300w", image_size=40, augment=augment, seed=1)
    batch = ImageBank(dataset).batch([0, 1, 2])
    for b in range(3):
        x0, y0, x1, y1 = dataset.augment_params(b).occlusion_box
        colour = np.asarray(dataset.augment_params(b).occlusion_colour, dtype=np.float32)
        painted = _to_levels(batch["image"][b:b + 1])[0, y0:y1, x0:x1]
        np.testing.assert_allclose(painted, np.broadcast_to(colour, painted.shape), atol=1e-3)


def test_plain_crops_and_channels_last():
    dataset = LandmarkDataset(_faces(2), "300w", image_size=32)  # no augmentation: evaluation crops
    bank = _compare_with_loader(dataset, [1, 0], epochs=(0,))
    image = bank.batch([0, 1], channels_last=True)["image"]
    assert image.is_contiguous(memory_format=torch.channels_last)


def test_the_loader_iterates_the_sampler_batches():
    dataset = LandmarkDataset(_faces(4), "300w", image_size=24, augment=AUG)
    loader = DeviceCropLoader(ImageBank(dataset), [[0, 1], [3, 2]])
    assert len(loader) == 2
    assert [b["index"].tolist() for b in loader] == [[0, 1], [3, 2]]


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="LandmarkDataset"):
        ImageBank(_faces(1))
    bank = ImageBank(LandmarkDataset(_faces(2), "300w", image_size=16))
    with pytest.raises(ValueError, match="at least one face"):
        bank.batch([])
    with pytest.raises(IndexError, match=r"\[2\] out of range for a bank of 2 faces"):
        bank.batch([0, 2])


@pytest.mark.skipif(not W300.is_dir(), reason=f"300-W not found at {W300} (see ../shared/data/README.md)")
def test_real_300w_faces_match_the_loader_path():
    faces = load_dataset("300w", W300, split="train")[:: 251][:8]
    dataset = LandmarkDataset(faces, "300w", image_size=128, augment=AUG, seed=0, annotation_offset_x=0.89)
    bank = _compare_with_loader(dataset, list(range(len(faces))), epochs=(0, 1))
    # 300-W's pictures are cut around their face: the region any draw reaches is the whole picture
    assert bank.pixels.shape[0] == sum(dataset.image(i).shape[0] * dataset.image(i).shape[1] for i in range(len(faces)))
