"""scripts/gpu_check.py: every step runs (tiny, on the CPU) and lands in one JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_step_on_a_cpu_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out),
                           "--device", "cpu", "--quick"], capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["parity"]["bf16"]["psnr_vs_fp32"] > 30  # autocast bf16 of a random GPEN stays close to fp32
    assert report["benchmark"]["returncode"] == 0 and report["benchmark"]["records"][0]["ratio"] > 0
    assert report["fewshot"]["returncode"] == 0
    assert all(v > 0 for v in report["restore"]["faces_per_s"].values())
    no_cuda = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert no_cuda.returncode == 2 and "no CUDA device" in no_cuda.stderr
