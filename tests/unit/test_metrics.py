"""Metrics with hand-checked values: PSNR/SSIM (RGB and Y), LPIPS, NIQE, FID/KID, identity, MetricSuite."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gpen_fewshot.evaluation import (
    ALL_METRICS,
    FeatureDistance,
    IdentityScorer,
    LPIPSMetric,
    MetricSuite,
    Unavailable,
    available_only,
    format_results,
    identity_scores,
    is_available,
    load_fid_inception,
    niqe,
    psnr,
    ssim,
    to_jsonable,
)
from gpen_fewshot.evaluation.inception import FIDInceptionV3
from gpen_fewshot.evaluation.metrics import NO_GT, NO_REFERENCE
from gpen_fewshot.utils.image import image_to_tensor, read_image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "identity"
A1, A2, B = "celeba_7233_001.jpg", "celeba_7233_008.jpg", "celeba_7222_005.jpg"
BT601_Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # Y change per unit change of R = G = B (MATLAB rgb2ycbcr)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.integers(0, 246, (48, 40, 3), dtype=np.uint8)  # <= 245 so that +10 never clips


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return {name: read_image(FIXTURES / name) for name in (A1, A2, B)}


@pytest.fixture(scope="module")
def random_lpips() -> nn.Module:
    import lpips

    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)


class TinyFeatures(nn.Module):
    """A fixed random conv + pooling: (N, 3, H, W) [0, 1] -> (N, 12)."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 2).flatten(1)


# --------------------------------------------------------------------------------------------- PSNR / SSIM
def test_psnr_of_a_constant_offset_is_hand_checked(image):
    shifted = image + np.uint8(10)
    assert psnr(shifted, image) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)  # 28.1308 dB
    # Y moves by 10 * 219/255 when R, G and B all move by 10, so PSNR-Y is higher by 20*log10(255/219)
    expected_y = 20 * math.log10(255 / (10 * BT601_Y_GAIN))  # 29.45 dB
    assert psnr(shifted, image, y_channel=True) == pytest.approx(expected_y, abs=1e-4)
    assert psnr(image, image) == math.inf


def test_psnr_y_ignores_what_y_cannot_see(rng):
    """R + 10 and G - 5 nearly cancel in Y (65.481 * 10 ~ 128.553 * 5) but not in RGB: hand-checked both."""
    image = rng.integers(10, 246, (32, 32, 3), dtype=np.uint8)
    other = image.copy()
    other[..., 0] += 10
    other[..., 1] -= 5
    y_error = (65.481 * 10 - 128.553 * 5) / 255  # 0.0472 grey levels
    assert psnr(other, image, y_channel=True) == pytest.approx(20 * math.log10(255 / y_error), abs=1e-3)
    assert psnr(other, image) == pytest.approx(10 * math.log10(255**2 / ((100 + 25) / 3)), abs=1e-9)  # 31.93


def test_crop_border_excludes_the_border(image):
    damaged = image.copy()
    damaged[:3] = 0
    assert psnr(damaged, image) < 30
    assert psnr(damaged, image, crop_border=3) == math.inf
    with pytest.raises(ValueError, match="crop_border"):
        psnr(image, image, crop_border=20)


