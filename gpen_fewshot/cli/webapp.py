"""The web demo (``python app.py`` / ``gpen-app``): a Gradio page over the restore runner.

:class:`RestoreService` holds the models between requests and restores through exactly the code path of
``python restore.py -i PHOTO -o OUT.png [--person EXPORT] --strength S`` (:func:`gpen_fewshot.cli.restore.
build_restorer` and ``Restorer.restore_file``, which also writes the per-face JSON report); it needs no
Gradio. :func:`build_app` lays out the page. Gradio is an optional extra and is imported only there.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gpen_fewshot.cli.restore import build_parser, build_restorer, resolve_device
from gpen_fewshot.export import discover_persons, load_person, persons_dir
from gpen_fewshot.restore import sidecar_path

BASE_CHOICE = "base"
INSTALL_HINT = "the web demo needs Gradio: pip install 'gpen-fewshot[app]'  (or: pip install gradio)"
OUTPUT_FORMAT = ".png"  # lossless, and keeps an input's alpha channel


class GradioMissingError(ImportError):
    """Gradio is not installed; the message says how to install it."""


def import_gradio():
    """The ``gradio`` module, with its telemetry and update check off (the demo runs offline).

    Raises:
        GradioMissingError: Gradio is not installed (the message is the one-line install hint).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise GradioMissingError(INSTALL_HINT) from None
    return gradio


@dataclass(frozen=True)
class DemoResult:
    """One restored photo.

    Attributes:
        before: the photo as uploaded.
        after: the restored photo (PNG, same size as the input).
        report: the per-face JSON report written next to it (``<after>.json``).
        summary: one line for the photo, then one per face (``FaceRecord.summary``).
    """

    before: Path
    after: Path
    report: Path
    summary: str


class RestoreService:
    """Restores uploaded photos with the base model or a registered person, keeping the models loaded.

    One restorer is built per choice on first use (base model, detector, identity network, the person's
    weights) and reused; only the strength changes between requests. Requests run one at a time.

    Args:
        restore_args: extra ``restore.py`` options applied to every request (``--base``, ``--device``, ...).
        persons_root: where registered person exports are listed (default: the restore runner's persons dir,
            ``$GPEN_FEWSHOT_PERSONS_DIR`` or ``data/persons``).
        output_root: where results are written, one sub-folder per request (default: a new temporary folder).
    """

    def __init__(self, restore_args: Sequence[str] = (), persons_root: str | os.PathLike | None = None,
                 output_root: str | os.PathLike | None = None) -> None:

        self._restore_args = list(restore_args)
        # bad options fail here, not on the first request
        parsed = build_parser().parse_args(self._restore_args)
        self.device, self.precision = resolve_device(parsed.device, parsed.precision)
        self.persons_root = Path(persons_root) if persons_root is not None else persons_dir()
        self.output_root = (Path(output_root) if output_root is not None
                            else Path(tempfile.mkdtemp(prefix="gpen-app-")))
        self.output_root.mkdir(parents=True, exist_ok=True)
        self._restorers: dict[str, object] = {}
        self._lock = threading.Lock()

    def persons(self) -> dict[str, Path]:
        """Registered persons, name -> export directory, found as ``restore.py --persons-dir`` finds them."""

        if not self.persons_root.is_dir():
            return {}
        exports = discover_persons(self.persons_root)
        return {(e.parent if e.name == "weights" else e).name: e for e in exports}

    def choices(self) -> list[str]:
        """``"base"`` and then every registered person's name."""
        return [BASE_CHOICE, *self.persons()]

    def restorer(self, choice: str):
        """The (cached) ``Restorer`` for ``"base"`` or a registered person.

        Raises:
            ValueError / FileNotFoundError: unknown person, unloadable export, no base model (one line).
        """
        if choice not in self._restorers:
            self._restorers[choice] = self._build(choice)
        return self._restorers[choice]

    def _build(self, choice: str):

        export = None
        if choice != BASE_CHOICE:
            export = self.persons().get(choice)
            if export is None:
                raise ValueError(f"person {choice!r}: no registered export under {self.persons_root}")
        person_args = ["--person", str(export)] if export is not None else []
        args = build_parser().parse_args([*self._restore_args, *person_args])
        restorer, failures = build_restorer(args, self.device, self.precision)
        if failures:  # the runner reported it on the console; raise the same error for the page
            load_person(export)
            raise ValueError(f"person {choice!r}: the export at {export} could not be loaded")
        return restorer

    def restore(self, photo: str | os.PathLike, choice: str = BASE_CHOICE,
                strength: float = 1.0) -> DemoResult:
        """Restore one photo file; writes ``restored_<name>.png`` and its JSON report to a new folder.

        Args:
            photo: the input image file (any format ``restore.py`` reads).
            choice: ``"base"`` or a registered person's name (faces matching them get their weights).
            strength: 0 = base weights, 1 = the person's weights.

        Raises:
            ValueError: bad strength or person, unreadable photo, no face found (one-line messages).
        """

        photo = Path(photo)
        with self._lock:
            restorer = self.restorer(choice)
            restorer.options = replace(restorer.options, strength=float(strength))
            folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.output_root))
            target = folder / f"restored_{photo.stem}{OUTPUT_FORMAT}"
            result = restorer.restore_file(photo, target)
        weights = choice if choice == BASE_CHOICE else f"{choice} at strength {float(strength):g}"
        head = f"{len(result.faces)} face(s); weights: {weights}; base model: {result.info['base']}"
        base_name = Path(str(result.info["base"])).stem  # "gpen-compact-256", not "base (base)"
        lines = [head, *(record.summary(base_name) for record in result.faces)]
        return DemoResult(photo, target, sidecar_path(target), "\n".join(lines))


