"""Restore the faces of photos: ``python restore.py -i photo.jpg -o out.png --person alice``.

Thin wrapper around :func:`gpen_fewshot.cli.restore.main` (also installed as ``gpen-restore``); run
``python restore.py --help`` for the options.
"""

from gpen_fewshot.cli.restore import main

if __name__ == "__main__":
    raise SystemExit(main())
