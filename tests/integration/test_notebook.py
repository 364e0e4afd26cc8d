"""notebooks/quickstart.ipynb: committed with the outputs of a run on the bundled prior, and runs top to
bottom.

The suite executes it again (nbclient, CPU, ~2 min).

The executed notebook writes into ``$GPEN_QUICKSTART_DIR`` (a tmp folder here); the test then checks the
artefacts of every step: the prepared crops, the person export, the evaluation report, the restored photos
(strength 0 pixel-identical to the base model, strength 1 different) and the routed group photo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from gpen_fewshot.utils.image import read_image
from gpen_fewshot.weights import weight_path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"
DEMO_PHOTOS = REPO_ROOT / "data" / "demo" / "person_obama"
GROUP_PHOTO = REPO_ROOT / "data" / "demo" / "group" / "obama_and_biden.jpg"
CELL_TIMEOUT_S = 300  # one cell (the training run is the longest: ~30 s on 2 quiet cores)


def _read_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_committed_notebook_shows_a_complete_run_of_the_bundled_prior() -> None:
    """Readers on GitHub see the outputs: one top-to-bottom run, no errors, made with today's bundled
    prior."""
    notebook = _read_notebook()
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code_cells) >= 8, "the quickstart lost its steps"
    counts = [cell.execution_count for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), f"not one clean top-to-bottom run: {counts}"
    outputs = [out for cell in code_cells for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert sum("image/png" in out.get("data", {}) for out in outputs) >= 7
    text = "".join(out.get("text", "") for out in outputs)
    prior = weight_path("gpen-compact-256", download=False)
    assert f"gpen-compact-256: {prior.name}, {prior.stat().st_size / 1e6:.1f} MB" in text, (
        "the committed outputs were made with another prior: re-run the notebook and commit it with its "
        "outputs (python -c \"import nbformat, nbclient; p = 'notebooks/quickstart.ipynb'; nb = "
        "nbformat.read(p, 4); nbclient.NotebookClient(nb, resources={'metadata': {'path': "
        "'notebooks'}}).execute(); nbformat.write(nb, p)\")")
    assert notebook.metadata.kernelspec.name == "python3"


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture
def executed_notebook(tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> tuple[nbformat.NotebookNode, Path, dict]:
    """Run the notebook in a python3 kernel from notebooks/ (as Jupyter would).

    Returns:
        The executed notebook, its work folder, and the repository folders it must not touch as listed before.
    """
    from nbclient import NotebookClient

    work = tmp_path / "work"
    # the kernel and the scripts it starts inherit this environment
    monkeypatch.setenv("GPEN_QUICKSTART_DIR", str(work))
    monkeypatch.setenv("GPEN_FEWSHOT_WEIGHTS_DIR", str(tmp_path / "weights"))  # no local weights: hermetic
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # faster than two contending threads on 2 shared cores
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("GPEN_FEWSHOT_ROOT", raising=False)  # the notebook must find the checkout itself
    before = {"prepared": _entries(DEMO_PHOTOS / ".prepared"),
              "outputs": _entries(REPO_ROOT / "outputs" / "obama"), "notebooks": _entries(NOTEBOOK.parent)}
    notebook = _read_notebook()
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.monotonic()
    client.execute()
    print(f"\nquickstart notebook executed in {time.monotonic() - start:.0f} s")
    return notebook, work, before


@pytest.mark.subprocess
def test_quickstart_notebook_runs_and_produces_its_artefacts(executed_notebook) -> None:
    notebook, work, before = executed_notebook

    # every code cell ran without error; the figures and the contact sheet were displayed
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert sum("image/png" in out.get("data", {}) for out in outputs) >= 7

    # 1. prepared crops (256 px, one held-out photo) and the contact sheet
    manifest = json.loads((work / "prepared" / "256_gpen" / "manifest.json").read_text())
    splits = sorted(photo["split"] for photo in manifest["photos"])
    assert splits == ["holdout", "train", "train", "train"]
    assert read_image(next((work / "prepared" / "256_gpen" / "train").glob("*.png"))).shape == (256, 256, 3)
    assert (work / "prepared" / "256_gpen" / "contact_sheet.png").is_file()

    # 3. training run: a delta export on the bundled prior
    export = work / "run" / "export"
    assert {"config.json", "model.safetensors", "person.json"} <= _entries(export)
    person = json.loads((export / "person.json").read_text())
    config = json.loads((export / "config.json").read_text())
    assert person["name"] == "obama" and person["n_photos"] == 3
    assert config["size"] == 256 and config["mode"] == "delta"
    assert person["base_sha256"] == config["base"]["sha256"]
    assert sorted(p.name for p in (work / "run" / "samples").glob("iter_*.png")) == [
        "iter_000000.png", "iter_000015.png", "iter_000030.png"]

    # 4. evaluation report: input, base and the tuned run on the held-out photo
    report = (work / "eval" / "report.md").read_text()
    assert "| base | base |" in report and "| run | tuned |" in report
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert "psnr" in json.dumps(metrics)

    # 5. restored photo: full size, strength 0 == base bit for bit, strength 1 differs from it
    holdout = next(photo["file"] for photo in manifest["photos"] if photo["split"] == "holdout")
    photo = read_image(DEMO_PHOTOS / holdout)
    restored = {name: read_image(work / "restored" / f"{name}.png")
                for name in ("base", "strength_0", "strength_0.5", "strength_1")}
    assert all(image.shape == photo.shape for image in restored.values())
    assert np.array_equal(restored["strength_0"], restored["base"])
    assert not np.array_equal(restored["strength_1"], restored["strength_0"])
    assert not np.array_equal(restored["strength_0.5"], restored["strength_0"])
    assert not np.array_equal(restored["strength_0.5"], restored["strength_1"])
    assert not np.array_equal(restored["strength_1"], photo)

    # 6. group photo through restore.py: the person's face routed to the tuned model, the others to the base
    group = read_image(work / "restored" / "group.png")
    assert group.shape == read_image(GROUP_PHOTO).shape
    faces = json.loads((work / "restored" / "group.png.json").read_text())["faces"]
    models = [face["model"] for face in faces]
    assert models.count("obama") == 1 and "base" in models

    # nothing written into the repository (other processes may add runs of their own to outputs/ meanwhile)
    if "256_gpen" not in before["prepared"]:
        assert "256_gpen" not in _entries(DEMO_PHOTOS / ".prepared")
    for run in _entries(REPO_ROOT / "outputs" / "obama") - before["outputs"]:
        overrides = REPO_ROOT / "outputs" / "obama" / run / ".hydra" / "overrides.yaml"
        assert not overrides.is_file() or "quickstart" not in overrides.read_text()
    assert _entries(NOTEBOOK.parent) == before["notebooks"]
