"""Small JSON files: reading one with one clear error, and values made JSON-safe."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


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


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float (also NumPy's) written as its string ("inf", "nan"), recursively
    through dicts, lists and tuples (tuples become lists): strict JSON has no infinities, and a PSNR of
    identical images is one."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(float(obj))
    if isinstance(obj, dict):
        return {key: jsonable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(value) for value in obj]
    return obj
