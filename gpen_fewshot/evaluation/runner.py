"""Run the evaluation protocol over models: restore the fixed inputs, measure, collect grid images.

Results are nested plain dicts ``results[set][model][level][metric] -> float | Unavailable`` (sets:
``"person"`` = the person's held-out photos, ``"others"`` = other people's photos); ``report.py`` turns them
into report.md / metrics.csv / metrics.json / grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gpen_fewshot.evaluation.identity_metrics import MFN_REF_KEYS, REF_KEYS, person_reference
from gpen_fewshot.evaluation.metrics import ALL_METRICS, MetricSuite
from gpen_fewshot.evaluation.models import (
    ModelSpec,
    load_model,
)
from gpen_fewshot.evaluation.protocol import (
    PERSON_SET,
    EvalSet,
    ProtocolConfig,
    build_eval_set,
    build_others_set,
    find_other_groups,
    person_photos,
    save_inputs,
)
from gpen_fewshot.evaluation.values import MetricValue, Unavailable
from gpen_fewshot.faces.identity import IdentityEmbedder
from gpen_fewshot.restore.models import run_model
from gpen_fewshot.utils.device import resolve_device
from gpen_fewshot.utils.image import read_image

INPUT_ROW = "input"
Results = dict[str, dict[str, dict[str, dict[str, MetricValue]]]]


@dataclass(frozen=True)
class MetricSelection:
    """Which metric families to compute (switched-off ones are left out of the report)."""

    psnr: bool = True
    ssim: bool = True
    lpips: bool = True
    fid: bool = True
    niqe: bool = True
    identity: bool = True


@dataclass(frozen=True)
class EvalOptions:
    """Everything the evaluation needs besides the models (see ``configs/eval.yaml`` for each field)."""

    person_dir: Path
    protocol: ProtocolConfig = ProtocolConfig()
    template: str = "gpen"
    holdout: int | float | None = None
    min_photos: int = 3
    cache_dir: Path | None = None
    others: tuple[str, ...] = ()
    others_max_persons: int | None = 3
    others_max_photos: int | None = 4
    include_input: bool = True
    metrics: MetricSelection = MetricSelection()
    batch_size: int = 4
    device: str = "auto"
    inputs_dir: Path | None = None
    grid_photos: int = 8
    download: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What was evaluated (one report row)."""

    name: str
    role: str
    source: str
    size: int
    template: str
    base: str | None = None
    sweep: str | None = None
    overrides: tuple[str, ...] = ()
    parameters: int = 0
    identity_loss: str | None = None  # the identity network its training's loss read (its metric is inflated)


@dataclass
class EvalResults:
    """Everything the report needs.

    Attributes:
        person: the person's name.
        levels: degradation levels in order.
        models: evaluated rows (the ``input`` row first when included, then the base, then tuned models).
        results: ``results[set][model][level][metric]``.
        per_image: one dict per (set, model, sample) with per-image metrics.
        grids: ``grids[set][level]`` -> column label -> list of uint8 RGB images (rows = photos).
        grid_rows: ``grid_rows[set]`` -> the photo ids of the grid rows.
        notes: free-text remarks for the report (warnings about the protocol).
    """

    person: str
    levels: list[str]
    models: list[ModelInfo] = field(default_factory=list)
    results: Results = field(default_factory=dict)
    per_image: list[dict] = field(default_factory=list)
    grids: dict[str, dict[str, dict[str, list[np.ndarray]]]] = field(default_factory=dict)
    grid_rows: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@torch.inference_mode()
def restore_images(generator: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device,
                   desc: str = "restoring", progress: bool = True) -> list[np.ndarray]:
    """Run the generator over uint8 RGB (S, S, 3) images in batches; returns uint8 RGB images (clipped)."""
    out: list[np.ndarray] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, unit="batch",
                      disable=not progress):
        out += run_model(generator, images[start:start + batch_size], device, batch_size)
    return out


