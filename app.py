"""The web demo: ``python app.py [--port 7860]`` serves a Gradio page on http://127.0.0.1:7860.

Thin wrapper around :func:`gpen_fewshot.cli.app.main` (also installed as ``gpen-app``); run
``python app.py --help`` for the options. Needs the optional extra: ``pip install 'gpen-fewshot[app]'``.
"""

from gpen_fewshot.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
