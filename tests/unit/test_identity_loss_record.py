"""Which identity network a model trained with: recorded in person.json, read back from exports and runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from gpen_fewshot.evaluation.models import recorded_identity_loss
from gpen_fewshot.export.common import PersonMetadata


def _run(tmp_path: Path, loss: dict) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"loss": loss}))
    return run


def test_run_config_names_the_network_only_when_an_identity_term_is_on(tmp_path: Path) -> None:
    assert recorded_identity_loss(_run(tmp_path / "a",
                                       {"identity": 0.0, "identity_network": "mobilefacenet"}),
                                  None) is None
    assert recorded_identity_loss(_run(tmp_path / "b", {"identity": 0.0, "identity_reference": 0.5,
                                                        "identity_network": "mobilefacenet"}),
                                  None) == "mobilefacenet"
    # before the choice
    assert recorded_identity_loss(_run(tmp_path / "c", {"identity": 1.0}), None) == "irse50"
    assert recorded_identity_loss(None, None) is None


def test_person_json_record_wins_and_old_exports_read_as_unknown(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "person.json").write_text(json.dumps({"name": "p", "identity_loss": "mobilefacenet"}))
    assert recorded_identity_loss(_run(tmp_path, {"identity": 0.0}), export) == "mobilefacenet"
    old = {"name": "p", "n_photos": 3}
    assert PersonMetadata.from_dict(old, export / "person.json").identity_loss is None
    assert PersonMetadata.from_dict({**old, "identity_loss": "irse50"}, export).identity_loss == "irse50"