class MetricTools:
    """One ``MetricSuite`` (``gpen_fewshot.evaluation.metrics``) per alignment template, shared by every
    model."""

    def __init__(self, selection: MetricSelection, device: torch.device, download: bool) -> None:
        self.selection = selection
        self.device = device
        self.download = download
        self._suites: dict[str, MetricSuite] = {}

    def suite(self, template: str) -> MetricSuite:
        """The suite for crops of ``template`` (the identity face box depends on it)."""
        if template not in self._suites:
            s = self.selection
            wanted = {"psnr": s.psnr, "psnr_y": s.psnr, "ssim": s.ssim, "ssim_y": s.ssim, "lpips": s.lpips,
                      "niqe": s.niqe, "fid": s.fid, "identity": s.identity, "identity_mfn": s.identity}
            names = [name for name in ALL_METRICS if wanted.get(name, False)]
            embedder = IdentityEmbedder(template=template) if s.identity else None
            self._suites[template] = MetricSuite(names, embedder=embedder,
                                                 download=self.download).to(self.device)
        return self._suites[template]

    def reference(self, crops: Sequence[Path], template: str) -> dict[str, np.ndarray] | Unavailable:
        """The person's reference embeddings (``"dlib"``, ``"mobilefacenet"``): means over their training
        crops."""

        suite = self.suite(template)
        if suite.identity is None:
            return Unavailable("identity: switched off")
        reason = suite.identity.unavailable_reason()
        if reason:
            return Unavailable(reason)
        if not crops:
            return Unavailable("identity: the person has no training photos for a reference embedding")
        images = [read_image(p) for p in crops]
        references = {"dlib": person_reference(images, suite.identity.embedder)}
        if suite.identity_mfn is not None:
            references["mobilefacenet"] = suite.identity_mfn.reference(images)
        return references

    def measure(self, restored: list[np.ndarray], gt: list[np.ndarray], template: str,
                reference: dict | Unavailable | None) -> tuple[dict[str, MetricValue], dict[str, list]]:
        """Means over the images and the per-image values of uint8 RGB restored / ground-truth pairs."""
        suite = self.suite(template)
        suite.reset()
        suite.update(restored, gt, reference if isinstance(reference, dict) else None)
        metrics = suite.compute()
        if isinstance(reference, Unavailable):  # say why there is no reference, not just that there is none
            metrics.update({k: reference for k in REF_KEYS + MFN_REF_KEYS if k in metrics})
        per = suite.per_image
        suite.reset()
        return metrics, per


