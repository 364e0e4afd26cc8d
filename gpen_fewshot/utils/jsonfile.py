"""Reading small JSON files (configs, manifests) with one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_json_object(path: str | os.PathLike, error: type[Exception] = ValueError) -> dict:
    """The JSON object stored in ``path``.

    Raises:
        error: (the caller's exception type) unreadable file, invalid JSON, or not an object; the message
            names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable JSON ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data
