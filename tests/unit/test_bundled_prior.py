"""The bundled compact prior "gpen-compact-256" / "gpen-compact-256-D": registry entries, checksum pinning,
loading by name, the compact_256 model preset and the restoration default base.

The tests that need the files generate them (a random compact G/D exported by gpen_fewshot.export.prior in
the real format) in a temporary folder that stands in for gpen_fewshot/assets/weights/, so they pass with or
without the real files in the package; ``test_shipped_prior_files_are_pinned`` checks the real ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gpen_fewshot import weights
from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator
from gpen_fewshot.archs.checkpoints import CheckpointError, load_discriminator, load_generator
from gpen_fewshot.archs.discriminator import DiscriminatorConfig
from gpen_fewshot.archs.gpen import GeneratorConfig
from gpen_fewshot.export.prior import export_prior
from gpen_fewshot.weights import REGISTRY, ChecksumMismatchError, WeightsUnavailableError, weight_path

REPO = Path(__file__).resolve().parents[2]
G_NAME, D_NAME = "gpen-compact-256", "gpen-compact-256-D"
COMPACT_G = GeneratorConfig(size=256, style_dim=256, n_mlp=4, channel_multiplier=1, narrow=0.25,
                            residual=True)
COMPACT_D = DiscriminatorConfig(size=256, channel_multiplier=1, narrow=0.25)
LICENCE = ("non-commercial research only (trained on UTKFace; see "
           "gpen_fewshot/assets/weights/gpen-compact-256.md)")

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for gpen_fewshot/assets/weights/ holding a random compact prior exported in the real format
    (from a checkpoint dict laid out like GPENFewShotModule's Lightning checkpoints). Read-only for the
    tests."""
    root = tmp_path_factory.mktemp("bundled_prior")
    torch.manual_seed(0)
    generator, discriminator = GPENGenerator.from_config(COMPACT_G), GPENDiscriminator.from_config(COMPACT_D)
    state = {f"generator_ema.{k}": v for k, v in generator.state_dict().items()}
    state.update({f"generator.{k}": v for k, v in generator.state_dict().items()})
    state.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
    checkpoint = {"state_dict": state, "gpen_fewshot": {
        "iteration": 7, "stage": "full", "generator_config": COMPACT_G.asdict(),
        "discriminator_config": COMPACT_D.asdict(), "template": "gpen"}}
    torch.save(checkpoint, root / "last.ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: runs before the torch_single_thread fixture
    try:
        export_prior(root / "last.ckpt", G_NAME, root / "weights")
    finally:
        torch.set_num_threads(threads)
    return root / "weights"


@pytest.fixture
def use_bundled(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """``use_bundled(folder)``: make ``weights.bundled_dir()`` return ``folder``, with the registry's pinned
    sha256/size of the compact prior replaced by those of the files there (the real ones are pinned to the
    shipped files, which these stand-ins are not)."""
    def use(folder: Path) -> Path:
        monkeypatch.setattr(weights, "bundled_dir", lambda: folder)
        for name in (G_NAME, D_NAME):
            path = folder / REGISTRY[name].filename
            pinned = (weights.sha256_file(path), path.stat().st_size) if path.is_file() else (None, None)
            monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], sha256=pinned[0],
                                                                    size=pinned[1]))
        return folder

    return use


def test_registry_entries() -> None:
    g, d = REGISTRY[G_NAME], REGISTRY[D_NAME]
    assert (g.kind, d.kind) == ("generator", "discriminator")
    assert (g.location, d.location) == ("bundled", "bundled") and g.url is None and d.url is None
    assert (g.filename, d.filename) == ("gpen-compact-256.safetensors", "gpen-compact-256-D.safetensors")
    assert g.licence == LICENCE and d.licence == LICENCE
    # driven by the constants
    assert (g.sha256, g.size) == (weights.COMPACT_256_SHA256, weights.COMPACT_256_SIZE)
    assert (d.sha256, d.size) == (weights.COMPACT_256_D_SHA256, weights.COMPACT_256_D_SIZE)
    assert weights.destination(G_NAME) == REPO / "gpen_fewshot" / "assets" / "weights" / g.filename


def test_generated_bundled_files_resolve_and_load_by_name(bundled: Path, use_bundled) -> None:
    use_bundled(bundled)
    assert weight_path(G_NAME, download=False) == bundled / "gpen-compact-256.safetensors"
    assert weights.is_available(G_NAME) and weights.is_available(D_NAME)
    assert weights.verify(D_NAME) == weights.sha256_file(bundled / "gpen-compact-256-D.safetensors")
    generator = load_generator(G_NAME)  # fp16 file, config inferred from the shapes, strict, fp32 model
    assert generator.config == COMPACT_G and not generator.training
    assert all(v.dtype == torch.float32 for v in generator.state_dict().values())
    discriminator = load_discriminator(D_NAME)
    assert discriminator.config == COMPACT_D
    with pytest.raises(CheckpointError, match="holds discriminator weights, not a GPEN generator"):
        load_generator(D_NAME)