def test_ssim_identical_constant_offset_and_noise(image, rng):
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, y_channel=True) == pytest.approx(1.0, abs=1e-12)
    # flat images (sigma = 0): SSIM = (2*mu1*mu2 + C1) / (mu1^2 + mu2^2 + C1), C1 = (0.01*255)^2
    flat_a, flat_b = np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(flat_b, flat_a) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-9)
    noisy = np.clip(image.astype(int) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(noisy, image) < 0.95


def test_pair_checks(image):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(image, image[:-1])
    with pytest.raises(ValueError, match="uint8 RGB"):
        ssim(image.astype(np.float32), image)


# ----------------------------------------------------------------------------------------------- LPIPS
def test_lpips_plumbing_with_random_weight_network(random_lpips, image, rng):
    metric = LPIPSMetric(net=random_lpips, batch_size=2)
    noisy = np.clip(image.astype(int) + rng.integers(-60, 61, image.shape), 0, 255).astype(np.uint8)
    values = metric([image, noisy, image], [image, image, image])
    assert len(values) == 3
    assert values[0] == pytest.approx(0.0, abs=1e-7) and values[2] == pytest.approx(0.0, abs=1e-7)
    assert values[1] > 1e-4
    with torch.no_grad():  # same number as calling the network directly on [-1, 1] tensors
        direct = float(random_lpips(image_to_tensor(noisy)[None], image_to_tensor(image)[None]))
    assert values[1] == pytest.approx(direct, rel=1e-5)


def test_lpips_unavailable_without_alexnet_weights(monkeypatch, tmp_path, image):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    metric = LPIPSMetric()
    result = metric([image], [image])
    assert isinstance(result, Unavailable) and not result
    assert "alexnet-owt-7be5be79.pth" in result.reason
    assert str(tmp_path / "hub" / "checkpoints") in result.reason
    assert "download.pytorch.org" in result.reason
    assert not list(tmp_path.rglob("*.pth"))  # nothing was downloaded


def test_lpips_available_when_the_file_is_there(monkeypatch, tmp_path):
    import gpen_fewshot.weights as weights

    monkeypatch.setattr(weights, "weight_path", lambda *args, **kwargs: tmp_path / "alexnet-owt-7be5be79.pth")
    assert LPIPSMetric().unavailable_reason() is None


# ------------------------------------------------------------------------------------------------- NIQE
def test_niqe_on_a_real_face_crop(crops):
    value = niqe(crops[A1])
    assert math.isfinite(value) and 0.0 < value < 30.0
    too_small = niqe(crops[A1][:128, :128])
    assert isinstance(too_small, Unavailable) and "192" in too_small.reason
    flat = niqe(np.full((192, 192, 3), 128, np.uint8))  # e.g. a collapsed generator's output
    assert isinstance(flat, Unavailable) and "undefined" in flat.reason


# ---------------------------------------------------------------------------------------------- FID / KID
def _images(rng: np.random.Generator, count: int, offset: int = 0) -> list[np.ndarray]:
    return [(rng.integers(0, 180, (24, 24, 3)) + offset).astype(np.uint8) for _ in range(count)]


def _fid_kid(fake: list[np.ndarray], real: list[np.ndarray]) -> dict:
    metric = FeatureDistance(TinyFeatures(), kid_subset_size=6)
    metric.update(fake, real)
    return metric.compute()


def test_fid_kid_identical_similar_and_shifted_sets(rng):
    real = _images(rng, 12)
    identical = _fid_kid(real, real)
    similar = _fid_kid(_images(np.random.default_rng(2), 12), real)  # same distribution, other samples
    shifted = _fid_kid(_images(np.random.default_rng(1), 12, offset=70), real)
    assert identical["fid_num_images"] == shifted["fid_num_images"] == 12
    assert abs(identical["fid"]) < 1e-9 and abs(identical["kid"]) < 0.02  # KID: unbiased, noisy around 0
    assert shifted["fid"] > 10 * similar["fid"] > 0 and shifted["kid"] > 10 * abs(similar["kid"])
    metric = FeatureDistance(TinyFeatures(), kid_subset_size=6)
    metric.update(real[:6], real[6:])
    assert metric.compute()["kid"] == metric.compute()["kid"]  # KID's random subsets are seeded


def test_fid_pools_across_updates(rng):
    real, fake = _images(rng, 10), _images(rng, 10, offset=30)
    once = FeatureDistance(TinyFeatures())
    once.update(fake, real)
    pooled = FeatureDistance(TinyFeatures())
    pooled.update(fake[:4], real[:4])
    pooled.update(fake[4:], real[4:])
    a, b = once.compute(), pooled.compute()
    assert b["fid_num_images"] == 10
    assert b["fid"] == pytest.approx(a["fid"], rel=1e-9) and b["kid"] == pytest.approx(a["kid"], rel=1e-9)
    pooled.reset()
    assert isinstance(pooled.compute()["fid"], Unavailable)


def test_fid_unavailable_without_inception_weights(monkeypatch, tmp_path, rng):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    distance = FeatureDistance()
    distance.update(_images(rng, 3), _images(rng, 3))
    result = distance.compute()
    for key in ("fid", "kid", "kid_std"):
        assert isinstance(result[key], Unavailable)
        assert "pt_inception-2015-12-05-6726825d.pth" in result[key].reason
        assert str(tmp_path / "hub" / "checkpoints") in result[key].reason
    assert result["fid_num_images"] == 3  # the count is reported even though FID itself is unavailable


def test_fid_inception_loads_a_state_dict_of_the_real_format(tmp_path, torch_single_thread):
    torch.manual_seed(0)
    path = tmp_path / "pt_inception.pth"
    torch.save(FIDInceptionV3().net.state_dict(), path)  # the pytorch-fid file: torchvision Inception3 names
    model = load_fid_inception(path)
    assert not model.training and model.num_features == 2048
    with torch.no_grad():  # one image: a 299-px Inception forward costs ~1 s on a busy CPU
        features = model(torch.rand(1, 3, 64, 64))
    assert features.shape == (1, 2048) and torch.isfinite(features).all()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth: not a FID Inception"):
        load_fid_inception(tmp_path / "wrong.pth")


# ------------------------------------------------------------------------------------------------ identity
def test_identity_scores_hand_checked():
    reference = np.zeros(128)
    restored = np.zeros((4, 128))
    restored[:, 0] = [0.3, 0.59, 0.61, 1.2]
    scores = identity_scores(restored, gt=restored, reference=reference)
    np.testing.assert_allclose(scores["id_distance_ref"], [0.3, 0.59, 0.61, 1.2])
    np.testing.assert_allclose(scores["id_similarity_ref"], [0.75, 1 - 0.59 / 1.2, 1 - 0.61 / 1.2, 0.0])
    assert scores["id_verified_ref"].mean() == 0.5  # two of four are closer than 0.6
    np.testing.assert_array_equal(scores["id_distance_gt"], 0.0)
    assert scores["id_verified_gt"].mean() == 1.0
    assert set(identity_scores(restored)) == set()


def test_identity_scorer_on_real_faces(crops):
    scorer = IdentityScorer()
    reference = scorer.embedder.embed(crops[A2])
    scores = scorer.score([crops[A1], crops[B]], [crops[A2], crops[A2]], reference)
    np.testing.assert_array_equal(scores["id_verified_gt"], [1.0, 0.0])  # same person, then a different one
    np.testing.assert_allclose(scores["id_distance_ref"], scores["id_distance_gt"], atol=1e-6)
    assert scores["id_distance_gt"][0] < 0.6 < scores["id_distance_gt"][1]


# -------------------------------------------------------------------------------------------- MetricSuite
def _suite(**kwargs) -> MetricSuite:
    return MetricSuite(fid_feature=TinyFeatures(), kid_subset_size=2, **kwargs)


def test_suite_end_to_end_with_tensors_and_pooling(random_lpips, crops, torch_single_thread):
    suite = _suite(lpips_net=random_lpips)
    gt = [crops[A1], crops[B]]
    restored = torch.stack([image_to_tensor(image) for image in gt])  # perfect restoration, as network output
    reference = suite.identity.embedder.embed(crops[A2])
    suite.update(restored, gt, reference)
    suite.update([crops[B]], [crops[A1]])  # a bad "restoration" of another person, no reference
    result = suite.compute()
    assert tuple(result) == suite.keys and result["num_images"] == 3
    assert result["psnr"] == math.inf  # two identical pairs make the mean infinite
    assert result["lpips"] == pytest.approx(suite.per_image["lpips"][2] / 3, rel=1e-6)
    assert result["id_verified_gt"] == pytest.approx(2 / 3)
    assert result["id_verified_ref"] == pytest.approx(1 / 2)  # A1 is the person, B is not
    assert result["fid_num_images"] == 3 and is_available(result["fid"]) and is_available(result["niqe"])
    one_shot = suite.evaluate([crops[A1]], [crops[A1]])
    assert one_shot["num_images"] == 1 and suite.compute()["num_images"] == 3  # pooled state untouched
    assert isinstance(one_shot["fid"], Unavailable) and isinstance(one_shot["id_distance_ref"], Unavailable)
    assert one_shot["id_distance_ref"].reason == NO_REFERENCE


def test_suite_without_ground_truth_and_reporting_helpers(random_lpips, crops, torch_single_thread):
    suite = MetricSuite(metrics=("psnr", "lpips", "niqe", "identity"), lpips_net=random_lpips)
    reference = suite.identity.embedder.embed(crops[A2])
    result = suite.evaluate(np.stack([crops[A1]]), None, reference)
    assert result["psnr"] == Unavailable(NO_GT) and result["lpips"] == Unavailable(NO_GT)
    assert result["id_verified_ref"] == 1.0 and math.isfinite(result["niqe"])
    assert "fid" not in result
    assert set(available_only(result)) == {"niqe", "id_distance_ref", "id_similarity_ref", "id_verified_ref",
                                           "num_images"}
    assert to_jsonable({"psnr": math.inf, "x": Unavailable("why")}) == {"psnr": "inf", "x": "n/a (why)"}
    assert "psnr n/a (no ground truth given)" in format_results(result)


def test_suite_rejects_bad_arguments(crops):
    with pytest.raises(ValueError, match="unknown metrics"):
        MetricSuite(metrics=("psnr", "sharpness"))
    suite = MetricSuite(metrics=("psnr",))
    assert suite.keys == ("psnr", "num_images") and set(ALL_METRICS) >= set(suite.metrics)
    with pytest.raises(ValueError, match="ground truths"):
        suite.update([crops[A1]], [crops[A1], crops[B]])
    with pytest.raises(ValueError, match="image tensor"):
        suite.update(torch.zeros(2, 1, 8, 8))


def test_paired_comparison_reports_the_standard_error_of_the_differences() -> None:
    from gpen_fewshot.evaluation.prior_eval import paired

    model = {"psnr": np.array([31.0, 33.0, 32.0, 30.0]), "id_distance": np.array([0.3, 0.2, 0.4, 0.3])}
    base = {"psnr": np.array([30.0, 30.0, 30.0, 30.0]), "id_distance": np.array([0.3, 0.3, 0.3, 0.3])}
    result = paired(model, base, range(4))
    d_psnr = np.array([1.0, 3.0, 2.0, 0.0])
    assert result["psnr_gain"] == pytest.approx(1.5)
    assert result["psnr_gain_se"] == pytest.approx(d_psnr.std(ddof=1) / 2.0)
    assert (result["id_gain"] == pytest.approx(0.0) and
            result["id_gain_se"] == pytest.approx(np.sqrt(0.02 / 3) / 2))
    assert paired(model, base, [0])["psnr_gain_se"] == 0.0  # one image: no spread to estimate


def test_paired_comparison_over_an_input_identical_to_the_ground_truth_has_no_psnr_gain() -> None:
    from gpen_fewshot.evaluation.prior_eval import paired
    from gpen_fewshot.evaluation.prior_report import _fmt

    model = {"psnr": np.array([50.0, 55.0, 48.0]), "id_distance": np.array([0.05, 0.04, 0.06])}
    clean = {"psnr": np.array([np.inf, np.inf, np.inf]), "id_distance": np.zeros(3)}  # the "none" preset
    result = paired(model, clean, range(3))
    assert np.isnan(result["psnr_gain"]) and _fmt(result["psnr_gain"], 2) == "n/a"  # undefined, not -inf
    assert result["psnr_win"] == 0.0 and result["psnr_gain_se"] == 0.0
    mixed = paired(model, {"psnr": np.array([np.inf, 50.0, 50.0]), "id_distance": np.zeros(3)}, range(3))
    assert mixed["psnr_gain"] == pytest.approx(1.5)  # the identical input is left out of the mean