class Evaluator:
    """Evaluates models one at a time on inputs prepared once per (crop size, template)."""

    def __init__(self, options: EvalOptions, progress: bool = True) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        self.tools = MetricTools(options.metrics, self.device, options.download)
        self.progress = progress
        self._sets: dict[tuple[int, str], list[EvalSet]] = {}
        self._references: dict[tuple[int, str], np.ndarray | Unavailable] = {}
        self._groups = (find_other_groups(options.others, [options.person_dir], options.others_max_persons)
                        if options.others else [])
        self.person_name = Path(options.person_dir).resolve().name
        self.results = EvalResults(self.person_name, list(options.protocol.levels))

    def sets_for(self, size: int, template: str) -> list[EvalSet]:
        """The person (and others) sets at this size/template, built on first use (plus their input row)."""
        key = (size, template)
        if key not in self._sets:
            o = self.options
            person = person_photos(o.person_dir, size, template, o.holdout, o.min_photos, o.cache_dir)
            sets = [build_eval_set(PERSON_SET, person.holdout, size, template, o.protocol)]
            if self._groups:
                sets.append(build_others_set(self._groups, size, template, o.protocol, o.others_max_photos))
            self._references[key] = self.tools.reference(person.train_crops, template)
            self._sets[key] = sets
            for eval_set in sets:
                if o.inputs_dir is not None:
                    save_inputs(eval_set, o.inputs_dir)
            if o.include_input:
                name = INPUT_ROW if len(self._sets) == 1 else f"{INPUT_ROW}@{size}_{template}"
                info = ModelInfo(name, "input", "degraded input", size, template)
                self._record(info, sets, [eval_set.lq for eval_set in sets])
        return self._sets[key]

    def person_sets(self) -> list[EvalSet]:
        """The person's evaluation sets built so far (one per crop size / template)."""
        return [s for sets in self._sets.values() for s in sets if s.name == PERSON_SET]

    def evaluate(self, spec: ModelSpec) -> ModelInfo:
        """Restore every set with the spec's model and record its metrics."""
        generator = load_model(spec).to(self.device)
        size, template = int(generator.config.size), spec.template or self.options.template
        sets = self.sets_for(size, template)
        info = ModelInfo(spec.name, spec.role, spec.source, size, template, spec.base, spec.sweep,
                         spec.overrides, sum(p.numel() for p in generator.parameters()), spec.identity_loss)
        restored = [restore_images(generator, s.lq, self.options.batch_size, self.device,
                                   desc=f"{spec.name} [{s.name}]", progress=self.progress) for s in sets]
        del generator
        self._record(info, sets, restored)
        return info

    def _record(self, info: ModelInfo, sets: list[EvalSet], outputs: list[list[np.ndarray]]) -> None:
        self.results.models.append(info)
        reference = self._references[(info.size, info.template)]
        for eval_set, images in zip(sets, outputs, strict=True):
            table = self.results.results.setdefault(eval_set.name, {}).setdefault(info.name, {})
            for level in self.results.levels:
                idx = eval_set.indices(level)
                metrics, per = self.tools.measure([images[i] for i in idx], [eval_set.gt[i] for i in idx],
                                                  info.template, reference)
                table[level] = metrics
                self._per_image(info, eval_set, idx, per)
                self._grid(info, eval_set, level, images)

    def _per_image(self, info: ModelInfo, eval_set: EvalSet, idx: list[int], per: dict[str, list]) -> None:
        for j, i in enumerate(idx):
            sample = eval_set.samples[i]
            row = {"set": eval_set.name, "model": info.name, "level": sample.level, "photo": sample.photo_id,
                   "copy": sample.copy}
            # a metric with a value for only some images cannot be matched to them: left out
            row.update({name: values[j] for name, values in per.items() if len(values) == len(idx)})
            self.results.per_image.append(row)

    def _grid(self, info: ModelInfo, eval_set: EvalSet, level: str, images: list[np.ndarray]) -> None:
        """Keep draw 0 of the first ``grid_photos`` photos (columns: input, models..., ground truth)."""
        rows = _round_robin(eval_set, self.options.grid_photos)
        chosen = [i for i in eval_set.indices(level) if eval_set.samples[i].copy == 0
                  and eval_set.samples[i].photo_id in rows]
        columns = self.results.grids.setdefault(eval_set.name, {}).setdefault(level, {})
        if "input" not in columns:
            self.results.grid_rows[eval_set.name] = [eval_set.samples[i].photo_id for i in chosen]
            columns["input"] = [eval_set.lq[i] for i in chosen]
            columns["ground truth"] = [eval_set.gt[i] for i in chosen]
        if info.role != "input":
            columns[info.name] = [images[i] for i in chosen]


def _round_robin(eval_set: EvalSet, count: int) -> list[str]:
    """Up to ``count`` photo ids taking each group's photos in turn (every other person shows up)."""
    groups: dict[str, list[str]] = {}
    for sample in eval_set.samples:
        ids = groups.setdefault(sample.group, [])
        if sample.photo_id not in ids:
            ids.append(sample.photo_id)
    order = [ids[i] for i in range(max(map(len, groups.values()), default=0)) for ids in groups.values()
             if i < len(ids)]
    return order[:count]


def run_evaluation(specs: Sequence[ModelSpec], options: EvalOptions, progress: bool = True) -> EvalResults:
    """Evaluate every spec (base first) under ``options``; returns the collected results."""
    evaluator = Evaluator(options, progress)
    for spec in tqdm(specs, desc="models", unit="model", disable=not progress):
        evaluator.evaluate(spec)
    photos = {photo for eval_set in evaluator.person_sets() for photo in eval_set.photo_ids}
    if 0 < len(photos) < 3:
        evaluator.results.notes.append(
            f"only {len(photos)} held-out photo(s) of the person: differences of a few hundredths are noise")
    return evaluator.results


# ------------------------------------------------------------------------------------- config edge
