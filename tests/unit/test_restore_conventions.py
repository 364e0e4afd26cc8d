"""gpen-restore explains itself and accepts the options users bring from GFPGAN / CodeFormer / GPEN (issue
17).

Fast: aligned synthetic crops and a tiny generator (no face detection), or the CLI with a fake restorer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpen_fewshot.archs import GPENGenerator
from gpen_fewshot.cli import restore as cli
from gpen_fewshot.cli.restore_outputs import plan_outputs
from gpen_fewshot.cli.restore_report import face_counts, face_lines
from gpen_fewshot.export import export_generator
from gpen_fewshot.restore import FaceModel, GuardedRunner, Job, RestoreOptions, Restorer, load_base_model
from gpen_fewshot.restore.comparison import GAP
from gpen_fewshot.restore.records import KEPT_INPUT, SKIPPED, FaceRecord, GuardStep
from gpen_fewshot.utils.image import read_image, write_image

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "narrow": 0.125}


def _brighten(amount: float):
    return lambda x: (x + amount).clamp(-1, 1)


@pytest.fixture
def crop(tmp_path: Path) -> Path:
    """A 32x32 mid-grey noisy 'aligned face' PNG (values far from 0 and 255: no clipping)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "crop.png"
    write_image(path, rng.integers(80, 170, (32, 32, 3), dtype=np.uint8))
    return path


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return export_generator(GPENGenerator(**TINY).eval(), tmp_path / "tiny-base")


def _parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


# ------------------------------------------------------------------------------------------- aliases
@pytest.mark.parametrize(("alias", "canonical"), [
    (["-s", "2"], ["--scale", "2"]),
    (["--upscale", "2"], ["--scale", "2"]),
    (["--has_aligned"], ["--aligned"]),
    (["--only_center_face"], ["--only-center-face"]),
    (["--bg-upsampler", "none"], ["--bg_upsampler", "none"]),
])
def test_aliases_mean_the_same_as_the_existing_options(alias: list[str], canonical: list[str]) -> None:
    assert _parse(*alias) == _parse(*canonical)
    assert cli._options(_parse(*alias), "fp32") == cli._options(_parse(*canonical), "fp32")


