"""Restoration precision: --precision auto / fp32 / bf16 / fp16, and bf16 output close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli import restore as cli
from gpen_fewshot.restore.models import run_model
from gpen_fewshot.utils import precision

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch,
                                                               capsys) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    assert cli.resolve_device("cpu", "auto") == (torch.device("cpu"), "bf16")
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert cli.resolve_device("cpu", "auto") == (torch.device("cpu"), "fp32")
    assert cli.resolve_device("cpu", "bf16")[1] == "bf16"  # asked for: honoured even where it is emulated
    assert cli.resolve_device("cpu", "fp16")[1] == "fp32"
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["--fp16"])
    assert args.precision == "fp16"
    assert cli.build_parser().parse_args([]).precision == "auto"


def test_bf16_restoration_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = GPENGenerator(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125,
                        residual=True).eval()
    crops = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(2)]
    fp32 = run_model(net, crops, torch.device("cpu"), 2, "fp32")
    bf16 = run_model(net, crops, torch.device("cpu"), 2, "bf16")
    for a, b in zip(fp32, bf16, strict=True):
        mse = np.mean((a.astype(np.float64) - b) ** 2)
        assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40  # the tolerance for bf16 restoration
    with pytest.raises(ValueError, match="precision"):
        run_model(net, crops, torch.device("cpu"), 2, "int8")
