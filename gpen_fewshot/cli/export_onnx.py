"""``gpen-export-onnx`` / ``scripts/export_onnx.py``: export a GPEN generator (the base, or a person at a
given strength) to ONNX and verify it with onnxruntime. The rewrites and the export are
:mod:`gpen_fewshot.export.onnx` (its docstring says what they do and why).

    python scripts/export_onnx.py --base GPEN-BFR-512 -o gpen512.onnx
    python scripts/export_onnx.py --person alice --strength 0.7 -o alice.onnx
    python scripts/export_onnx.py --tiny -o /tmp/tiny.onnx        # random tiny generator (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli.errors import exit_with_error
from gpen_fewshot.export import load_person
from gpen_fewshot.export import onnx as onnx_export
from gpen_fewshot.export.onnx import (
    export_onnx,
    freeze_fir_weights,
    rewrite_difference,
    set_modulation_form,
    verify_onnx,
)
from gpen_fewshot.restore import load_base_model


def load_generator_for_export(args: argparse.Namespace) -> nn.Module:
    """The generator selected by --tiny / --person / --base, eval mode, CPU float32."""
    if args.tiny:
        torch.manual_seed(0)
        generator = GPENGenerator(64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125)
        with torch.no_grad():  # non-zero noise weights so the encoder->decoder path is exercised
            for name, param in generator.named_parameters():
                if name.endswith("noise.weight"):
                    param.fill_(0.5)
    elif args.person is not None:
        generator = load_person(args.person, args.persons_dir).build_generator(args.strength)
    else:
        generator = load_base_model(args.base)._model
    if not isinstance(generator, nn.Module):
        exit_with_error("the selected model is not a GPEN generator", 2)
    return generator.float().eval()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=onnx_export.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--base", default=None,
                   help="base model name / file / export dir (default: the default base)")
    p.add_argument("--person", default=None, help="person name or export directory")
    p.add_argument("--persons-dir", type=Path, default=None)
    p.add_argument("--strength", type=float, default=1.0, help="person strength in [0, 1] (default 1)")
    p.add_argument("--tiny", action="store_true", help="a random tiny 64 px generator (smoke test)")
    p.add_argument("--opset", type=int, default=17, help="first opset to try (default 17)")
    p.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--form", choices=("activation", "runtime"), default="activation",
                   help="modulated conv form: activation (constant weights, opset 17, TensorRT) or runtime "
                        "(reference form, opset 10 only); default activation")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference accepted (default 1e-3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    generator = load_generator_for_export(args)
    diff = rewrite_difference(generator, lambda g: freeze_fir_weights(g, args.batch), args.batch)
    print(f"constant FIR weights: max abs difference vs original {diff:.2e}")
    diff = rewrite_difference(generator, lambda g: set_modulation_form(g, args.form), args.batch)
    print(f"{args.form}-form modulated convs: max abs difference vs original {diff:.2e}")
    start = time.perf_counter()
    opset = export_onnx(generator, args.output, args.opset, args.batch)
    print(f"exported {args.output} (opset {opset}, {args.output.stat().st_size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - start:.1f} s)")
    diff = verify_onnx(generator, args.output, args.batch)
    print(f"onnxruntime vs PyTorch: max abs difference {diff:.2e} (tolerance {args.tolerance:g})")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
