"""Fine-tune GPEN on one person: ``python train.py person=alice`` (see docs/training.md)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gpen_fewshot.cli import resolvers
from gpen_fewshot.cli.hydra_args import check_overrides
from gpen_fewshot.cli.train import main_task


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return main_task(cfg)


if __name__ == "__main__":
    os.environ.setdefault("GPEN_FEWSHOT_ROOT", str(Path(__file__).resolve().parent))
    check_overrides(Path(__file__).resolve().parent / "configs", "train", sys.argv[1:])  # one-line errors
    resolvers.register_resolvers()
    main()
