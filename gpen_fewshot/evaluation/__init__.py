"""Evaluation: PSNR/SSIM/LPIPS/NIQE, FID/KID and identity metrics, bundled by ``MetricSuite``."""

from gpen_fewshot.evaluation.distribution import FeatureDistance
from gpen_fewshot.evaluation.fidelity import LPIPSMetric, niqe, psnr, ssim
from gpen_fewshot.evaluation.identity_metrics import IdentityScorer, identity_scores, person_reference
from gpen_fewshot.evaluation.inception import FIDInceptionV3, load_fid_inception
from gpen_fewshot.evaluation.metrics import ALL_METRICS, MetricSuite, as_images
from gpen_fewshot.evaluation.values import (
    MetricValue,
    Unavailable,
    available_only,
    format_results,
    is_available,
    to_jsonable,
)

__all__ = [
    "ALL_METRICS",
    "FIDInceptionV3",
    "FeatureDistance",
    "IdentityScorer",
    "LPIPSMetric",
    "MetricSuite",
    "MetricValue",
    "Unavailable",
    "as_images",
    "available_only",
    "format_results",
    "identity_scores",
    "is_available",
    "load_fid_inception",
    "niqe",
    "person_reference",
    "psnr",
    "ssim",
    "to_jsonable",
]