def test_pinned_checksum_and_size_are_enforced(bundled: Path, use_bundled, monkeypatch) -> None:
    use_bundled(bundled)
    path = bundled / "gpen-compact-256.safetensors"
    pinned = dataclasses.replace(REGISTRY[G_NAME], sha256=weights.sha256_file(path), size=path.stat().st_size)
    monkeypatch.setitem(REGISTRY, G_NAME, pinned)
    assert weight_path(G_NAME, download=False) == path and weights.is_available(G_NAME)
    monkeypatch.setitem(REGISTRY, G_NAME, dataclasses.replace(pinned, sha256="0" * 64))
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch .*expected 0{64} \\(registry\\)"):
        weight_path(G_NAME, download=False)
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        load_generator(G_NAME)
    monkeypatch.setitem(REGISTRY, G_NAME, dataclasses.replace(pinned, size=pinned.size + 1))
    assert not weights.is_available(G_NAME)
    with pytest.raises(ChecksumMismatchError, match=f"expected {pinned.size + 1} bytes"):
        weight_path(G_NAME, download=False)


def test_missing_bundled_file_is_a_broken_install(tmp_path: Path, use_bundled) -> None:
    use_bundled(tmp_path)
    missing = f"bundled weights 'gpen-compact-256' are missing from the installed package: {tmp_path}"
    assert not weights.is_available(G_NAME)
    with pytest.raises(WeightsUnavailableError, match=missing):
        weight_path(G_NAME)  # download=True: still never downloaded
    with pytest.raises(WeightsUnavailableError, match="reinstall gpen-fewshot"):
        load_discriminator(D_NAME)
    from gpen_fewshot.training.networks import build_networks

    with pytest.raises(WeightsUnavailableError, match=missing):
        build_networks(_compact_256_preset())


def _compact_256_preset():
    return instantiate(OmegaConf.load(REPO / "configs" / "model" / "compact_256.yaml"))


def test_compact_256_preset_starts_from_the_bundled_prior(bundled: Path, use_bundled) -> None:
    from gpen_fewshot.training.networks import build_networks

    use_bundled(bundled)
    config = _compact_256_preset()
    assert ((config.init, config.generator_weights, config.discriminator_weights) ==
            ("pretrained", G_NAME, D_NAME))
    generator, discriminator, sources = build_networks(config)
    assert sources.generator == str(bundled / "gpen-compact-256.safetensors")
    assert sources.discriminator == str(bundled / "gpen-compact-256-D.safetensors")
    assert generator.training and generator.config == COMPACT_G and discriminator.config == COMPACT_D
    expected = load_generator(bundled / "gpen-compact-256.safetensors").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in generator.state_dict().items())


def test_restoration_default_base_is_the_bundled_prior(bundled: Path, tmp_path: Path, use_bundled,
                                                        monkeypatch) -> None:
    from gpen_fewshot.restore.models import BaseModelUnavailableError, default_base_name, load_base_model

    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path / "weights"))  # no GPEN-BFR-512 there
    use_bundled(bundled)
    assert default_base_name() == G_NAME
    model = load_base_model()
    assert model.size == 256 and model.source == G_NAME and model.template == "gpen"
    use_bundled(tmp_path / "empty")
    with pytest.raises(BaseModelUnavailableError,
                       match="bundled compact prior 'gpen-compact-256' is missing") as info:
        default_base_name()
    assert "GPEN-BFR-512.pth" in str(info.value) and str(tmp_path / "weights") in str(info.value)


@pytest.mark.parametrize("name", [G_NAME, D_NAME])
def test_shipped_prior_files_are_pinned(name: str) -> None:
    """The real package folder: once a file is shipped, its sha256 and size must be pinned in weights.py (the
    constants at the top) and match; until then the registry reports it as missing from the install."""
    spec, path = REGISTRY[name], weights.destination(name)
    if spec.sha256 is None and spec.size is None:
        assert not path.exists(), (f"{path} is shipped but not pinned: paste the COMPACT_256* lines printed "
                                   "by scripts/export_prior.py into gpen_fewshot/weights.py")
        with pytest.raises(WeightsUnavailableError, match="missing from the installed package"):
            weight_path(name)
        return
    assert spec.sha256 is not None and spec.size is not None, "pin both the sha256 and the size"
    assert weights.verify(name) == spec.sha256 and path.stat().st_size == spec.size
    loader, config = ((load_generator, COMPACT_G) if spec.kind == "generator"
                      else (load_discriminator, COMPACT_D))
    assert loader(name).config == config  # strict, into the compact architecture
