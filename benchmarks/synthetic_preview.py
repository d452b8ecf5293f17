"""Write a grid of synthetic faces with their 68 landmarks dotted, and time the renderer.

    python benchmarks/synthetic_preview.py --out /tmp/synthetic_preview.png --rows 4 --cols 4
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pyg_sdfl.data.synthetic import SyntheticFaces

# One colour per part (RGB), in iBUG order.
_PART_COLOURS = [
    (range(0, 17), (255, 255, 0)),
    (range(17, 27), (255, 128, 0)),
    (range(27, 36), (0, 255, 0)),
    (range(36, 48), (0, 200, 255)),
    (range(48, 60), (255, 0, 255)),
    (range(60, 68), (255, 0, 0)),
]


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, occluded: np.ndarray | None = None) -> np.ndarray:
    """Copy of ``image`` with each landmark drawn as a small dot (occluded ones as rings)."""
    out = image.copy()
    for idx, colour in _PART_COLOURS:
        for i in idx:
            centre = tuple(int(v) for v in np.round(landmarks[i] * 16))
            filled = -1 if occluded is None or not occluded[i] else 1
            cv2.circle(out, centre, 2 * 16, colour, filled, cv2.LINE_AA, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="/tmp/synthetic_preview.png")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--occlusion-prob", type=float, default=0.3)
    parser.add_argument("--no-dots", action="store_true", help="show the images without landmarks")
    parser.add_argument("--timing", type=int, default=200, help="number of renders to time")
    args = parser.parse_args()

    data = SyntheticFaces(max(args.rows * args.cols, args.timing), seed=args.seed, image_size=args.size,
                          occlusion_prob=args.occlusion_prob)
    tiles = []
    for i in range(args.rows * args.cols):
        image, lm, occ = data.render(i)
        tiles.append(image if args.no_dots else draw_landmarks(image, lm, occ))
    grid = np.concatenate([np.concatenate(tiles[r * args.cols:(r + 1) * args.cols], axis=1) for r in range(args.rows)])
    cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")

    if args.timing:
        data.render(0)
        start = time.perf_counter()
        for i in range(args.timing):
            data[i].load_image() if hasattr(data[i], "load_image") else data.render(i)
        per = (time.perf_counter() - start) / args.timing
        print(f"{per * 1e3:.2f} ms per sample (params + render) at {args.size}x{args.size}, "
              f"{cv2.getNumThreads()} OpenCV threads")


if __name__ == "__main__":
    main()
