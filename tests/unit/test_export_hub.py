"""Optional Hub integration, offline: local folders, and a stand-in for huggingface_hub's client."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.export import ExportError, export_person, from_pretrained, load_person, push_to_hub

TINY = {"style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.125}


@pytest.fixture
def export(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(GPENGenerator(32, **TINY).state_dict(), base)
    return export_person(GPENGenerator(32, **TINY), base, tmp_path / "alice" / "weights", "alice", [], "gpen",
                         {}, "cfg", 5, np.zeros(128), mode="full")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """A huggingface_hub stand-in: records calls; snapshot_download copies from a local 'remote' folder."""
    calls: dict = {"uploads": [], "repos": []}
    remote = tmp_path / "remote"

    class HfApi:
        def __init__(self, token=None) -> None:
            calls["token"] = token

        def create_repo(self, repo_id, private, exist_ok):
            calls["repos"].append((repo_id, private, exist_ok))
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, folder_path, repo_id, commit_message):
            import shutil

            shutil.copytree(folder_path, remote / repo_id)
            calls["uploads"].append((folder_path, repo_id))

    def snapshot_download(repo_id, revision=None, cache_dir=None):
        calls["download"] = (repo_id, revision)
        return str(remote / repo_id)

    module = types.SimpleNamespace(HfApi=HfApi, snapshot_download=snapshot_download)
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return calls


def test_push_then_from_pretrained_round_trip(export: Path, fake_hub: dict) -> None:
    url = push_to_hub(export, "me/gpen-alice", token="t")
    assert url.endswith("me/gpen-alice") and fake_hub["repos"] == [("me/gpen-alice", True, True)]  # private
    folder = from_pretrained("hf://me/gpen-alice", revision="abc")
    assert fake_hub["download"] == ("me/gpen-alice", "abc")
    assert load_person(folder).metadata.name == "alice"
    assert from_pretrained(export) == export  # a local folder is used as it is, no download


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path: Path, fake_hub: dict) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(ExportError):
        push_to_hub(tmp_path / "junk", "me/junk")
    assert fake_hub["uploads"] == []
    with pytest.raises(ExportError, match="owner/name"):
        from_pretrained("not-a-folder-nor-a-repo")


def test_missing_huggingface_hub_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ExportError, match="pip install huggingface_hub"):
        from_pretrained("me/gpen-alice")
