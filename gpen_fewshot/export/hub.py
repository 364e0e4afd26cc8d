"""Optional Hugging Face Hub integration for exports (``huggingface_hub``, imported only when used).

A per-person export is already a self-describing folder (config.json, model.safetensors, person.json, the
README.md model card), so the Hub stores it as it is:

    url = push_to_hub("data/persons/alice/weights", "me/gpen-alice")        # private by default
    weights = load_person(from_pretrained("me/gpen-alice"))                  # or a local folder

``push_to_hub`` checks that the folder loads strictly before anything is uploaded. ``person.json`` holds the
face embedding of a real person: the repository is created private unless ``private=False`` is asked for,
and must not be published without that person's consent (the model card says the same).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gpen_fewshot.export.common import ExportError
from gpen_fewshot.export.reader import load_person

HUB_PREFIX = "hf://"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ExportError("the Hugging Face Hub integration needs huggingface_hub: pip install "
                          "huggingface_hub (it comes with gpen-fewshot[app])") from None
    return huggingface_hub


def push_to_hub(export_dir: str | os.PathLike, repo_id: str, *, private: bool = True,
                token: str | None = None, commit_message: str = "Upload gpen-fewshot export") -> str:
    """Upload an export folder to the Hub repository ``repo_id`` (created if missing); returns its URL.

    Raises:
        ExportError: the folder is not a loadable export, or huggingface_hub is missing.
    """

    folder = Path(export_dir)
    load_person(folder)  # strict: never upload a half-written or foreign folder
    hub = _hub()
    api = hub.HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(url)


def from_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder of an export: ``name_or_path`` itself when it is a folder, else the Hub repository
    ``owner/name`` (or ``hf://owner/name``) downloaded into the Hub cache (``revision`` pins a commit).

    The result is what :func:`gpen_fewshot.export.load_person` and ``Restorer.from_pretrained`` take.

    Raises:
        ExportError: neither a folder nor a Hub repository id, or huggingface_hub is missing.
    """
    text = str(name_or_path)
    if Path(text).is_dir():
        return Path(text)
    repo_id = text.removeprefix(HUB_PREFIX)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"{text}: not an export folder, nor a Hub repository id like 'owner/name'")
    folder = _hub().snapshot_download(repo_id=repo_id, revision=revision,
                                      cache_dir=None if cache_dir is None else str(cache_dir))
    return Path(folder)
