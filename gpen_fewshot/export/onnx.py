"""ONNX export of a GPEN generator (the base, or a person at a given strength) to ONNX and verify it with
onnxruntime.

    python scripts/export_onnx.py --base GPEN-BFR-512 -o gpen512.onnx
    python scripts/export_onnx.py --person alice --strength 0.7 -o alice.onnx
    python scripts/export_onnx.py --tiny -o /tmp/tiny.onnx        # random tiny generator (smoke test)

The graph has a static shape (batch ``--batch`` x 3 x S x S, RGB in [-1, 1] -> same); the TorchScript-based
exporter is used (the torch.export-based one needs the extra ``onnxscript`` package). Opsets are tried from
``--opset`` (default 17) down to 10 and the first that exports is kept; the result is compared with PyTorch
on a seeded random input and the max abs difference printed (exit 1 above ``--tolerance``).

Two rewrites make opset 17 work; both are applied to the PyTorch module before export and checked against
it (max abs difference printed):

- the FIR blur/upsample ops get constant depthwise weights (they expand their kernel to the input's channel
  count at run time, which the exporter cannot shape-infer from opset 11 on);
- ``--form activation`` (default): every modulated convolution is computed in the equivalent "activation"
  form (StyleGAN2's non-fused path): scale the input channels by the style, convolve with the constant
  weight, scale the output channels by the demodulation factor. ``--form runtime`` keeps the reference form
  (per-sample weights built from the style at run time, batch folded into conv groups). Measured with torch
  2.15 and the current layers it does not export at all: opsets 11-17 refuse its computed conv weights
  ("convolution for kernel of unknown shape") and opset 10 lacks the ``index_put`` of StyledConv's in-place
  feature update. (The reference network exported at opset 10, GPEN_REFERENCE.md section 5.)

TensorRT needs: convolution weights that are constants (initializers), which only ``--form activation``
gives (the runtime form makes every modulated conv a Conv whose weight is a computed tensor); static shapes
(one engine per batch size: export with ``--batch``); opset >= 13; fp32 export with fp16 chosen when building
the engine (``trtexec --onnx=model.onnx --fp16``), since the demodulation rsqrt and the un-normalised ToRGB
sums lose precision when the ONNX graph itself is fp16.
"""

from __future__ import annotations

import io
import logging
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpen_fewshot.archs.layers import Blur, ModulatedConv2d, Upsample
from gpen_fewshot.utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

OPSETS = (17, 16, 13, 11, 10)


def _static_blur(self, x: Tensor, bias: Tensor | None = None, down: int = 1,
                 gain: Tensor | None = None) -> Tensor:
    """Blur.forward with a constant depthwise weight (see ``freeze_fir_weights``); the optional per-channel
    (C,) or per-sample (N, C) ``gain`` multiplies the output instead of the weight, keeping it constant."""
    px0, px1 = self.pad
    x = F.pad(x, [px0, px1, px0, px1])
    out = F.conv2d(x, self.onnx_weight, stride=down, groups=self.onnx_weight.shape[0])
    if gain is not None:
        out = out * gain.reshape(gain.shape[0] if gain.ndim == 2 else 1, -1, 1, 1).to(out.dtype)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1).to(out.dtype)


def _static_upsample(self, x: Tensor) -> Tensor:
    """Upsample.forward (zero insertion + FIR) as a transposed depthwise conv with a constant weight."""
    kh = self.kernel.shape[0]
    px0, px1 = self.pad
    left, right = px0 + 1 - kh, px1 + self.factor - kh
    crop = max(0, -min(left, right))
    out = F.conv_transpose2d(x, self.onnx_weight, stride=self.factor, padding=crop,
                             groups=self.onnx_weight.shape[0])
    rest = [left + crop, right + crop] * 2
    return F.pad(out, rest) if any(rest) else out


