"""evaluate.py: ckpt spec resolution (every format), base always included, sweeps ranked, end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.evaluation.models import ModelSpecError, load_model, resolve_models
from gpen_fewshot.evaluation.report import read_csv, read_json
from gpen_fewshot.utils.image import write_image

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
TINY = {"style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.125}


def _generator(seed: int, size: int = SIZE, narrow: float = 0.125) -> GPENGenerator:
    torch.manual_seed(seed)
    return GPENGenerator(size, **{**TINY, "narrow": narrow}).eval()


def _lightning_ckpt(generator: GPENGenerator, path: Path) -> Path:
    """What the training module's checkpoints hold (generator + EMA prefixes, extra entries)."""
    state = {f"{prefix}.{k}": v for prefix in ("generator", "generator_ema")
             for k, v in generator.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "gpen_fewshot": {"iteration": 3, "template": "gpen"}}, path)
    return path


def _run_dir(root: Path, seed: int, base: Path | str, export: bool = True, overrides: tuple = ()) -> Path:
    """A training run directory as train.py leaves it (a person export of a run that trained everything)."""
    from gpen_fewshot.training.export import export_run
    from gpen_fewshot.training.freezing import ResolvedStage

    root.mkdir(parents=True)
    (root / ".hydra").mkdir()
    init = "random" if base == "random" else "pretrained"
    config = {"person": "alice",
              "model": {"generator_weights": None if init == "random" else str(base), "init": init},
              "data": {"template": "gpen", "holdout": None, "size": "${model.size}"}}
    (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (root / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    generator = _generator(seed)
    _lightning_ckpt(generator, root / "checkpoints" / "last.ckpt")
    if export:
        everything = ResolvedStage(0, "full", 0, frozenset(n for n, _ in generator.named_parameters()),
                                   frozenset())
        export_run(generator, [everything], str(base), root / "export", "gpen", person="alice")
    return root


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.pth"
    torch.save(_generator(0).state_dict(), path)
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_run_dir_export_and_checkpoints(tmp_path: Path, base_file: Path) -> None:
    run = _run_dir(tmp_path / "runs" / "2026-01-01_10-00-00", 1, base_file)
    base, tuned = resolve_models(str(run))
    assert (base.name, base.role, base.source) == ("base", "base", str(base_file))
    assert ((tuned.name, tuned.format, tuned.template, tuned.run_dir) ==
            ("2026-01-01_10-00-00", "export", "gpen", run))
    assert _same_weights(load_model(tuned), _generator(1)) and _same_weights(load_model(base), _generator(0))
    last = resolve_models(str(run), select="last")[1]
    assert last.format == "checkpoint" and last.name == "2026-01-01_10-00-00/last"
    assert _same_weights(load_model(last), _generator(1))  # the EMA generator of a Lightning checkpoint
    with pytest.raises(ModelSpecError, match="without checkpoints/best.ckpt"):
        resolve_models(str(run), select="best")
    file_spec = resolve_models(str(run / "checkpoints" / "last.ckpt"))
    assert [s.name for s in file_spec] == ["base", "2026-01-01_10-00-00/last"]
    assert file_spec[0].source == str(base_file)  # base read from the run's records


def test_person_export_globs_lists_and_base_options(tmp_path: Path, base_file: Path) -> None:
    from gpen_fewshot.export import export_person

    tuned = _generator(2)
    export = export_person(tuned, str(base_file), tmp_path / "alice" / "weights", "alice",
                           [n for n, _ in tuned.named_parameters() if n.startswith("ecd")], "gpen", {}, None,
                           3, None)
    specs = resolve_models(str(tmp_path / "alice"))  # person folder holding weights/
    assert [(s.name, s.format) for s in specs] == [("base", "checkpoint"), ("alice", "export")]
    assert specs[0].source == str(base_file)
    assert _same_weights(load_model(specs[1]), tuned)  # delta export rebuilt on its base
    run_a = _run_dir(tmp_path / "runs" / "a", 3, base_file)
    run_b = _run_dir(tmp_path / "runs" / "b", 4, base_file, export=False)
    globbed = resolve_models(str(tmp_path / "runs" / "*"))
    assert [(s.name, s.format) for s in globbed] == [("base", "checkpoint"), ("a", "export"),
                                                     ("b", "checkpoint")]
    listed = resolve_models([str(export), str(run_a / "checkpoints" / "last.ckpt"), str(run_b)])
    assert [s.name for s in listed] == ["base", "alice", "a/last", "b"]
    other_base = tmp_path / "other.pth"
    torch.save(_generator(9).state_dict(), other_base)
    assert resolve_models(str(run_a), base=str(other_base))[0].source == str(other_base)
    assert [s.name for s in resolve_models(str(run_a), base="none")] == ["a"]
    assert [s.role for s in resolve_models(None, base=str(other_base))] == ["base"]


def test_bad_specs_give_one_clear_error(tmp_path: Path, base_file: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"ckpt: .*missing\.ckpt: no such file or directory"):
        resolve_models(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ModelSpecError, match="matches nothing"):
        resolve_models(str(tmp_path / "nothing*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="is not a checkpoint file, an export directory"):
        resolve_models(str(tmp_path / "empty"))
    random_run = _run_dir(tmp_path / "random_run", 1, "random")
    with pytest.raises(ModelSpecError, match="random weights.*base=none"):
        resolve_models(str(random_run))
    # model.init=auto that fell back to random weights
    auto_run = _run_dir(tmp_path / "auto_run", 1, "random")
    (auto_run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"generator_weights": str(base_file), "init": "auto"}, "data": {"template": "gpen"}}))
    with pytest.raises(ModelSpecError, match="random weights"):  # the export knows better than the config
        resolve_models(str(auto_run))
    other = tmp_path / "other.pth"
    torch.save(_generator(5).state_dict(), other)
    _run_dir(tmp_path / "mixed" / "x", 1, base_file)
    _run_dir(tmp_path / "mixed" / "y", 2, other)
    with pytest.raises(ModelSpecError, match="different bases"):
        resolve_models(str(tmp_path / "mixed" / "*"))
    with pytest.raises(ModelSpecError, match="base: .*nope.pth: no such file"):
        resolve_models(str(random_run), base=str(tmp_path / "nope.pth"))
    with pytest.raises(ModelSpecError, match="nothing to evaluate"):
        resolve_models(None)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    spec = resolve_models(str(broken), base="none")[0]
    with pytest.raises(ModelSpecError, match="broken.pth"):
        load_model(spec)


def _fake_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A prepared person with 3 training and 2 held-out synthetic crops (no face detection)."""
    from gpen_fewshot.data import person as person_module
    from gpen_fewshot.evaluation import protocol as protocol_module

    root = tmp_path / "alice" / ".prepared" / f"{SIZE}_gpen"
    rng = np.random.default_rng(0)
    records = []
    for i in range(5):
        split = "holdout" if i < 2 else "train"
        crop = f"{split}/{i:03d}_{i:08x}.png"
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        write_image(root / crop, np.kron(small, np.ones((SIZE // 4, SIZE // 4, 1), np.uint8)))
        records.append(person_module.PhotoRecord(f"{i:03d}.jpg", f"{i:064x}", "used", "ok", split, crop))

    def prepare(person_dir: Path, size: int = 256, template: str = "gpen", **kwargs: object) -> object:
        return person_module.PreparedPerson(
            "alice", root, root / "manifest.json", root / "contact_sheet.png",
            [root / r.crop for r in records if r.split == "train"],
            [root / r.crop for r in records if r.split == "holdout"], tuple(records), True)

    monkeypatch.setattr(person_module, "prepare_person", prepare)
    monkeypatch.setattr(protocol_module, "prepare_person", prepare)  # its own binding of the name
    return tmp_path / "alice"


def test_multirun_is_evaluated_and_ranked(tmp_path: Path, base_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from gpen_fewshot.cli.evaluate import main

    person_dir = _fake_person(tmp_path, monkeypatch)
    sweep = tmp_path / "multirun_2026-01-01_10-00-00"
    for job, seed in enumerate((11, 12, 13)):
        _run_dir(sweep / str(job), seed, base_file, overrides=(f"optim.lr_g={seed}",))
    (sweep / "multirun.yaml").write_text("{}")
    out = tmp_path / "eval"
    cfg = {"person_dir": str(person_dir), "ckpt": str(sweep), "base": None, "checkpoint": "export",
           "out_dir": str(out), "protocol": {"levels": ["mild", "severe"], "copies": 1, "seed": 0},
           "metrics": {"lpips": False, "fid": False, "niqe": False, "identity": False},
           "rank_by": "psnr", "rank_level": "mean", "device": "cpu", "save_inputs": False, "progress": False}
    main(cfg)
    data = read_json(out / "metrics.json")
    person = data["results"]["person"]
    names = [f"{sweep.name}/{j}" for j in range(3)]
    assert list(person) == ["input", "base", *names]
    order = [r["model"] for r in data["ranking"]["order"]]
    means = {n: np.mean([person[n][lv]["psnr"] for lv in ("mild", "severe")]) for n in names}
    assert order == sorted(names, key=lambda n: -means[n])
    assert [r["value"] for r in data["ranking"]["order"]] == pytest.approx([means[n] for n in order])
    report = (out / "report.md").read_text()
    assert "## Ranking by psnr (mean over levels, held-out photos)" in report
    assert f"| 1 | {order[0]} |" in report and "optim.lr_g=11" in report
    assert read_csv(out / "metrics.csv") == data["results"]
    assert sorted(p.name for p in out.glob("grid_*.png")) == ["grid_person_mild.png",
                                                              "grid_person_severe.png"]


@pytest.mark.subprocess
def test_evaluate_py_end_to_end(tmp_path: Path, subprocess_env: dict) -> None:
    """``python evaluate.py`` on the bundled demo person (real detection and alignment), tiny 256-px
    models."""
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(_generator(0, 256, 0.0625).state_dict(), base)
    tuned = _lightning_ckpt(_generator(1, 256, 0.0625), tmp_path / "tuned" / "checkpoints" / "last.ckpt")
    others = tmp_path / "others" / "someone"
    others.mkdir(parents=True)
    (others / "photo.jpg").write_bytes(
        (REPO / "tests" / "fixtures" / "faces" / "obama_biden.jpg").read_bytes())
    out = tmp_path / "eval"
    cmd = [sys.executable, "evaluate.py", "person=obama", f"ckpt={tuned}", f"base={base}", f"out_dir={out}",
           f"cache_dir={tmp_path / 'prepared'}", f"others={others}", "protocol.copies=1",
           "metrics.niqe=false", "device=cpu", "progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unavailable: lpips: needs alexnet-owt-7be5be79.pth" in proc.stdout
    data = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in data["models"]] == ["input", "base", "tuned/last"]
    person = data["results"]["person"]
    assert set(person["base"]) == {"mild", "moderate", "severe"}
    assert person["input"]["mild"]["psnr"] > person["input"]["severe"]["psnr"] > 10  # real degradations
    assert 0.0 <= person["base"]["mild"]["id_distance_gt"] < 2.0  # dlib ran on the restored crops
    assert person["input"]["mild"]["id_verified_ref"] == 1.0  # the held-out photo is recognised as the person
    assert "others" in data["results"] and (out / "grid_others_severe.png").is_file()
    assert len(list((out / "inputs").rglob("*_lq.png"))) == 3 + 3  # 1 held-out + 1 other photo, 3 levels
    quiet_env = {k: v for k, v in subprocess_env.items() if k != "HYDRA_FULL_ERROR"}  # the user's view
    bad = subprocess.run([*cmd[:2], "person=obama", f"ckpt={tmp_path / 'nope'}", f"out_dir={tmp_path / 'x'}"],
                         cwd=REPO, env=quiet_env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "error: ckpt:" in bad.stderr and "nope: no such file" in bad.stderr
