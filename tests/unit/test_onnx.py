"""gpen_fewshot.cli.export_onnx (scripts/export_onnx.py) on a tiny generator: opset 17 export, onnxruntime
parity, constant conv weights."""

from __future__ import annotations

import types
from pathlib import Path

import onnx
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli import export_onnx as export_onnx_cli
from gpen_fewshot.export import onnx as onnx_export


@pytest.fixture(scope="module")
def script():
    """The CLI module (its main) with the library's functions beside it, as the tests use both."""
    return types.SimpleNamespace(**vars(onnx_export), main=export_onnx_cli.main,
                                 load_generator_for_export=export_onnx_cli.load_generator_for_export)


def _tiny() -> GPENGenerator:
    torch.manual_seed(0)
    generator = GPENGenerator(32, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=0.125).eval()
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(0.5)
    return generator


def _dynamic_conv_weights(path: Path) -> int:
    model = onnx.load(str(path))
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs
    return sum(n.input[1] not in constants for n in convs)


def test_rewrites_do_not_change_the_output(script):
    generator = _tiny()
    assert script.rewrite_difference(generator, script.freeze_fir_weights) < 1e-5
    assert script.rewrite_difference(generator, script.make_trt_friendly) < 1e-5
    assert script.rewrite_difference(generator, lambda g: script.set_modulation_form(g, "runtime")) < 1e-5


def test_activation_form_exports_at_opset_17_and_matches_pytorch(script, tmp_path):
    generator = _tiny()
    script.freeze_fir_weights(generator)
    script.make_trt_friendly(generator)
    path = tmp_path / "tiny.onnx"
    assert script.export_onnx(generator, path, opset=17) == 17
    assert script.verify_onnx(generator, path) < 1e-4
    assert _dynamic_conv_weights(path) == 0  # what TensorRT needs


def test_command_line_on_a_person_export(script, tmp_path, capsys):
    from gpen_fewshot.export import export_generator

    export_generator(_tiny(), tmp_path / "prior")
    assert script.main(["--base", str(tmp_path / "prior"), "-o", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "opset 17" in out and "max abs difference" in out
