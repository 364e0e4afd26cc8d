"""Per-person export of a fine-tuned GPEN generator, and its strict loader.

An export is a directory (default for person ``alice``: ``<persons dir>/alice/weights/``; the persons dir is
``$GPEN_FEWSHOT_PERSONS_DIR``, else ``<repo>/data/persons`` in a source checkout, else ``./data/persons``)
holding

- ``config.json``: format name and version, the generator architecture (``GeneratorConfig`` fields), crop
  size, alignment template, storage ``mode``/``dtype``, the base checkpoint (name, sha256, path at export
  time) and tensor counts;
- ``model.safetensors``: the weights;
- ``person.json`` (person exports only): name, base model name + sha256, training config hash, number of
  photos, reference identity embedding (128 floats, dlib), final validation metrics, package version and
  creation time;
- ``README.md`` (person exports only): the model card (base model, photos, training recipe, validation
  metrics, intended use, limitations, and a privacy note: ``person.json`` holds a real person's face
  embedding).

Storage modes:

- ``"delta"`` (default): only the tensors that differ from the base (the parameters trainable in any stage,
  plus any other tensor found to differ), stored **whole**, not as differences. The base checkpoint is
  referenced by name + sha256 and must be present at load time. Whole tensors keep strength 1 exact
  (``base + (tuned - base)`` is not bit-exact in floating point), need no arithmetic at load time and take
  the same space: safetensors is uncompressed, so a difference costs as many bytes as a weight. (In fp16 a
  stored difference would round more finely than a stored weight; fp16 is an opt-in size option and its
  2^-11 relative rounding of the weights is accepted.)
- ``"full"``: every tensor, self-contained (the base is still recorded, for ``strength < 1``).

Loading is strict: every stored key must exist in the architecture (and base) with the same shape; a delta
export's base must have the recorded sha256 (the error names expected and actual); a full export must hold
every key. Exports are written into a temporary sibling directory and renamed into place.

Typical use::

    weights = load_person("alice")            # or a path to an export directory
    generator = weights.build_generator(strength=0.5)
    restorer = Restorer.from_pretrained("alice")   # gpen_fewshot.restore
    push_to_hub("data/persons/alice/weights", "me/gpen-alice")   # optional Hub integration (private repo)
    weights = load_person(from_pretrained("me/gpen-alice"))      # a Hub repo id or a local folder
"""

from gpen_fewshot.export.base import BaseReference, file_sha256, resolve_base
from gpen_fewshot.export.common import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    PERSON_FILE,
    WEIGHTS_FILE,
    ExportError,
    PersonMetadata,
    discover_persons,
    find_export_dir,
)
from gpen_fewshot.export.hub import from_pretrained, push_to_hub
from gpen_fewshot.export.loading import load_generator
from gpen_fewshot.export.reader import PersonWeights, load_base_state_dict, load_export_generator, load_person
from gpen_fewshot.export.writer import copy_export, export_generator, export_person
from gpen_fewshot.persons import ENV_PERSONS_DIR
from gpen_fewshot.persons import persons_root as persons_dir
from gpen_fewshot.persons import weights_dir as default_export_dir

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "ENV_PERSONS_DIR",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PERSON_FILE",
    "WEIGHTS_FILE",
    "BaseReference",
    "ExportError",
    "PersonMetadata",
    "PersonWeights",
    "copy_export",
    "default_export_dir",
    "discover_persons",
    "export_generator",
    "export_person",
    "file_sha256",
    "find_export_dir",
    "from_pretrained",
    "load_base_state_dict",
    "load_export_generator",
    "load_generator",
    "load_person",
    "persons_dir",
    "push_to_hub",
    "resolve_base",
]
