"""One prepared check for a CUDA machine: precision parity, benchmark, a few 512-px few-shot iterations and
restoration throughput, all written to one JSON file.

    python scripts/gpu_check.py --out gpu_check.json              # on the GPU machine (~5 min)
    # the same steps, tiny, on a CPU (tests)
    python scripts/gpu_check.py --out check.json --device cpu --quick

Steps (each records its own result or its error, so one failure does not hide the others):
1. ``parity``: the released GPEN-512 layout with random weights (``--quick``: a 64-px one), fp32 vs bf16
   and fp16 autocast (fp16 on CUDA only): PSNR of each against fp32 (images in [-1, 1]).
2. ``benchmark``: ``scripts/benchmark.py --case gpen512-forward`` (``--quick``: gpen256-forward) at each
   precision, against the floor of that precision (``--quick``: fp32 only).
3. ``fewshot``: ``train.py experiment=fewshot_512 model.init=random`` for ``--iterations`` iterations on the
   bundled demo person (``--quick``: ``experiment=smoke``); exit code and wall time.
4. ``restore``: restoration throughput (faces/s, generator forward + uint8 conversion) at batch 1 / 8 / 32 in
   fp16 on CUDA (fp32 on a CPU; ``--quick``: 256 px, batch 1 / 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_restore import time_generator  # noqa: E402  (a sibling script)

from gpen_fewshot.archs import GPENGenerator  # noqa: E402
from gpen_fewshot.cli.errors import user_error  # noqa: E402
from gpen_fewshot.utils.atomic import atomic_write_json  # noqa: E402

SIZES = {False: 512, True: 256}
LAYOUTS = {512: dict(size=512, channel_multiplier=2, narrow=1.0),
           256: dict(size=256, channel_multiplier=1, narrow=0.5),
           64: dict(size=64, channel_multiplier=1, narrow=0.25)}  # 64: --quick parity (emulated bf16 is slow)


def precisions(device: torch.device) -> list[str]:
    """Precisions worth checking on ``device`` (fp16 autocast is CUDA only)."""
    return ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]


def parity(device: torch.device, size: int) -> dict:
    """PSNR (dB, peak-to-peak 2) of each autocast precision's output against fp32, random released layout."""
    torch.manual_seed(0)
    net = GPENGenerator(**LAYOUTS[size]).eval().to(device)
    x = torch.rand(2, 3, size, size, device=device) * 2 - 1
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    with torch.no_grad():
        ref = net(x).float()
        out = {}
        for name in precisions(device)[1:]:
            with torch.autocast(device.type, dtype=dtypes[name]):
                y = net(x).float()
            mse = float((y - ref).square().mean())
            out[name] = {"psnr_vs_fp32": 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-20))).item(),
                         "max_abs_diff": float((y - ref).abs().max())}
    return out


def run(cmd: list[str], timeout: float) -> dict:
    """Run a command; exit code, wall time and the last lines of its output."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return {"cmd": cmd, "returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "tail": tail}


def benchmark(device: torch.device, quick: bool, work: Path) -> dict:
    case = "gpen256-forward" if quick else "gpen512-forward"
    out = work / "benchmark.json"
    extra = ["--repeats", "1", "--matmul-size", "256", "--no-isolate"] if quick else []
    # --quick: a CPU without bf16 units takes minutes in bf16
    chosen = ["fp32"] if quick else precisions(device)
    result = run([sys.executable, "scripts/benchmark.py", "--case", case, "--devices", device.type,
                  "--precision", *chosen, "--out", str(out), *extra], timeout=1800)
    if out.is_file():
        result["records"] = [{k: r.get(k)
                              for k in ("precision", "best_s", "floor_s", "ratio", "matmul_gflops")}
                             for r in json.loads(out.read_text())]
    return result


def fewshot(device: torch.device, quick: bool, iterations: int, work: Path) -> dict:
    args = ["experiment=smoke"] if quick else [
        "experiment=fewshot_512", "model.init=random", f"iterations={iterations}", f"val_every={iterations}",
        "model.discriminator_weights=null", "model.generator_weights=null"]
    if device.type != "cuda":
        args.append("trainer.accelerator=cpu")
    return run([sys.executable, "train.py", *args, f"hydra.run.dir={work / 'fewshot'}", "logger=csv",
                "export.register=false"], timeout=3600)


def restore_throughput(device: torch.device, quick: bool) -> dict:
    size = SIZES[quick]
    precision = "fp16" if device.type == "cuda" else "fp32"
    batches = [1, 2] if quick else [1, 8, 32]
    return {"size": size, "precision": precision,
            "faces_per_s": {b: round(1.0 / time_generator(size, b, max(2 * b, 4), device, precision), 3)
                            for b in batches}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON report")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings (CPU tests)")
    p.add_argument("--iterations", type=int, default=20, help="few-shot iterations at 512 px")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return user_error("no CUDA device here (use --device cpu --quick to try the steps)", 2)
    work = args.out.parent / (args.out.stem + "_work")
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "quick": args.quick}
    steps = {"parity": lambda: parity(device, 64 if args.quick else 512),
             "benchmark": lambda: benchmark(device, args.quick, work),
             "fewshot": lambda: fewshot(device, args.quick, args.iterations, work),
             "restore": lambda: restore_throughput(device, args.quick)}
    for name, step in steps.items():
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            report[name] = step()
        except Exception as err:  # noqa: BLE001  (recorded: one step's failure must not hide the others)
            report[name] = {"error": f"{type(err).__name__}: {err}"}
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    failed = [k for k in steps if "error" in report[k] or report[k].get("returncode", 0) != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
