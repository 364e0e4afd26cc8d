"""Atomic file writes: a reader never sees a half-written file, an interrupted write loses nothing.

Every writer goes through a temporary file in the destination's directory (same filesystem, so the final
``os.replace`` is atomic on POSIX and Windows) and fsyncs before the rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` only if the ``with`` block finishes without error.

    Args:
        path: final destination. Its parent directory is created if needed.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Yields:
        The open temporary file object.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask applies).
    os.chmod(tmp_name, 0o666 & ~_current_umask())
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def apply_umask(folder: str | os.PathLike) -> None:
    """Give ``folder`` and the files directly inside it the permissions ``mkdir`` / ``open`` would have
    given (``tempfile.mkdtemp`` makes 0700 folders, safetensors writes 0600 files): for a temporary folder
    about to be renamed into place, so the result is readable like every other file the user makes."""
    mask = _current_umask()
    folder = Path(folder)
    os.chmod(folder, 0o777 & ~mask)
    for item in folder.iterdir():
        if item.is_file() and not item.is_symlink():
            os.chmod(item, 0o666 & ~mask)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON (sorted keys are not forced, order is kept) and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file (imported lazily so this module stays torch-free)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
