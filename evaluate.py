"""Evaluate personalised models against their base: ``python evaluate.py person=alice [ckpt=<run dir>]``
(no ckpt: alice's registered export)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from gpen_fewshot.cli import resolvers
from gpen_fewshot.cli.errors import user_errors_exit
from gpen_fewshot.cli.evaluate import main as run
from gpen_fewshot.cli.evaluate import user_errors
from gpen_fewshot.cli.hydra_args import check_overrides


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(user_errors(), blank_line=True):
        run(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    os.environ.setdefault("GPEN_FEWSHOT_ROOT", str(Path(__file__).resolve().parent))
    check_overrides(Path(__file__).resolve().parent / "configs", "eval", sys.argv[1:])  # one-line errors
    resolvers.register_resolvers()
    main()
