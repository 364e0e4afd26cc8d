"""Race face priors at equal wall time on the same data stream: learning curves, PSNR gain over the input.

    python scripts/prior_race.py --faces-dir ../shared/data/pretrain/congress --seconds 180 \\
        --model gpen:1 --model gpen:10 --model unet --out outputs/prior_race

Every model trains with L1 on the same seeded pairs (the ``mixture`` degradation, batch ``--batch``) for
``--seconds`` of wall time on ``--threads`` threads, and is evaluated ``--evals`` times on the same held-out
crops degraded at mild / moderate / severe (fixed seeds): the mean PSNR gain of its output over its input.
Models: ``gpen:<scale>`` = the residual compact GPEN (``model=compact_256`` layout, ``residual=True``) with
Adam at ``--lr`` times ``<scale>`` on its equalised-LR layers (encoder, decoder, ToRGB; the mapping network
keeps ``--lr``); ``unet`` = the plain residual U-Net yardstick (``gpen_fewshot.archs.unet``) at ``--lr``.
Writes ``race.json`` (curves) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.archs.unet import ResidualUNet
from gpen_fewshot.data.datamodule import FixedPairDataset, TrainPairDataset, split_holdout
from gpen_fewshot.data.faces_folder import prepare_faces_folder

LEVELS = ("mild", "moderate", "severe")
_SCALED_GROUPS = ("encoder", "decoder_coarse", "decoder_middle", "decoder_fine", "to_rgb")


def build(spec: str, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A fresh model (seed 0) and its Adam optimiser from ``gpen:<scale>`` or ``unet``."""
    torch.manual_seed(0)
    if spec == "unet":
        net = ResidualUNet()
        return net, torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    kind, _, scale = spec.partition(":")
    if kind != "gpen":
        raise ValueError(f"unknown model {spec!r} (gpen:<scale> or unet)")
    net = GPENGenerator(256, style_dim=256, n_mlp=4, channel_multiplier=1, narrow=0.25, residual=True)
    params = dict(net.named_parameters())
    groups = [{"params": [params[n] for n in names],
               "lr": lr * (float(scale or 1) if g in _SCALED_GROUPS else 1)}
              for g, names in net.parameter_groups().items() if names]
    return net, torch.optim.Adam(groups, betas=(0.9, 0.99))


def _psnr(image: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR (dB) of [-1, 1] tensors (peak-to-peak 2)."""
    return float(10 * torch.log10(4.0 / F.mse_loss(image, gt)))


@torch.no_grad()
def evaluate(net: torch.nn.Module, val: FixedPairDataset) -> dict[str, float]:
    """Mean PSNR gain (dB, output vs input, both against GT) per level."""
    net.eval()
    gains: dict[str, list[float]] = {level: [] for level in LEVELS}
    for i in range(len(val)):
        sample = val[i]
        lq, gt = sample["lq"][None], sample["gt"][None]
        out = net(lq).clamp(-1, 1)
        gains[sample["degradation"]].append(_psnr(out, gt) - _psnr(lq, gt))
    net.train()
    return {level: float(np.mean(v)) for level, v in gains.items()}


def race(spec: str, args: argparse.Namespace, train: TrainPairDataset, val: FixedPairDataset) -> list[dict]:
    net, opt = build(spec, args.lr)
    marks = np.linspace(0, args.seconds, args.evals + 1)[1:]
    curve = [{"seconds": 0.0, "updates": 0, **evaluate(net, val)}]
    start, key, updates = time.perf_counter(), 0, 0
    for mark in marks:
        while time.perf_counter() - start < mark:
            batch = [train[key + i] for i in range(args.batch)]
            key += args.batch
            lq = torch.stack([b["lq"] for b in batch])
            gt = torch.stack([b["gt"] for b in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = net(lq)
            loss = F.l1_loss(out.float(), gt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            updates += 1
        point = {"seconds": float(mark), "updates": updates, **evaluate(net, val)}
        curve.append(point)
        print(f"{spec:<10} {mark:7.0f}s {updates:6d} upd "
              + " ".join(f"{lv} {point[lv]:+.2f}" for lv in LEVELS),
              flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces-dir", type=Path, action="append", required=True)
    parser.add_argument("--model", action="append", required=True, help="gpen:<lr scale> or unet")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--evals", type=int, default=3)
    parser.add_argument("--val-count", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("outputs/prior_race"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    crops = [c for d in args.faces_dir for c in prepare_faces_folder(d, 256, "gpen", progress=False)]
    train_crops, val_crops = split_holdout(crops, args.val_count)
    train = TrainPairDataset(train_crops, 256, {"kind": "mixture"}, seed=0, length=10**9)
    val = FixedPairDataset(val_crops, 256, list(LEVELS), 1, 0)
    curves = {spec: race(spec, args, train, val) for spec in args.model}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "race.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                    "curves": curves}, indent=1))
    print(f"{'model':<10} {'updates':>8} " + " ".join(f"{lv:>9}" for lv in LEVELS))
    for spec, curve in curves.items():
        last = curve[-1]
        print(f"{spec:<10} {last['updates']:>8} " + " ".join(f"{last[lv]:>+9.2f}" for lv in LEVELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