DESCRIPTION = """# gpen-fewshot: face restoration
Upload a photo (or click the demo photo below it), choose the weights and the strength, then **Restore**.
With a registered person, faces that match them are restored with their weights and the others with the base
model, as `python restore.py --person NAME` does. Compare before and after with the slider; download the
restored image and the per-face JSON report."""


def build_app(service: RestoreService, demo_photo: Path | None = None):
    """The Gradio page.

    Args:
        service: does the restoring.
        demo_photo: offered as a one-click example (the photo ``python restore.py`` restores by default).

    Raises:
        GradioMissingError: Gradio is not installed.
    """
    gr = import_gradio()

    def restore(photo: str | None, choice: str, strength: float):
        if not photo:
            raise gr.Error("Upload a photo first (or click the demo photo).")
        try:
            result = service.restore(photo, choice, strength)
        except (ValueError, OSError) as err:  # unreadable photo, no face, bad export: one line on the page
            raise gr.Error(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        return (str(result.before), str(result.after)), str(result.after), str(result.report), result.summary

    with gr.Blocks(title="gpen-fewshot demo", analytics_enabled=False) as app:
        gr.Markdown(DESCRIPTION)
        with gr.Row():
            with gr.Column():
                photo = gr.Image(label="Photo", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard"], elem_id="photo")
                if demo_photo is not None and demo_photo.is_file():
                    gr.Examples([[str(demo_photo)]], inputs=[photo], label="Demo photo")
                choice = gr.Dropdown(service.choices(), value=BASE_CHOICE, label="Weights", elem_id="weights",
                                     info="base, or a registered person (data/persons/<name>/weights)")
                strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength", elem_id="strength",
                                     info="0 = base weights, 1 = the person's weights (no effect with base)")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column():
                compare = gr.ImageSlider(label="Before / after", type="filepath", format="png",
                                         interactive=False, elem_id="compare")
                image_file = gr.File(label="Restored image", elem_id="restored-file")
                report_file = gr.File(label="Per-face report (JSON)", elem_id="report-file")
                summary = gr.Textbox(label="Faces", lines=6, max_lines=12, elem_id="summary")
        button.click(restore, [photo, choice, strength], [compare, image_file, report_file, summary])
        # a person registered while the demo runs appears on the next page load
        app.load(lambda: gr.Dropdown(choices=service.choices()), outputs=choice)
    return app
