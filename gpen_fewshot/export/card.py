"""The model card (``README.md``) written into every person export, from what the export records.

A person export is a model fine-tuned on one real person's face: the card says what it was made from (base
model, number of photos, training recipe), how well it did on the person's held-out photos, what it is for and
not for, and that ``person.json`` holds that person's face embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Validation metrics worth a line of their own (the rest, e.g. per-degradation means, go in one list).
_HEADLINE = {
    "psnr": "PSNR (dB, higher = better)",
    "ssim": "SSIM (higher = better)",
    "id_distance_gt": "dlib identity distance to the ground truth (lower = better; < 0.6 = same person)",
    "id_verified_gt": "fraction verified as the same person as the ground truth",
}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value in (None, "") else str(value)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {key} | {_value(value)} |" for key, value in rows)]


def _metrics_section(name: str, metrics: Mapping[str, float], identity_loss: str | None) -> list[str]:
    lines = ["## Validation metrics", ""]
    if not metrics:
        return [*lines, "None recorded (the run had no held-out photos, or validation was switched off).", ""]
    lines += ["Final EMA generator on the person's held-out photos (never trained on), degraded as in "
              "training:", ""]
    lines += _table([(label, metrics[key]) for key, label in _HEADLINE.items() if key in metrics])
    others = {k: v for k, v in metrics.items() if k not in _HEADLINE}
    if others:
        lines += ["", "Other: " + ", ".join(f"`{k}` {_value(v)}" for k, v in sorted(others.items()))]
    if identity_loss:
        lines += ["", f"Training had a `{identity_loss}` identity loss term, so that network's identity "
                      "metric flatters this model."]
    lines += ["", "The comparison with the base model on fixed degraded inputs: "
                  f"`python evaluate.py person={name}` (with this export registered)."]
    return [*lines, ""]


def _recipe_rows(recipe: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if not recipe:
        return [("recipe", "not recorded (exported outside train.py)")]
    return [(key.replace("_", " "), value) for key, value in recipe.items()]


def person_card(person: Mapping[str, Any], config: Mapping[str, Any],
                recipe: Mapping[str, Any] | None = None) -> str:
    """Markdown model card of a person export.

    Args:
        person: ``person.json`` content (``PersonMetadata`` as a dict).
        config: ``config.json`` content.
        recipe: training recipe rows (experiment, model, loss, freezing, iterations, learning rates...), in
            display order; None when unknown.

    Returns:
        The card's text.
    """
    name = person["name"]
    base = config.get("base") or {}
    base_name = person.get("base_model") or "none (trained from random weights)"
    generator = config.get("generator") or {}
    lines = [
        f"# Model card: gpen-fewshot person model `{name}`", "",
        f"A GPEN face-restoration generator fine-tuned on photos of **{name}** by gpen-fewshot "
        f"(version {person.get('package_version', 'unknown')}, {person.get('created', 'date unknown')}).", "",
        *_table([("base model", base_name), ("base sha256", person.get("base_sha256") or base.get("sha256")),
                 ("training photos", person.get("n_photos")), ("crop size", config.get("size")),
                 ("alignment template", config.get("template")),
                 ("generator", ", ".join(f"{k}={v}" for k, v in generator.items() if k != "size")),
                 ("storage", f"{config.get('mode')} ({config.get('dtype')}); "
                             f"{(config.get('tensors') or {}).get('stored')} of "
                             f"{(config.get('tensors') or {}).get('total')} tensors"),
                 ("training config hash", person.get("config_hash"))]), "",
        "## Training recipe", "", *_table(_recipe_rows(recipe)), "",
        *_metrics_section(name, person.get("metrics") or {}, person.get("identity_loss")),
        "## Intended use", "",
        f"Restoring old, blurred, noisy or compressed photos **of {name}**: `python restore.py -i photo.jpg "
        f"-o restored.png --person {name}` (other faces in a photo get the base model), or "
        f"`--weights <this folder>`. `--strength` below 1 moves the result back towards the base model.", "",
        "## Limitations", "",
        f"- Trained on {_value(person.get('n_photos'))} photos: it knows this person's face only as those "
        "photos show it (ages, lighting, expressions, skin tones outside them are guesses of the base "
        "model).",
        "- A restoration is a plausible reconstruction, not a recovery of lost detail: do not use it as "
        "evidence of what a photo showed, nor for identification.",
        "- On other people it may pull faces towards this person (check with `evaluate.py ... others=...`); "
        "the restore pipeline's identity matching keeps it to faces that match this person's embedding.",
        "- It inherits the base model's licence and limitations (see the base model's card) and its biases.",
        "",
        "## Privacy", "",
        f"`person.json` holds a face embedding (a biometric identifier) of a real person, {name}, computed "
        "from their photos, and the weights are tuned to reproduce their face. Do not publish, share or "
        "upload this folder without that person's consent; delete it when they ask.", "",
        "Files: `config.json` (architecture, base reference), `model.safetensors` (weights), `person.json` "
        "(name, base sha256, training config hash, photo count, reference embedding, metrics).", "",
    ]
    return "\n".join(lines)
