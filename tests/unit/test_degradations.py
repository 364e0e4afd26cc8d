"""Degradation models, presets, YAML configs and the degraded-pairs script."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gpen_fewshot.cli import degraded_pairs
from gpen_fewshot.data.degradations import (
    PRESETS,
    BSRGANConfig,
    BSRGANDegradation,
    FirstOrderConfig,
    NoDegradation,
    build_degradation,
    config_from_dict,
    config_to_dict,
    get_preset,
    sample_rng,
)
from gpen_fewshot.data.degradations.primitives import gaussian_kernel, to_grayscale
from gpen_fewshot.utils.image import read_image, to_float, write_image

REPO = Path(__file__).resolve().parents[2]
DEGRADATION_CONFIGS = REPO / "configs" / "degradation"


def _test_image(size: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """A structured test image: gradients, sharp edges, a disc and fine texture; float32 RGB [0, 1]."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 3.0) * np.cos(yy / 4.0)], axis=2)
    img[(xx // 8 + yy // 8) % 2 == 0] *= 0.5  # checkerboard edges
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(height, width) / 4) ** 2
    img[disc] = [0.9, 0.7, 0.6]
    img += 0.05 * np.random.default_rng(seed).standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


RANDOM_PRESETS = [name for name in PRESETS if name != "none"]


@pytest.mark.parametrize("name", RANDOM_PRESETS)
def test_same_seed_same_output_different_seed_different(name: str) -> None:
    degradation = build_degradation(name)
    img = _test_image()
    first = degradation(img, sample_rng(7, 3))
    again = degradation(img.copy(), sample_rng(7, 3))
    other = degradation(img, sample_rng(8, 3))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_dtype_range(name: str, scale: int) -> None:
    degradation = build_degradation(dataclasses.replace(get_preset(name), scale=scale))
    img = _test_image((66, 71))
    lq = degradation(img, sample_rng(0))
    assert lq.dtype == np.float32 and lq.shape == (66 // scale, 71 // scale, 3)
    assert lq.min() >= 0.0 and lq.max() <= 1.0 and np.isfinite(lq).all()
    gt, lq = degradation.pair(img, sample_rng(0))
    assert gt.shape == (66 - 66 % scale, 71 - 71 % scale, 3) and gt.dtype == np.float32
    assert lq.shape == (gt.shape[0] // scale, gt.shape[1] // scale, 3)


def test_published_bsrgan_sf4_in_sr_mode_gives_quarter_size() -> None:
    lq = build_degradation(BSRGANConfig(sf=4, scale=4))(_test_image((96, 128)), sample_rng(1))
    assert lq.shape == (24, 32, 3)


def test_tiny_and_odd_images_do_not_crash() -> None:
    for seed in range(10):
        for name in ("severe", "first_order"):
            lq = build_degradation(name)(_test_image((9, 13)), sample_rng(seed))
            assert lq.shape == (9, 13, 3) and np.isfinite(lq).all()


def test_presets_are_monotone_in_psnr() -> None:
    img = _test_image((96, 96))
    means = {}
    for name in ("none", "mild", "moderate", "severe"):
        degradation = build_degradation(name)
        means[name] = np.mean([_psnr(degradation(img, sample_rng(11, i)), img) for i in range(8)])
    assert means["none"] > 90
    assert means["mild"] > means["moderate"] + 1.0 > means["severe"] + 2.0, means


def test_preset_knobs_are_monotone() -> None:
    mild, moderate, severe = (get_preset(n) for n in ("mild", "moderate", "severe"))
    assert mild.sf < moderate.sf < severe.sf
    assert mild.noise_level_range[1] < moderate.noise_level_range[1] < severe.noise_level_range[1]
    assert mild.jpeg_quality_range[0] > moderate.jpeg_quality_range[0] > severe.jpeg_quality_range[0]
    assert get_preset("severe") == BSRGANConfig() == get_preset("bsrgan")


def test_uint8_input_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="float"):
        build_degradation("mild")(np.zeros((8, 8, 3), np.uint8), sample_rng(0))


def test_none_is_identity_and_downscales() -> None:
    img = _test_image()
    np.testing.assert_array_equal(build_degradation("none")(img, sample_rng(0)), img)
    assert build_degradation(NoDegradation(scale=2))(img, sample_rng(0)).shape == (32, 32, 3)


def test_first_order_gray_applies_to_gt_too() -> None:
    img = _test_image()
    gray = build_degradation(FirstOrderConfig(gray_prob=1.0))
    gt, lq = gray.pair(img, sample_rng(3))
    np.testing.assert_allclose(gt, to_grayscale(img), atol=1e-6)
    assert np.abs(gt[..., 0] - gt[..., 1]).max() < 1e-6
    assert np.abs(lq[..., 0] - lq[..., 2]).mean() < 0.05  # colour noise only, on a gray image
    gt_colour, _ = build_degradation(FirstOrderConfig(gray_prob=0.0)).pair(img, sample_rng(3))
    np.testing.assert_array_equal(gt_colour, img)
    # the default 0.2: same random draws decide for gt and lq
    default = build_degradation("first_order")
    grays = [np.abs(default.pair(img, sample_rng(5, i))[0] - img).max() > 1e-3 for i in range(60)]
    assert 3 <= sum(grays) <= 25
    gt, lq = default.pair(img, sample_rng(5, int(np.argmax(grays))))
    assert np.abs(gt[..., 0] - gt[..., 1]).max() < 1e-6


def test_random_resize_always_precedes_final_resize() -> None:
    degradation = BSRGANDegradation()
    orders = [degradation._step_order(sample_rng(0, i)) for i in range(200)]
    assert all(order.index(2) < order.index(3) for order in orders)
    assert all(sorted(order) == list(range(6)) for order in orders)
    assert len({tuple(o) for o in orders}) > 50  # really shuffled


def test_gaussian_kernel_matches_basicsr_and_shift() -> None:
    from gpen_fewshot._compat import import_basicsr

    ref = import_basicsr("data.degradations")
    for size, sx, sy, theta in [(21, 2.0, 0.7, 0.6), (41, 10.0, 0.1, -2.0), (7, 1.0, 1.0, 0.0)]:
        expected = ref.bivariate_Gaussian(size, sx, sy, theta, isotropic=False)
        np.testing.assert_allclose(gaussian_kernel(size, sx, sy, theta), expected, atol=1e-7)
    shifted = gaussian_kernel(9, 0.8, 0.8, 0.0, center=(1.5, 1.5))
    ys, xs = np.mgrid[0:9, 0:9]
    assert abs((shifted * xs).sum() - 5.5) < 0.05 and abs((shifted * ys).sum() - 5.5) < 0.05
    assert np.isclose(gaussian_kernel(7, 0.0, 0.0, 0.0, center=(0.5, 0.5)).sum(), 1.0)  # degenerate sigma


def _yaml_keys_with_comments(path: Path) -> dict[str, bool]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and ":" in line:
            out[line.split(":", 1)[0].strip()] = "  # " in line
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_yaml_equals_python_preset(name: str) -> None:
    path = DEGRADATION_CONFIGS / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert config_from_dict(data) == get_preset(name)
    assert data == config_to_dict(get_preset(name))  # every field listed, nothing else
    keys = _yaml_keys_with_comments(path)
    assert set(keys) == set(data) and all(keys.values()), f"{path}: every field needs a comment"


def test_every_yaml_is_a_preset() -> None:
    assert {p.stem for p in DEGRADATION_CONFIGS.glob("*.yaml")} == set(PRESETS)


def test_config_from_dict_errors_and_overrides() -> None:
    with pytest.raises(ValueError, match="nosie_prob"):
        config_from_dict({"kind": "bsrgan", "nosie_prob": 0.5})
    with pytest.raises(ValueError, match="unknown degradation kind"):
        config_from_dict({"kind": "realesrgan"})
    with pytest.raises(KeyError, match="known"):
        get_preset("extreme")
    with pytest.raises(ValueError, match="odd"):
        BSRGANConfig(blur_kernel_size_range=(6, 20))
    overridden = config_from_dict({"preset": "moderate", "sf": 3, "noise_level_range": [1, 2]})
    assert overridden == dataclasses.replace(get_preset("moderate"), sf=3, noise_level_range=(1, 2))


# --------------------------------------------------------------------------- scripts/create_degraded_pairs.py


@pytest.fixture()
def clean_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "clean"
    for i in range(3):
        write_image(folder / f"face_{i}.png", (_test_image((48, 40), seed=i) * 255).astype(np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def _run_pairs(folder: Path, out: Path, workers: int, *extra: str) -> int:
    return degraded_pairs.main(
        [
            "--input_dir",
            str(folder),
            "--output_dir",
            str(out),
            "--degradation",
            "bsrgan",
            "--preset",
            "moderate",
            "--num_workers",
            str(workers),
            "--seed",
            "0",
            *extra,
        ]
    )


def test_create_degraded_pairs_end_to_end(clean_folder: Path, tmp_path: Path, capsys) -> None:
    assert _run_pairs(clean_folder, tmp_path / "w0", 0, "--copies", "2") == 0
    assert _run_pairs(clean_folder, tmp_path / "w2", 2, "--copies", "2") == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and err.count("skipped") == 2  # one line per run
    names = sorted(p.name for p in (tmp_path / "w0" / "GT").iterdir())
    assert names == [f"face_{i}_{c:03d}.png" for i in range(3) for c in range(2)]
    assert names == sorted(p.name for p in (tmp_path / "w0" / "LR").iterdir())
    for sub in ("GT", "LR"):
        for name in names:  # identical bytes whatever the number of workers
            assert (tmp_path / "w0" / sub / name).read_bytes() == (tmp_path / "w2" / sub / name).read_bytes()
    gt, lq = read_image(tmp_path / "w0" / "GT" / names[0]), read_image(tmp_path / "w0" / "LR" / names[0])
    assert gt.shape == lq.shape == (48, 40, 3)
    np.testing.assert_array_equal(gt, read_image(clean_folder / "face_0.png"))
    assert not np.array_equal(lq, read_image(tmp_path / "w0" / "LR" / names[1]))  # copies differ
    manifest = json.loads((tmp_path / "w0" / "pairs.json").read_text())
    assert (
        manifest["degradation"] == config_to_dict(get_preset("moderate"))
        and "broken.jpg" in manifest["skipped"]
    )


def test_create_degraded_pairs_sr_scale_and_bad_args(clean_folder: Path, tmp_path: Path, capsys) -> None:
    assert _run_pairs(clean_folder, tmp_path / "sr", 0, "--scale", "4") == 0
    gt = to_float(read_image(tmp_path / "sr" / "GT" / "face_1.png"))
    lq = read_image(tmp_path / "sr" / "LR" / "face_1.png")
    assert gt.shape == (48, 40, 3) and lq.shape == (12, 10, 3)
    code = degraded_pairs.main(
        [
            "--input_dir",
            str(clean_folder),
            "--output_dir",
            str(tmp_path / "x"),
            "--degradation",
            "first_order",
            "--preset",
            "moderate",
        ]
    )
    assert code == 2 and "does not match" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run_pairs(empty, tmp_path / "y", 0) == 2
