"""One-line errors for command-line overrides that Hydra itself rejects (``train.py``, ``evaluate.py``).

Hydra reports an unknown key, a missing config option or an unparsable override in a multi-line message of its
own before our code runs. :func:`check_overrides` composes the config once with the same overrides (no run
folder is resolved or created: interpolations stay unresolved) and turns such a failure into one ``error:``
line and exit status 1. Multirun sweeps, Hydra's own flags (``--help``, ``--cfg``, ...) and
``HYDRA_FULL_ERROR=1`` are left to Hydra.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from gpen_fewshot.cli.errors import exit_with_error

# Lines of Hydra / OmegaConf messages that add nothing on one line.
_NOISE = re.compile(r"^\s*(full_key|object_type|reference_type|Set the environment variable|See https://|\^|"
                    r"Config search path|provider=)")


def one_line(message: str) -> str:
    """A Hydra / OmegaConf error message on one line: meaningful lines joined with ``; ``, tabs as commas."""
    lines = [line for line in str(message).splitlines() if line.strip() and not _NOISE.match(line)]
    text, options = [], []
    for line in lines:  # Hydra lists a config group's options one per tab-indented line
        (options if line.startswith("\t") else text).append(line.strip())
    joined = "; ".join(line.rstrip(".:") for line in text)
    return f"{joined}: {', '.join(options)}" if options else joined


def check_overrides(config_dir: str | Path, config_name: str, argv: Sequence[str]) -> None:
    """Exit with one ``error:`` line when Hydra would reject the overrides in ``argv`` (``sys.argv[1:]``).

    Raises:
        SystemExit: (code 1) for an override Hydra cannot apply.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("-") for a in argv):
        return  # flags (--multirun, --help, --cfg, ...) and full tracebacks: Hydra's own handling
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            compose(config_name, overrides=list(argv))
    except (HydraException, OmegaConfBaseException) as error:
        name = type(error).__name__
        detail = one_line(str(error))
        if "Lexer" in name or "Parse" in name or "mismatched input" in detail:
            detail = (f"cannot parse the override(s) {' '.join(argv)!r} ({detail}); quote values with "
                      "spaces or non-ASCII characters, e.g. 'paths.log_dir=\"/my runs\"'")
        exit_with_error(detail)