def test_the_options_reach_restore_options() -> None:
    options = cli._options(_parse("-s", "3", "--only_center_face", "--has_aligned", "--alpha", "0.4",
                                  "--bg_upsampler", "none"), "fp32")
    assert (options.scale, options.only_center_face, options.aligned) == (3, True, True)
    assert (options.alpha, options.background, options.strength) == (0.4, "none", 1.0)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--bg_upsampler", "realesrgan"], ["realesrgan", "not available", "lanczos", "none"]),
    (["--alpha", "1.5"], ["--alpha must be in [0, 1]"]),
    (["--ext", "gif"], ["--ext", "gif"]),
    (["--upscale", "0"], ["--scale"]),
    (["--suffix", "a/b"], ["path separator"]),
])
def test_bad_values_are_one_line_and_exit_code_2(argv: list[str], expected: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == cli.EXIT_SETUP == 2
    assert len(err.strip().splitlines()) == 1 and all(text in err for text in expected), err


# ----------------------------------------------------------------------------------------- --ext --suffix
def test_ext_and_suffix_name_the_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        write_image(folder / name, np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "out"
    assert [t.name for _, t in plan_outputs(folder, str(out))] == ["a.jpg", "b.png"]
    assert [t.name for _, t in plan_outputs(folder, str(out), "png", "restored")] == ["a_restored.png",
                                                                                       "b_restored.png"]
    assert [t.name for _, t in plan_outputs(folder, str(out), "jpg")] == ["a.jpg", "b.jpg"]
    assert plan_outputs(folder / "a.jpg", None, "png")[0][1].name == "output_a.png"
    assert plan_outputs(folder / "a.jpg", str(tmp_path / "x.jpeg"), "jpg")[0][1].name == "x.jpeg"
    with pytest.raises(ValueError, match="contradicts"):
        plan_outputs(folder / "a.jpg", str(tmp_path / "x.png"), "jpg")
    with pytest.raises(ValueError, match="--suffix"):
        plan_outputs(folder / "a.jpg", str(tmp_path / "x.png"), "auto", "restored")
    write_image(folder / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="both be written"):
        plan_outputs(folder, str(out), "png")


# --------------------------------------------------------------------------------------------- alpha
def test_alpha_blends_the_restored_face_with_the_input(crop: Path) -> None:
    image = read_image(crop)

    def restore(alpha: float) -> np.ndarray:
        options = RestoreOptions(aligned=True, guard_threshold=None, alpha=alpha)
        return Restorer(FaceModel(_brighten(0.4), 32), options=options, device="cpu").restore(image).image

    full, none, half = restore(1.0), restore(0.0), restore(0.5)
    np.testing.assert_array_equal(none, image)
    gain = full.astype(float) - image
    assert gain.mean() > 40  # +0.4 in [-1, 1] is +51 in uint8
    np.testing.assert_allclose(half.astype(float) - image, gain / 2, atol=1.0)
    with pytest.raises(ValueError, match="alpha"):
        RestoreOptions(alpha=1.5)
    with pytest.raises(ValueError, match="not available"):
        RestoreOptions(background="realesrgan")


# -------------------------------------------------------------------------------------------- --compare
def test_compare_writes_a_labelled_side_by_side_and_the_face_pairs(crop: Path, tiny_base: Path,
                                                                   tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "crop.png"
    code = cli.main(["-i", str(crop), "-o", str(out), "--has_aligned", "--base", str(tiny_base), "--no-guard",
                     "--compare", "-s", "2"])
    assert code == 0, capsys.readouterr().err
    restored, before = read_image(out), read_image(crop)
    side = read_image(tmp_path / "out" / "crop_compare.png")
    label = side.shape[0] - 64
    assert side.shape == (label + 64, 2 * 64 + GAP, 3) and label >= 24
    np.testing.assert_array_equal(side[label:, 64 + GAP:], restored)  # restored on the right
    # the input (upscaled) on the left
    assert np.abs(side[label:, :64].astype(float).mean() - before.mean()) < 2
    strip = side[:label]
    assert (strip[:, :64] < 128).any() and (strip[:, 64 + GAP:] < 128).any()  # both halves labelled
    pairs = list((tmp_path / "out" / "crop_faces").glob("*.png"))
    assert len(pairs) == 1 and read_image(pairs[0]).shape == (32, 64, 3)  # input | restored crop


# ------------------------------------------------------------------------------------- what is printed
def test_a_run_says_which_model_what_happened_how_long_and_where(crop: Path, tiny_base: Path, tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "o.png"
    assert cli.main(["-i", str(crop), "-o", str(out), "--has_aligned", "--base", str(tiny_base),
                     "--no-guard"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model: tiny-base (32 px faces,") and f"export folder {tiny_base}" in lines[0]
    assert lines[1].startswith("crop.png: 1 face found: 1 restored (")
    assert lines[2] == "  face 0: restored with tiny-base (base)"
    assert lines[3].startswith("  wrote ") and "o.png.json" in lines[3]
    assert (lines[4].startswith("restored 1 of 1 photo(s) in ") and
            lines[4].endswith(f"output: {out.resolve()}"))
    assert len(lines) == 5 and not any("strength" in line for line in lines)


def test_the_bundled_base_model_names_its_size_and_origin() -> None:
    line = load_base_model("gpen-compact-256").describe()
    assert line.startswith("gpen-compact-256 (256 px faces, ") and "M parameters" in line
    assert "bundled with the package: " in line and line.endswith(".safetensors")


def test_face_lines_group_equal_outcomes_and_say_why() -> None:
    def record(index: int, **fields) -> FaceRecord:
        face = FaceRecord(index, [0, 0, 10, 10], 0.9, model="base", strength_used=0.0,
                          route_reason="no persons registered")
        for key, value in fields.items():
            setattr(face, key, value)
        return face

    faces = [record(0), record(1), record(2), record(3, decision=SKIPPED, note="not the centre face"),
             record(4),
             record(5, model="alice", person="alice", strength_used=0.5,
                    route_reason="identity distance 0.31 < 0.60",
                    guard=[GuardStep("alice", 1.0, 0.71, False), GuardStep("alice", 0.5, 0.4, True)]),
             record(7, model="alice", person="alice", strength_used=0.0, route_reason="forced by --weights"),
             record(6, decision=KEPT_INPUT, model=None, note="identity drift above 0.6 at every strength",
                    guard=[GuardStep("base", 0.0, 0.8, False)])]
    assert face_counts(faces) == "8 faces found: 6 restored, 1 kept as input, 1 skipped"
    assert face_lines(faces, "gpen-compact-256") == [
        "faces 0-2, 4: restored with gpen-compact-256 (base)",
        "face 3: skipped: not the centre face",
        "face 5: restored with alice at strength 0.5 (identity distance 0.31 < 0.60); identity guard "
        "rejected alice at strength 1 (drift 0.710)",
        "face 7: restored with alice at strength 0 = its base weights (forced by --weights)",
        "face 6: kept the input face (identity drift above 0.6 at every strength); identity guard rejected "
        "gpen-compact-256 (base) (drift 0.800)",
    ]


def test_progress_reports_finished_faces_after_every_batch(crop: Path) -> None:
    image = read_image(crop)
    base = FaceModel(lambda x: x, 32)
    jobs = [Job(FaceRecord(i, [0, 0, 32, 32], 1.0), image, None) for i in range(5)]
    for job in jobs:
        job.model = base
    calls = []
    GuardedRunner(base, None, torch.device("cpu"), 2, "fp32", None, 0.125).run(jobs, 1.0,
                                                                            lambda *c: calls.append(c))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
