"""The restoration pipeline: detect, align, route by identity, restore in batches, guard identity, paste
back."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from gpen_fewshot.export import ExportError, PersonWeights, load_person
from gpen_fewshot.faces.detection import FaceDetector
from gpen_fewshot.faces.identity import SAME_PERSON_THRESHOLD, IdentityEmbedder
from gpen_fewshot.faces.paste import FacePaste, PasteConfig, paste_faces
from gpen_fewshot.restore.comparison import comparison_path, faces_dir, save_face_pairs, side_by_side
from gpen_fewshot.restore.guard import GuardedRunner, Job, Progress
from gpen_fewshot.restore.models import BASE, FaceModel, PersonModel, load_base_model
from gpen_fewshot.restore.records import NO_PERSONS, SKIPPED, FaceRecord, RestoreResult
from gpen_fewshot.restore.routing import Route, forced_routes, route_faces
from gpen_fewshot.utils.atomic import atomic_write_json
from gpen_fewshot.utils.device import resolve_device
from gpen_fewshot.utils.image import read_image_layers, write_image, write_image_layers

log = logging.getLogger(__name__)

EMBED_SIZE = 256  # routing embeddings come from crops aligned like the training crops (256, "gpen")
EMBED_TEMPLATE = "gpen"
BACKGROUND_UPSCALER = "OpenCV Lanczos (cv2.INTER_LANCZOS4); no super-resolution model"
# Background upsamplers: "none" is GFPGAN's / CodeFormer's name for "no super-resolution model", which there
# too means a plain Lanczos resize when upscaling; both names do the same here.
BACKGROUND_UPSAMPLERS = ("lanczos", "none")


class NoFaceError(ValueError):
    """No (usable) face was found in a photo."""


@dataclass(frozen=True)
class RestoreOptions:
    """Restoration parameters.

    Attributes:
        strength: 0 = base weights, 1 = the person's tuned weights, parameter-wise interpolation between.
        scale: integer upscaling of the whole photo (faces restored at model resolution, background Lanczos).
        aligned: inputs are already aligned face crops (no detection, no paste-back).
        only_center_face: restore only the face closest to the image centre.
        min_face_size: skip faces whose box's shorter side is below this many pixels.
        batch_size: crops per forward pass.
        match_threshold: a face is a registered person when its identity distance is below this.
        guard_threshold: identity drift (restored vs input crop) above which a result is rejected and a
            weaker strength / the base / the input is used instead; None disables the guard.
        guard_min_strength: weakest non-zero strength the guard tries before falling back to the base.
        precision: "fp32", "bf16" (autocast on CPU or CUDA) or "fp16" (CUDA autocast; fp32 on the CPU).
        paste: paste-back mask and colour-matching parameters.
        alpha: blend of each restored face with its input face, ``alpha * restored + (1 - alpha) * input``
            (GPEN's ``--alpha``; 1 = the restored face). Unlike ``strength`` (which interpolates network
            weights, base to person) this mixes pixels, and applies to base faces too.
        background: background upsampler when ``scale > 1``, one of ``BACKGROUND_UPSAMPLERS``.
    """

    strength: float = 1.0
    scale: int = 1
    aligned: bool = False
    only_center_face: bool = False
    min_face_size: float = 0.0
    batch_size: int = 4
    match_threshold: float = SAME_PERSON_THRESHOLD
    guard_threshold: float | None = 0.6
    guard_min_strength: float = 0.125
    precision: str = "fp32"
    paste: PasteConfig = field(default_factory=PasteConfig)
    alpha: float = 1.0
    background: str = "lanczos"

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.background not in BACKGROUND_UPSAMPLERS:
            raise ValueError(f"background upsampler {self.background!r} is not available (available: "
                             f"{', '.join(BACKGROUND_UPSAMPLERS)}: OpenCV Lanczos, "
                             "no super-resolution model)")
        if int(self.scale) != self.scale or self.scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {self.scale}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.guard_threshold is not None and self.guard_threshold <= 0:
            raise ValueError(f"guard_threshold must be > 0 (or None to disable), got {self.guard_threshold}")


def _default_device() -> torch.device:
    return resolve_device("auto")


class Restorer:
    """Restores the faces of photos, choosing per face between the base model and registered persons.

    Args:
        base: the base model: a ``FaceModel``, a weights name / checkpoint file / export directory, or None
            for the default (GPEN-BFR-512 if present, else the compact prior).
        persons: registered persons: ``PersonWeights``, ``FaceModel`` (with a reference embedding), or names /
            export paths for :func:`gpen_fewshot.export.load_person`.
        force_person: name of one of ``persons`` to use for every face (no identity matching).
        options: restoration parameters.
        detector: a face detector (``detect(image) -> list[Face]``); default ``FaceDetector()`` on first use.
        embedder: identity embedder (``embed(crop) -> (128,)``, ``distance(a, b)``) used for every crop
            template; default ``IdentityEmbedder(template)`` per template on first use (only needed for
            routing and the identity guard).
        device: torch device (default: CUDA when available, else CPU).
    """

    def __init__(self, base: FaceModel | str | os.PathLike | None = None,
                 persons: Sequence[PersonWeights | FaceModel | str | os.PathLike] = (), *,
                 force_person: str | None = None, options: RestoreOptions | None = None, detector=None,
                 embedder=None, device: str | torch.device | None = None) -> None:
        self.options = options or RestoreOptions()
        self.base = base if isinstance(base, FaceModel) else load_base_model(base)
        self.persons = _person_models(persons)
        if force_person is not None and force_person not in self.persons:
            raise ValueError(f"force_person {force_person!r} is not one of the persons "
                             f"{sorted(self.persons)}")
        self.force_person = force_person
        self.device = torch.device(device) if device is not None else _default_device()
        self._detector = detector
        self._embedder = embedder
        self._embedders: dict[str, object] = {}
        self._embedder_failed = False

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, *, persons_dir: str | os.PathLike | None = None,
                        route: bool = True, **kwargs) -> Restorer:
        """A restorer for one person's export (by name or path), with that person's base model as the base.

        Args:
            path_or_name: person name or export directory.
            persons_dir: where person names are looked up.
            route: match identities (other faces get the base); False applies the person to every face.
            **kwargs: further ``Restorer`` arguments (options, device, detector, embedder).
        """
        weights = load_person(path_or_name, persons_dir)
        base = kwargs.pop("base", None)
        if base is None:
            try:  # the person's own base: strength 0 of its weights (bit-identical to the base checkpoint)
                base = FaceModel(weights.build_generator(0.0), weights.size, BASE, weights.template)
            except ExportError as err:  # a full export whose base is not on this machine
                log.warning("%s; using the default base model", err)
        return cls(base, [weights], force_person=None if route else weights.name, **kwargs)

    # ------------------------------------------------------------------------------------------ helpers
    def detector(self):
        """The face detector (created on first use)."""
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    def embedder(self, template: str = EMBED_TEMPLATE):
        """The identity embedder for crops of ``template``, or None when it cannot be loaded (logged once)."""
        if self._embedder is not None:
            return self._embedder
        if template not in self._embedders and not self._embedder_failed:
            try:
                self._embedders[template] = IdentityEmbedder(template=template).load()
            except (ImportError, OSError, RuntimeError, ValueError) as err:
                self._embedder_failed = True
                log.warning("identity embeddings unavailable (%s): no routing, no identity guard", err)
        return self._embedders.get(template)

    def _needs_embeddings(self) -> bool:
        routing = bool(self.persons) and self.force_person is None
        return routing or self.options.guard_threshold is not None

    def _runner(self) -> GuardedRunner:
        usable = self._needs_embeddings() and self.embedder() is not None
        return GuardedRunner(self.base, self.embedder if usable else None, self.device,
                             self.options.batch_size, self.options.precision,
                             self.options.guard_threshold, self.options.guard_min_strength)

    # ---------------------------------------------------------------------------------------------- API
    def restore(self, image: np.ndarray, progress: Progress | None = None) -> RestoreResult:
        """Restore every face of a photo (or one aligned crop with ``options.aligned``).

        Args:
            image: uint8 (H, W, 3) RGB.
            progress: called as ``progress(finished, total)`` over the faces to restore (after detection).

        Returns:
            ``RestoreResult`` with the uint8 (H*scale, W*scale, 3) RGB output and per-face records.

        Raises:
            NoFaceError: no face found (or none left after ``min_face_size`` / ``only_center_face``).
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
        if self.options.aligned:
            return self._restore_aligned(image, progress)
        runner = self._runner()
        faces, records = self._detect(image)
        jobs = [Job(record, image, face.landmarks) for face, record in faces]
        self._route(jobs, runner, (EMBED_SIZE, EMBED_TEMPLATE))
        runner.run(jobs, self.options.strength, progress)
        _blend(jobs, self.options.alpha)
        gray = _is_gray(image)
        pastes = [FacePaste(_gray(j.output) if gray else j.output, j.aligned().inverse_affine,
                            j.aligned().crop) for j in jobs if j.output is not None]
        scale = int(self.options.scale)
        background = image if scale == 1 else cv2.resize(
            image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_LANCZOS4)
        output = paste_faces(background, pastes, self.options.paste, scale=scale)
        pairs = [(j.aligned().crop, j.output) for j in jobs]
        return RestoreResult(output, records, pairs, image.shape[:2], scale, self._info(runner))

    def restore_file(self, input_path: str | os.PathLike, output_path: str | os.PathLike,
                     save_faces: bool = False, sidecar: bool = True, compare: bool = False,
                     progress: Progress | None = None) -> RestoreResult:
        """Read, restore and write one photo (plus the JSON sidecar ``<output>.json`` and optional face
        pairs).

        The input's alpha channel and 16-bit depth are put back (``utils.image.write_image_layers``); an
        output format that cannot hold them is logged as a warning.

        Args:
            input_path: the photo.
            output_path: where the restored photo goes (format from its extension).
            save_faces: also write input|restored crop pairs to ``<output stem>_faces/``.
            sidecar: write ``<output>.json``.
            compare: also write the labelled input|restored photo ``comparison_path(output_path)``.
            progress: see :meth:`restore`.

        Raises:
            ImageReadError: unreadable input. NoFaceError: no face found.
        """
        output_path = Path(output_path)
        layers = read_image_layers(input_path)
        result = self.restore(layers.rgb, progress)
        for note in write_image_layers(output_path, result.image, layers):
            log.warning(note)
        if sidecar:
            atomic_write_json(sidecar_path(output_path),
                              {"input": str(input_path), "output": str(output_path), **result.to_dict()})
        if save_faces:
            save_face_pairs(result, faces_dir(output_path))
        if compare:
            scale, alpha = self.options.scale, self.options.alpha
            labels = ("input" + (f" (x{scale}, Lanczos)" if scale > 1 else ""),
                      f"restored: {self.models_label()}" + (f", alpha {alpha:g}" if alpha < 1 else ""))
            write_image(comparison_path(output_path), side_by_side(layers.rgb, result.image, labels))
        return result

    def describe(self) -> list[str]:
        """Console lines naming the models in use: base (name, size, origin) and registered persons."""
        lines = [f"model: {self.base.describe()}"]
        for name, model in sorted(self.persons.items()):
            forced = " (applied to every face)" if name == self.force_person else ""
            lines.append(f"person: {model.describe()}{forced}; strength {self.options.strength:g}")
        if self.options.alpha < 1.0:
            lines.append(f"alpha {self.options.alpha:g}: restored faces blended with the input faces")
        return lines

    def models_label(self) -> str:
        """The models in use, for labels: ``gpen-compact-256`` or ``alice, bob + gpen-compact-256 (base)``."""
        if not self.persons:
            return self.base.label
        return f"{', '.join(sorted(self.persons))} + {self.base.label} (base)"

    # --------------------------------------------------------------------------------------- internals
    def _detect(self, image: np.ndarray) -> tuple[list, list[FaceRecord]]:
        detected = self.detector().detect(image)
        if not detected:
            raise NoFaceError("no face found")
        records = [FaceRecord(i, [float(v) for v in f.box], float(f.score)) for i, f in enumerate(detected)]
        keep = _select(detected, image.shape[:2], self.options)
        for i, record in enumerate(records):
            if i not in keep:
                record.decision, record.note = SKIPPED, _skip_reason(detected[i], self.options)
        if not keep:
            raise NoFaceError(f"{len(detected)} face(s) found but none kept ({records[0].note})")
        return [(detected[i], records[i]) for i in sorted(keep)], records

    def _route(self, jobs: list[Job], runner: GuardedRunner, geometry: tuple[int, str]) -> None:
        """Choose each job's model: the forced person, a matching registered person, or the base."""
        if self.force_person is not None:
            routes = forced_routes(len(jobs), self.force_person)
        elif not self.persons:
            routes = [Route(None, None, {}, NO_PERSONS)] * len(jobs)
        else:
            references = {n: m.reference_embedding for n, m in self.persons.items()
                          if m.reference_embedding is not None}
            embeddings = [j.embedding(*geometry, runner) if references else None for j in jobs]
            routes = route_faces(embeddings, references, self.options.match_threshold, runner.distance)
        for job, route in zip(jobs, routes, strict=True):
            _apply_route(job, route, self.persons, self.base)

    def _restore_aligned(self, image: np.ndarray, progress: Progress | None) -> RestoreResult:
        runner = self._runner()
        record = FaceRecord(0, [0.0, 0.0, float(image.shape[1]), float(image.shape[0])], 1.0)
        job = Job(record, image, None)
        self._route([job], runner, (image.shape[0], EMBED_TEMPLATE))  # the crop as given
        runner.run([job], self.options.strength, progress)
        _blend([job], self.options.alpha)
        out = job.output if job.output is not None else image
        height, width = (image.shape[0] * self.options.scale, image.shape[1] * self.options.scale)
        if out.shape[:2] != (height, width):
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LANCZOS4)
        if _is_gray(image):
            out = _gray(out)
        pair = (job.crop(job.model.size, job.model.template), job.output)
        return RestoreResult(out, [record], [pair], image.shape[:2], self.options.scale, self._info(runner))

    def _info(self, runner: GuardedRunner) -> dict:
        return {
            "base": getattr(self.base, "source", None) or self.base.name,
            "base_label": self.base.label,
            "persons": sorted(self.persons),
            "forced_person": self.force_person,
            "strength": self.options.strength,
            "alpha": self.options.alpha,
            "match_threshold": self.options.match_threshold,
            "guard_threshold": self.options.guard_threshold if runner.enabled else None,
            "background_upscaler": BACKGROUND_UPSCALER if self.options.scale > 1 else None,
            "device": str(self.device),
        }


