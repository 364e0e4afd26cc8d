"""Shared test fixtures: tiny GPEN networks, synthetic batches, and the training config composed and
shrunk."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
TEST_CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # extra config groups (data=synthetic)

TINY_SIZE = 32
TINY_GENERATOR = {"size": TINY_SIZE, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}
TINY_DISCRIMINATOR = {"size": TINY_SIZE, "channel_multiplier": 1, "narrow": 0.125}
# Overrides that make any training config run in seconds (add experiment=..., etc. in front).
SHRINK_OVERRIDES = [
    f"hydra.searchpath=[file://{TEST_CONFIG_DIR}]",
    "data=synthetic",
    "model=tiny",
    "trainer=cpu",
    "logger=none",
    "iterations=2",
    "val_every=1",
    "num_sample_images=2",
    "data.num_workers=0",
    "trainer.enable_model_summary=false",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything in tests/integration, and every subprocess or browser test, is ``slow`` (markers are
    registered in pyproject.toml; ``--strict-markers`` rejects unknown ones)."""
    for item in items:
        marked = item.get_closest_marker("subprocess") or item.get_closest_marker("browser")
        if "integration" in item.path.parts or marked:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def torch_single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine this is far faster than two contending ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for ``python train.py`` subprocesses: one thread, offline W&B, weights and persons dirs in
    tmp (a finished person run registers its export there, not in the repository's data/persons)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline",
                "GPEN_FEWSHOT_ROOT": str(REPO_ROOT), "GPEN_FEWSHOT_WEIGHTS_DIR": str(tmp_path / "weights"),
                "GPEN_FEWSHOT_PERSONS_DIR": str(tmp_path / "persons"), "HYDRA_FULL_ERROR": "1",
                "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def tiny_networks() -> Callable[[int], tuple[torch.nn.Module, torch.nn.Module]]:
    """Factory of a seeded tiny (32 px) generator + discriminator pair."""
    from gpen_fewshot.archs import GPENDiscriminator, GPENGenerator

    def make(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(seed)
        return GPENGenerator(**TINY_GENERATOR), GPENDiscriminator(**TINY_DISCRIMINATOR)

    return make


@pytest.fixture
def synthetic_batch() -> dict[str, torch.Tensor]:
    """A deterministic batch of two 32-px synthetic pairs ``{"lq", "gt"}`` in [-1, 1]."""
    from gpen_fewshot.training.synthetic import SyntheticPairs

    dataset = SyntheticPairs(TINY_SIZE, 2, seed=3)
    items = [dataset[i] for i in range(2)]
    return {key: torch.stack([item[key] for item in items]) for key in ("lq", "gt")}


@pytest.fixture
def compose_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """Compose ``configs/train.yaml`` with :data:`SHRINK_OVERRIDES` + extra overrides; outputs go to tmp, and
    so does ``paths.persons_dir`` (where finished person runs register their export).

    Returns a function ``compose(*overrides, output_dir=None) -> DictConfig`` (with HydraConfig set, so
    ``${hydra:...}`` interpolations resolve).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from gpen_fewshot.cli.resolvers import register_resolvers

    register_resolvers()

    monkeypatch.setenv("GPEN_FEWSHOT_ROOT", str(REPO_ROOT))
    monkeypatch.setenv("GPEN_FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("GPEN_FEWSHOT_PERSONS_DIR", str(tmp_path / "persons"))

    def make(*overrides: str, output_dir: Path | None = None, shrink: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            extra = SHRINK_OVERRIDES if shrink else [f"hydra.searchpath=[file://{TEST_CONFIG_DIR}]"]
            cfg = compose("train", overrides=[*extra, *overrides], return_hydra_config=True)
        run_dir = output_dir or tmp_path / "run"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            cfg.paths.log_dir = str(tmp_path / "outputs")
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def make_module(tiny_networks: Callable) -> Callable[..., object]:
    """Factory of a tiny ``GPENFewShotModule``; keyword arguments override config fields."""
    from gpen_fewshot.training.config import LossConfig, ModelConfig, OptimConfig, RunConfig
    from gpen_fewshot.training.freezing import FreezingSchedule
    from gpen_fewshot.training.module import GPENFewShotModule

    def make(total_iters: int = 4, freezing: FreezingSchedule | None = None, seed: int = 0,
             loss: dict | None = None, optim: dict | None = None) -> GPENFewShotModule:
        model = ModelConfig(name="tiny", size=TINY_SIZE, style_dim=32, n_mlp=2, channel_multiplier=1,
                            narrow=0.125, d_channel_multiplier=1, d_narrow=0.125, init="random")
        freezing = freezing or FreezingSchedule("full", [{"name": "full", "start": 0, "generator": ["all"],
                                                          "discriminator": ["all"]}])
        loss_cfg = LossConfig(**{"identity": 0.0, "r1_interval": 2, **(loss or {})})
        optim_cfg = OptimConfig(**{"warmup_iters": 1, **(optim or {})})
        return GPENFewShotModule(model, optim_cfg, loss_cfg, freezing, RunConfig(total_iters=total_iters,
                                 num_sample_images=2), networks=tiny_networks(seed))

    return make


@pytest.fixture
def fit(tmp_path: Path) -> Callable[..., object]:
    """``fit(module, callbacks=(), ckpt_path=None, samples_per_epoch=4) -> Trainer`` on synthetic 32-px
    data."""
    import pytorch_lightning as pl

    from gpen_fewshot.training.synthetic import SyntheticDataModule

    def run(module, callbacks=(), ckpt_path=None, samples_per_epoch: int = 4, val_every: int | None = None):
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=-1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0,
                             val_check_interval=val_every or 10**6, check_val_every_n_epoch=None,
                             limit_val_batches=1.0 if val_every else 0, default_root_dir=str(tmp_path),
                             callbacks=list(callbacks))
        trainer.fit(module, SyntheticDataModule(size=TINY_SIZE, samples_per_epoch=samples_per_epoch),
                    ckpt_path=ckpt_path)
        return trainer

    return run


@pytest.fixture
def stop_at() -> Callable[[int], object]:
    """Factory of a Lightning callback that requests a stop once the module reaches an iteration (as after a
    Ctrl-C at that iteration boundary)."""
    import pytorch_lightning as pl

    class StopAt(pl.Callback):
        def __init__(self, iteration: int) -> None:
            self.iteration = iteration

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if pl_module.iteration >= self.iteration:
                trainer.should_stop = True

    return StopAt