def freeze_fir_weights(generator: nn.Module, batch: int = 1) -> int:
    """Give every Blur/Upsample a constant (C, 1, k, k) depthwise weight; returns the number patched.

    The FIR ops expand their kernel to the input's channel count at run time. The TorchScript exporter
    traces that count as a dynamic value from opset 11 on (Pad takes its pads as a tensor there), and then
    refuses "convolution for kernel of unknown shape". One dry run records each module's channel count.
    """
    channels: dict[nn.Module, int] = {}
    modules = [m for m in generator.modules() if isinstance(m, (Blur, Upsample))]
    hooks = [m.register_forward_pre_hook(lambda mod, args: channels.__setitem__(mod, args[0].shape[1]))
             for m in modules]
    size = generator.config.size
    with torch.inference_mode():
        generator(torch.zeros(batch, 3, size, size))
    for hook in hooks:
        hook.remove()
    for module, count in channels.items():
        kernel = module.kernel
        if isinstance(module, Blur):
            kernel = kernel.flip([0, 1])  # conv2d correlates; the FIR convolves
            module.forward = types.MethodType(_static_blur, module)
        else:
            module.forward = types.MethodType(_static_upsample, module)
        module.onnx_weight = kernel.expand(count, 1, *kernel.shape).contiguous()
    return len(channels)


def set_modulation_form(generator: nn.Module, form: str) -> int:
    """Force every ModulatedConv2d to one form (in place); returns the count.

    "activation": modulate the input channels, convolve with the shared constant weight, scale the output
    channels (``fuse_modulation = False``). "runtime": per-sample weights with the batch folded into conv
    groups, the reference form (``fuse_modulation = True``). By default the module picks per call by size.
    """
    if form not in ("activation", "runtime"):
        raise ValueError(f"form must be 'activation' or 'runtime', got {form!r}")
    modules = [m for m in generator.modules() if isinstance(m, ModulatedConv2d)]
    for module in modules:
        module.fuse_modulation = form == "runtime"
    return len(modules)


def make_trt_friendly(generator: nn.Module) -> int:
    """Activation-form modulated convs (constant conv weights); see ``set_modulation_form``."""
    return set_modulation_form(generator, "activation")


def export_onnx(generator: nn.Module, path: Path, opset: int = 17, batch: int = 1) -> int:
    """Export with the first opset (from ``opset`` down) that works; returns the opset used.

    Raises:
        RuntimeError: no opset worked (the last error is included).
    """
    size = generator.config.size
    dummy = torch.zeros(batch, 3, size, size)
    last: Exception | None = None
    for version in [opset] + [v for v in OPSETS if v < opset]:
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():  # expected, not actionable here: the legacy exporter is chosen
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchScript.*")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                torch.onnx.export(generator, (dummy,), buffer, dynamo=False, opset_version=version,
                                  input_names=["input"], output_names=["output"], do_constant_folding=True)
        except Exception as err:  # the exporter raises many types; try the next opset
            last = err
            log.warning("opset %d: export failed (%s: %s)", version, type(err).__name__,
                        str(err).splitlines()[0] if str(err) else "")
            continue

        atomic_write_bytes(path, buffer.getvalue())
        return version
    raise RuntimeError(f"ONNX export failed for every opset {OPSETS}: {last}")


def verify_onnx(generator: nn.Module, path: Path, batch: int = 1, seed: int = 0) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch on a seeded random input in [-1, 1]."""
    import onnxruntime as ort

    size = generator.config.size
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(batch, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x})
    with torch.inference_mode():
        torch_out = generator(torch.from_numpy(x)).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def rewrite_difference(generator: nn.Module, rewrite, batch: int = 1, seed: int = 0) -> float:
    """Apply ``rewrite(generator)`` in place; returns the max abs output difference it caused."""
    size = generator.config.size
    x = torch.from_numpy(
        np.random.default_rng(seed).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        before = generator(x)
    rewrite(generator)
    with torch.inference_mode():
        after = generator(x)
    return float((before - after).abs().max())
