"""OmegaConf resolvers used by ``configs/`` (registered once, on import of ``gpen_fewshot.training``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

DEMO_PREFIX = "person_"


def person_dir(person: str, persons_dir: str, demo_dir: str) -> str:
    """Photo folder of ``person``: ``<persons_dir>/<person>`` if it exists, else the bundled
    ``<demo_dir>/person_<person>`` if that exists, else ``<persons_dir>/<person>`` (reported missing later)."""
    own = Path(persons_dir) / str(person)
    demo = Path(demo_dir) / f"{DEMO_PREFIX}{person}"
    if not own.is_dir() and demo.is_dir():
        return str(demo)
    return str(own)


def register_resolvers() -> None:
    """Register ``${person_dir:person,persons_dir,demo_dir}`` (idempotent)."""
    if not OmegaConf.has_resolver("person_dir"):
        OmegaConf.register_new_resolver("person_dir", person_dir)
