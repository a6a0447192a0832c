"""Time one slider move of the app's viewer: all six panels of one slice, then PNG-encoding them.

Usage: python benchmarks/render_bench.py [CASE_FOLDER]   (default: assets/sample, else synthetic)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from brainseg import render
from brainseg.io import load_case

REPEATS = 60


def synthetic_case():
    rng = np.random.default_rng(0)
    shape = (240, 240, 155)
    images = {m: rng.normal(100, 20, shape).astype(np.float32) for m in ("flair", "t1", "t1ce", "t2")}
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = 239
    return images, affine


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "assets" / "sample"
    if folder.is_dir():
        case = load_case([folder])
        images, affine, source = case.images, case.affine, folder.name
    else:
        (images, affine), source = synthetic_case(), "synthetic"
    shape = next(iter(images.values())).shape
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, shape, dtype=np.uint8)
    probability = rng.random((3,) + shape, dtype=np.float32).astype(np.float16)
    ranges = {m: render.intensity_range(v) for m, v in images.items()}
    print(f"case {source}, shape {shape}; {REPEATS} slider moves per view")
    for view in render.VIEWS:
        n = render.slice_count(shape, render.view_geometry(affine, view))
        draw, encode = [], []
        for index in rng.integers(0, n, REPEATS):
            display = render.Display(view=view, index=int(index))
            t = time.perf_counter()
            panels = render.render_panels(images, labels, ranges, affine, display)
            grey = render.grey_plane(images["flair"], ranges["flair"], affine, display)
            plane = render.extract(probability[0], render.view_geometry(affine, view), int(index))
            panels["Confidence"] = render.probability_overlay(grey, plane)
            draw.append(time.perf_counter() - t)
            t = time.perf_counter()
            for rgb in panels.values():
                render.png_bytes(rgb)
            encode.append(time.perf_counter() - t)
        total = np.add(draw, encode) * 1000
        print(
            f"{view:9s} render {np.median(draw) * 1000:5.1f} ms median, {np.percentile(draw, 95) * 1000:5.1f} ms p95; "
            f"+ PNG encoding of 7 panels {np.median(total):5.1f} ms median, {np.percentile(total, 95):5.1f} ms p95"
        )


if __name__ == "__main__":
    main()
