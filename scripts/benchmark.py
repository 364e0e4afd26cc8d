"""Benchmark the GPEN generator and discriminator: time per face, FLOP-floor ratio and peak memory.

    python scripts/benchmark.py                          # GPEN-BFR-256 and -512, batch 1 and 4, CPU (+CUDA)
    python scripts/benchmark.py --quick                  # GPEN-BFR-256, batch 1, one repeat
    python scripts/benchmark.py --configs GPEN-BFR-512 --batch-sizes 1 --modes fwd --out bench.json
    python scripts/benchmark.py --configs custom --size 128 --channel-multiplier 1 --narrow 0.25
    python scripts/benchmark.py --case gpen512-forward --precision bf16   # one case; last line time_s= ...

Every case (config x device x batch x mode) runs in a fresh worker process, so one case's allocations do
not hide another's peak memory. In that worker the model is built, one untimed run counts the FLOPs
(``torch.utils.flop_counter.FlopCounterMode`` with a groups-aware conv-backward formula; it doubles as the
warm-up), then the timed repeats run, each
followed by a probe of the device's fp32 matmul rate (4096x4096 matmul, best of 3, the torch thread count as
set). ``floor`` = FLOPs / the best probe; ``ratio`` = best time / floor (conservative); ``ratio_paired`` =
the lowest time x rate / FLOPs of a run and the probe right after it. On a shared machine the load changes
from second to second: compare ratios, not absolute times, and repeat when noisy.

Precision (``--precision fp32 bf16 fp16``): bf16 runs the step under ``torch.autocast`` (CPU and CUDA), fp16
under CUDA autocast only; the floor of each case comes from a matmul probe *of its own precision* (a bf16
matmul on a CPU with AMX / AVX512-BF16 runs several times faster than fp32; without them it is slower).
``--case NAME`` times one named case (``CASES``) and prints as its last line
``time_s=<best> floor_s=<floor> ratio=<best/floor>``.

Modes: ``fwd`` (generator forward, eval, no_grad), ``fwdbwd`` (generator forward + backward of the mean
output w.r.t. all parameters, train mode), ``d_fwdbwd`` (discriminator forward + backward, train mode).

Peak memory of the first timed run: CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated
before it (tensors only). CPU: the worker's peak resident set size (VmHWM, reset through
``/proc/self/clear_refs`` after the warm-up) minus its RSS just before the run: activations, gradients,
allocator and oneDNN workspaces, not the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MATMUL_N = 4096
CONFIGS: dict[str, dict] = {
    # generator kwargs, discriminator kwargs (GPEN-BFR-256-D uses narrow 1, not the generator's 0.5)
    "GPEN-BFR-256": {"g": dict(size=256, channel_multiplier=1, narrow=0.5),
                     "d": dict(size=256, channel_multiplier=1, narrow=1.0)},
    "GPEN-BFR-512": {"g": dict(size=512, channel_multiplier=2, narrow=1.0),
                     "d": dict(size=512, channel_multiplier=2, narrow=1.0)},
}
CONFIGS["compact-256"] = {"g": dict(size=256, style_dim=256, n_mlp=4, channel_multiplier=1, narrow=0.25,
                                     residual=True),
                          "d": dict(size=256, channel_multiplier=1, narrow=0.25)}
MODES = ("fwd", "fwdbwd", "d_fwdbwd")
PRECISIONS = ("fp32", "bf16", "fp16")
# --case NAME: (config, mode, batch)
CASES = {"gpen512-forward": ("GPEN-BFR-512", "fwd", 1), "gpen256-forward": ("GPEN-BFR-256", "fwd", 1),
         "gpen512-fwdbwd": ("GPEN-BFR-512", "fwdbwd", 1), "compact256-train": ("compact-256", "fwdbwd", 4)}


@dataclass(frozen=True)
class Case:
    """One measurement: a named config on a device at a batch size in one mode."""

    config: str
    g_kwargs: dict
    d_kwargs: dict
    device: str
    batch: int
    mode: str
    repeats: int
    threads: int | None
    matmul_size: int = MATMUL_N
    precision: str = "fp32"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def matmul_rate(device, n: int = MATMUL_N, repeats: int = 3, precision: str = "fp32") -> float:
    """Best FLOP/s of an n x n matmul on ``device`` in ``precision``."""
    import torch

    a = torch.randn(n, n, device=device, dtype=_dtype(precision))
    b = torch.randn(n, n, device=device, dtype=_dtype(precision))
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) via /proc/self/clear_refs (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """VmHWM of this process (falls back to ru_maxrss where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_bytes(device, rss0: int, cuda0: int) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - cuda0
    return _peak_rss_bytes() - rss0


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of aten.convolution_backward that respect ``groups``.

    torch's formula counts a grouped conv's weight gradient as if it were dense across groups (x groups: the
    batch-folded modulated convs, the depthwise blurs). Each gradient costs what the forward costs:
    2 * prod(w_shape[1:]) * (numel of the output, or of the input for a transposed conv).
    """
    from math import prod

    forward = 2 * prod(w_shape[1:]) * prod(x_shape if transposed else grad_out_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter():
    """A FlopCounterMode with the groups-aware convolution backward formula."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})


def _build_step(case: Case, device):
    """The function timed for ``case`` (one iteration) and the number of parameters involved."""
    import torch

    from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator

    torch.manual_seed(0)
    if case.mode == "d_fwdbwd":
        model = GPENDiscriminator(**case.d_kwargs).to(device).train()
        size = case.d_kwargs["size"]
    else:
        model = GPENGenerator(**case.g_kwargs).to(device)
        model.train(case.mode == "fwdbwd")
        size = case.g_kwargs["size"]
    x = torch.rand(case.batch, 3, size, size, device=device) * 2 - 1
    autocast = torch.autocast(device.type, dtype=_dtype(case.precision), enabled=case.precision != "fp32")

    def step() -> None:
        if case.mode == "fwd":
            with torch.no_grad(), autocast:
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(x)
            out.float().mean().backward()

    return step, sum(p.numel() for p in model.parameters())


def _timed_runs(step, case: Case, device, rss0: int, cuda0: int) -> tuple[list[float], list[float], int]:
    """Time ``case.repeats`` runs, probing the matmul rate after each; returns (times, rates, peak bytes)."""
    times, rates, peak = [], [], None
    for _ in range(case.repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
        if peak is None:  # read before the first matmul probe allocates its own operands
            peak = _peak_bytes(device, rss0, cuda0)
        # right after each run: about the same load
        rates.append(matmul_rate(device, case.matmul_size, precision=case.precision))
    return times, rates, peak


def run_case(case: Case) -> dict:
    """Measure one case in this process; returns the result record."""
    import torch

    if case.threads:
        torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    step, n_params = _build_step(case, device)
    rss0 = _rss_bytes()
    counter = flop_counter()
    with counter:  # also the warm-up run (lazy imports, oneDNN kernel generation, cuDNN autotuning)
        step()
    _sync(device)
    cuda0 = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda0 = torch.cuda.memory_allocated(device)
    elif _reset_peak_rss():  # else the peak (from rss0, before the warm-up) includes the warm-up's imports
        rss0 = _rss_bytes()
    times, rates, peak = _timed_runs(step, case, device, rss0, cuda0)
    flops = counter.get_total_flops()
    best, rate = min(times), max(rates)
    return {
        "config": case.config, "g_kwargs": case.g_kwargs, "d_kwargs": case.d_kwargs, "device": case.device,
        "batch": case.batch, "mode": case.mode, "precision": case.precision,
        "threads": torch.get_num_threads(), "params": n_params,
        "times_s": times, "best_s": best, "median_s": statistics.median(times),
        "per_face_s": best / case.batch, "gflop": flops / 1e9, "matmul_size": case.matmul_size,
        "matmul_gflops": rate / 1e9, "matmul_gflops_all": [r / 1e9 for r in rates], "floor_s": flops / rate,
        # conservative: fastest run against the fastest matmul probe; paired: each run against its own probe
        "ratio": best * rate / flops if flops else float("nan"),
        "ratio_paired": (min(t * r for t, r in zip(times, rates, strict=True)) / flops if flops
                         else float("nan")),
        "peak_mem_mib": peak / 2**20,
        "mem_method": ("cuda max_memory_allocated - allocated before the run" if device.type == "cuda"
                       else "peak RSS (VmHWM reset via clear_refs) - RSS before the run"),
        "torch": torch.__version__,
    }


def _spawn(case: Case, timeout: float) -> dict:
    """Run ``case`` in a fresh interpreter (isolates peak memory); returns its record or an error record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case.__dict__)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**case.__dict__, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**case.__dict__, "error": f"worker exit {proc.returncode}: {tail[0]}"}


def format_table(records: list[dict]) -> str:
    """Plain-text table of the records."""
    head = (f"{'config':14s} {'dev':4s} {'prec':4s} {'B':>2s} {'mode':8s} {'best s':>8s} {'med s':>8s} "
            f"{'s/face':>8s} {'GFLOP':>8s} {'mm GF/s':>8s} {'floor s':>8s} {'ratio':>6s} {'paired':>6s} "
            f"{'peak MiB':>9s}")
    lines = [head, "-" * len(head)]
    for r in records:
        if "error" in r:
            lines.append(f"{r['config']:14s} {r['device']:4s} {r['precision']:4s} {r['batch']:2d} "
                         f"{r['mode']:8s} ERROR {r['error']}")
            continue
        lines.append(f"{r['config']:14s} {r['device'][:4]:4s} {r['precision']:4s} {r['batch']:2d} "
                     f"{r['mode']:8s} {r['best_s']:8.3f} "
                     f"{r['median_s']:8.3f} {r['per_face_s']:8.3f} {r['gflop']:8.1f} "
                     f"{r['matmul_gflops']:8.1f} {r['floor_s']:8.3f} {r['ratio']:6.2f} "
                     f"{r['ratio_paired']:6.2f} {r['peak_mem_mib']:9.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=None,
                   help=f"named configs ({', '.join(CONFIGS)}) and/or 'custom' (built from --size ...)")
    p.add_argument("--size", type=int, help="custom config: image size")
    p.add_argument("--channel-multiplier", type=int, default=2, help="custom config: channel multiplier")
    p.add_argument("--narrow", type=float, default=1.0, help="custom config: generator narrow")
    p.add_argument("--d-narrow", type=float, default=None, help="custom config: discriminator narrow")
    p.add_argument("--style-dim", type=int, default=512, help="custom config: latent width")
    p.add_argument("--n-mlp", type=int, default=8, help="custom config: mapping depth")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 4 (1 with --quick)")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="autocast precision(s); the floor is measured at the same precision")
    p.add_argument("--case", choices=sorted(CASES), default=None,
                   help="one named case (config, mode, batch); prints 'time_s= floor_s= ratio=' last")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 3, 1 --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    p.add_argument("--matmul-size", type=int, default=MATMUL_N, help="n of the n x n matmul rate probe")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    p.add_argument("--quick", action="store_true", help="GPEN-BFR-256 only, batch 1, one repeat")
    p.add_argument("--no-isolate", action="store_true",
                   help="run every case in this process (faster start; peak memory then accumulates)")
    p.add_argument("--out", type=Path, default=None, help="write the records as JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_cases(args: argparse.Namespace) -> list[Case]:
    """Expand the command line into cases (fp16 only on CUDA: a CPU fp16 case is an error)."""
    if "fp16" in args.precision and "cpu" in (args.devices or ["cpu"]):
        raise SystemExit("benchmark.py: fp16 autocast is CUDA only; use --devices cuda or --precision bf16")
    if args.case:
        config, mode, batch = CASES[args.case]
        args.configs, args.modes, args.batch_sizes = [config], [mode], [batch]
        args.devices = args.devices or ["cpu"]
    names = args.configs or (["GPEN-BFR-256"] if args.quick else list(CONFIGS))
    if args.size and "custom" not in names and args.configs is None:
        names = ["custom"]
    configs = {}
    for name in names:
        if name == "custom":
            if not args.size:
                raise SystemExit("benchmark.py: --configs custom needs --size")
            g = dict(size=args.size, channel_multiplier=args.channel_multiplier, narrow=args.narrow,
                     style_dim=args.style_dim, n_mlp=args.n_mlp)
            d = dict(size=args.size, channel_multiplier=args.channel_multiplier,
                     narrow=args.narrow if args.d_narrow is None else args.d_narrow)
            configs[name] = {"g": g, "d": d}
        elif name in CONFIGS:
            configs[name] = CONFIGS[name]
        else:
            raise SystemExit(f"benchmark.py: unknown config {name!r}; choose from {list(CONFIGS)} or custom")
    if args.devices:
        devices = args.devices
    else:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    batches = args.batch_sizes or ([1] if args.quick else [1, 4])
    repeats = args.repeats or (1 if args.quick else 3)
    return [Case(name, cfg["g"], cfg["d"], dev, b, mode, repeats, args.threads, args.matmul_size, prec)
            for name, cfg in configs.items() for dev in devices for b in batches for mode in args.modes
            for prec in args.precision]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_case(Case(**json.loads(args.worker)))), flush=True)
        return 0
    records = []
    for case in build_cases(args):
        print(f"running {case.config} {case.device} batch {case.batch} {case.mode} ...", file=sys.stderr,
              flush=True)
        records.append(run_case(case) if args.no_isolate else _spawn(case, args.timeout))
    print(format_table(records))
    if args.case and "error" not in records[0]:
        r = records[0]
        print(f"time_s={r['best_s']:.4f} floor_s={r['floor_s']:.4f} ratio={r['ratio']:.3f}")
    if args.out is not None:
        from gpen_fewshot.utils.atomic import atomic_write_json

        atomic_write_json(args.out, records)
        print(f"wrote {args.out}")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