def _person_models(persons: Sequence[PersonWeights | FaceModel | str | os.PathLike]) -> dict[str, FaceModel]:
    models: dict[str, FaceModel] = {}
    for item in persons:
        if isinstance(item, FaceModel):
            model = item
        elif isinstance(item, PersonWeights):
            model = PersonModel(item)
        else:
            model = PersonModel(load_person(item))
        if model.name in models or model.name == BASE:
            raise ValueError(f"person name {model.name!r} is used twice (or is reserved)")
        models[model.name] = model
    return models


def _apply_route(job: Job, route: Route, persons: dict[str, FaceModel], base: FaceModel) -> None:
    record = job.record
    record.person, record.distance, record.candidates = route.person, route.distance, route.candidates
    record.route_reason = route.reason
    job.model = persons[route.person] if route.person is not None else base


def _skip_reason(face, options: RestoreOptions) -> str:
    """Why a face was skipped (see ``_select``)."""
    side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
    if side < options.min_face_size:
        return f"smaller than --min-face-size {options.min_face_size:g} px ({side:.0f} px)"
    return "not the centre face (--only-center-face)"


def _select(faces: list, shape: tuple[int, int], options: RestoreOptions) -> set[int]:
    """Indices of the faces to restore: big enough, and only the most central one if asked."""
    keep = [i for i, f in enumerate(faces)
            if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= options.min_face_size]
    if options.only_center_face and keep:
        centre = np.array([shape[1] / 2.0, shape[0] / 2.0])

        def offset(i: int) -> float:
            box = faces[i].box
            return float(np.linalg.norm(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - centre))

        keep = [min(keep, key=offset)]
    return set(keep)


def _is_gray(image: np.ndarray) -> bool:
    """Whether all three channels are equal (a black-and-white photo stored as RGB)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _gray(image: np.ndarray) -> np.ndarray:
    """RGB -> luma replicated over three channels (restored faces of a black-and-white photo stay so)."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def sidecar_path(output_path: str | os.PathLike) -> Path:
    """``<output>.json`` (the whole file name plus ``.json``, so a.jpg and a.png never share one)."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".json")


def _blend(jobs: list[Job], alpha: float) -> None:
    """``job.output = alpha * restored + (1 - alpha) * input crop`` (GPEN's ``--alpha``), in place."""
    if alpha >= 1.0:
        return
    for job in jobs:
        if job.output is not None:
            source = job.crop(job.output_model.size, job.output_model.template).astype(np.float32)
            mixed = alpha * job.output.astype(np.float32) + (1.0 - alpha) * source
            job.output = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
