"""Restoring photos: detect faces, align, route each face to a person's weights or the base by identity,
restore in batches, check identity drift, paste back with a feathered colour-matched mask.

Typical use::

    from gpen_fewshot.restore import Restorer, RestoreOptions
    restorer = Restorer.from_pretrained("alice")                 # alice's weights + her base model
    result = restorer.restore(image)                            # uint8 RGB HWC in, result.image out
    restorer = Restorer("GPEN-BFR-512", ["alice", "bob"], options=RestoreOptions(strength=0.5))
    restorer.restore_file("group.jpg", "out.png")               # also writes out.png.json (per-face report)

Any callable model can be injected for tests: ``Restorer(FaceModel(lambda x: x, size=512))``.
"""

from gpen_fewshot.faces.paste import PasteConfig
from gpen_fewshot.restore.guard import GuardedRunner, Job
from gpen_fewshot.restore.models import (
    BASE,
    DEFAULT_BASES,
    BaseModelUnavailableError,
    FaceModel,
    PersonModel,
    default_base_name,
    load_base_model,
    run_model,
)
from gpen_fewshot.restore.pipeline import (
    BACKGROUND_UPSAMPLERS,
    BACKGROUND_UPSCALER,
    NoFaceError,
    RestoreOptions,
    Restorer,
    sidecar_path,
)
from gpen_fewshot.restore.records import FaceRecord, GuardStep, RestoreResult
from gpen_fewshot.restore.routing import Route, route_faces

__all__ = [
    "BACKGROUND_UPSAMPLERS",
    "BACKGROUND_UPSCALER",
    "BASE",
    "DEFAULT_BASES",
    "BaseModelUnavailableError",
    "FaceModel",
    "FaceRecord",
    "GuardStep",
    "GuardedRunner",
    "Job",
    "NoFaceError",
    "PasteConfig",
    "PersonModel",
    "RestoreOptions",
    "RestoreResult",
    "Restorer",
    "Route",
    "default_base_name",
    "load_base_model",
    "route_faces",
    "run_model",
    "sidecar_path",
]
