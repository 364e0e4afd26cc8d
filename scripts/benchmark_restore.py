"""Restoration speed: faces/second of the GPEN generator (random weights) at 256 and 512, plus paste-back
cost.

    python scripts/benchmark_restore.py                       # CPU, 256 and 512 configs, batch 1 and 4
    python scripts/benchmark_restore.py --sizes 256 --faces 16 --batch-sizes 1 8 --device cuda \\
        --precision fp16

Configs: 256 = GPEN-BFR-256 (channel_multiplier 1, narrow 0.5), 512 = GPEN-BFR-512 (channel_multiplier 2,
narrow 1); style_dim 512, n_mlp 8. The machine's fp32 matmul rate is measured in the same run (the forward
cost is about 17 GFLOP at 256 and 276 GFLOP at 512, GPEN_REFERENCE.md section 6), so timings from a loaded
machine can be compared through the "x floor" column (measured time / time at the matmul rate).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

CONFIGS = {
    256: {"size": 256, "channel_multiplier": 1, "narrow": 0.5},
    512: {"size": 512, "channel_multiplier": 2, "narrow": 1.0},
}
GFLOP_PER_FACE = {256: 17.0, 512: 276.0}


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    """fp32 matrix-multiply rate (GFLOP/s) of ``device``, best of ``repeats``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generator(size: int, batch: int, faces: int, device: torch.device, precision: str) -> float:
    """Seconds per face restoring ``faces`` random crops in batches of ``batch`` (after one warm-up batch)."""
    from gpen_fewshot.archs import GPENGenerator
    from gpen_fewshot.restore import run_model

    torch.manual_seed(0)
    generator = GPENGenerator(**CONFIGS[size]).eval().to(device)
    generator.requires_grad_(False)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(faces)]
    run_model(generator, crops[:batch], device, batch, precision)  # warm-up (allocations, kernels)
    _sync(device)
    start = time.perf_counter()
    run_model(generator, crops, device, batch, precision)
    _sync(device)
    return (time.perf_counter() - start) / faces


def time_paste(size: int, faces: int = 8) -> float:
    """Seconds per face for alignment-free paste-back (mask, colour matching, warp) into a 1500x1000 photo."""
    from gpen_fewshot.faces.alignment import estimate_alignment, template_points
    from gpen_fewshot.faces.paste import FacePaste, paste_faces

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pastes = []
    for i in range(faces):
        landmarks = template_points("gpen", size) * 0.3 + np.array([100.0 + 150 * i, 400.0])
        inverse = np.linalg.inv(np.vstack([estimate_alignment(landmarks, size), [0, 0, 1]]))[:2]
        pastes.append(FacePaste(crop, inverse, crop))
    start = time.perf_counter()
    paste_faces(image, pastes)
    return (time.perf_counter() - start) / faces


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=sorted(CONFIGS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--faces", type=int, default=4, help="faces timed per measurement (default 4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="autocast precision (fp16: CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rate = matmul_gflops(device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, fp32 matmul {rate:.0f} GFLOP/s"
          + (f", {args.precision} autocast" if args.precision != "fp32" else ""))
    print(f"{'config':>7} {'batch':>5} {'s/face':>8} {'faces/s':>8} {'x floor':>8}")
    for size in args.sizes:
        for batch in args.batch_sizes:
            seconds = time_generator(size, batch, max(args.faces, batch), device, args.precision)
            floor = GFLOP_PER_FACE[size] / rate
            print(f"{size:>7} {batch:>5} {seconds:>8.3f} {1 / seconds:>8.2f} {seconds / floor:>8.1f}")
    for size in args.sizes:
        print(f"paste-back of a {size} px crop into a 1500x1000 photo: {time_paste(size) * 1000:.1f} ms/face")


if __name__ == "__main__":
    main()
