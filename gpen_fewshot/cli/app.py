"""``gpen-app`` / ``python app.py``: the web demo (Gradio) on http://127.0.0.1:7860.

Upload a photo or click the bundled demo photo, choose "base" or a registered person and the strength, compare
before and after, download the restored image and its per-face JSON report. The models stay loaded between
requests. Needs the optional extra: pip install 'gpen-fewshot[app]'.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.cli.restore import default_input
from gpen_fewshot.cli.webapp import (
    BASE_CHOICE,
    GradioMissingError,
    RestoreService,
    build_app,
    import_gradio,
)

EXIT_SETUP = 2


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="gpen-app",
                                description="Web demo (Gradio): restore the faces of a photo in "
                                "the browser, at http://127.0.0.1:7860 by default.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, reachable from this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--persons-dir", type=Path, default=None,
                   help="where registered persons are listed (default: $GPEN_FEWSHOT_PERSONS_DIR, "
                   "else data/persons)")
    p.add_argument("--base", default=None,
                   help="base model: weights name, checkpoint file or export directory "
                   "(default: as restore.py)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="where results are written (default: a new temporary folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: loads the base model, then serves the page until Ctrl-C. Returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    try:
        import_gradio()
        restore_args = ["--device", args.device] + (["--base", args.base] if args.base is not None else [])
        service = RestoreService(restore_args, persons_root=args.persons_dir, output_root=args.output_dir)
        service.restorer(BASE_CHOICE)  # load the base model now: a missing model is an error at start
    except (GradioMissingError, FileNotFoundError, ValueError, RuntimeError) as err:
        return user_error(err, EXIT_SETUP)
    demo_photo = default_input()
    print(f"persons: {', '.join(service.choices()[1:]) or 'none registered'} (in {service.persons_root}); "
          f"results go to {service.output_root}")
    app = build_app(service, demo_photo)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=args.host, server_port=args.port, ssr_mode=False, show_error=True,
               allowed_paths=[str(demo_photo.parent), str(service.output_root)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
