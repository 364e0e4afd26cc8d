"""An export whose config.json is valid JSON with bad values is one clear error (issue 15, item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli.restore import main
from gpen_fewshot.export import ExportError, export_generator, load_person
from gpen_fewshot.utils.image import write_image

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_generator(GPENGenerator(**TINY), tmp_path_factory.mktemp("e") / "export")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("size", "big", "generator size 'big' must be a power of two"),
    ("size", 300, "generator size 300 must be a power of two"),
    ("size", None, "generator size None"),
    ("narrow", "x", "generator narrow 'x' must be a number > 0"),
    ("n_mlp", -1, "generator n_mlp -1 must be an integer >= 1"),
    ("isconcat", "yes", "generator isconcat 'yes' must be true or false"),
    ("template", 5, "template 5 must be one of"),
    ("generator", [1], "'generator' must be an object"),
    ("residual", 1, "generator residual 1 must be true or false"),
    ("top:size", "big", "size 'big' does not match the generator's size 32"),
    ("top:size", 64, "size 64 does not match the generator's size 32"),
])
def test_bad_values_in_config_json(field: str, value, message: str, export: Path, tmp_path: Path,
                                   capsys) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for file in export.iterdir():
        (bad / file.name).write_bytes(file.read_bytes())
    config = json.loads((export / "config.json").read_text())
    if field.startswith("top:"):  # the top-level copy of a generator field
        config[field.removeprefix("top:")] = value
    else:
        (config if field in ("template", "generator") else config["generator"])[field] = value
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_person(bad)
    write_image(tmp_path / "photo.png", np.full((32, 32, 3), 128, np.uint8))
    code = main(["-i", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--weights", str(bad),
                 "--base", str(export)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.split(" must")[0].split(" does")[0] in err[0]
