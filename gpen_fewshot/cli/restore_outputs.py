"""Where ``gpen-restore`` writes: output names (``--ext``, ``--suffix``), refusing to overwrite inputs, and
the folder entries it does not restore."""

from __future__ import annotations

import os
from pathlib import Path

from gpen_fewshot.utils.image import IMAGE_EXTENSIONS, list_images

EXTENSIONS = ("auto", "png", "jpg")  # --ext; auto = the input's own extension


def plan_outputs(input_path: Path, output: str | None, ext: str = "auto", suffix: str = ""
                 ) -> list[tuple[Path, Path]]:
    """(input, output) pairs. Outputs keep the input file names (and formats) inside an output folder; a
    single input defaults to ``./output_<name>``.

    Args:
        input_path: image file or folder.
        output: output file or folder as typed (a trailing '/' marks a folder), or None.
        ext: "auto" (the input's extension), "png" or "jpg": the format of outputs named here.
        suffix: appended to the stem of outputs named here, after "_" (GFPGAN / CodeFormer: a.png ->
            a_restored.png with suffix "restored").

    Raises:
        FileNotFoundError: the input does not exist or a folder holds no images.
        ValueError: a single input's output file has an extension no supported format uses, or contradicts
            ``ext``, or is combined with ``suffix``.
    """

    if input_path.is_dir():
        images = list_images(input_path)
        if not images:
            raise FileNotFoundError(f"{input_path}: no images in this folder")
        folder = Path(output) if output is not None else Path.cwd() / f"output_{input_path.name}"
        return _distinct([(image, folder / output_name(image, ext, suffix)) for image in images])
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    if output is None:
        return [(input_path, Path.cwd() / f"output_{output_name(input_path, ext, suffix)}")]
    target = Path(output)
    if target.is_dir() or output.endswith(("/", os.sep)) or not target.suffix:
        return [(input_path, target / output_name(input_path, ext, suffix))]
    return [(input_path, _output_file(target, ext, suffix))]


def output_name(source: Path, ext: str = "auto", suffix: str = "") -> str:
    """The file name of the output of ``source``: ``<stem>[_<suffix>].<ext>``."""
    if ext not in EXTENSIONS:
        raise ValueError(f"ext must be one of {', '.join(EXTENSIONS)}, got {ext!r}")
    extension = source.suffix if ext == "auto" else f".{ext}"
    return f"{source.stem}{'_' + suffix if suffix else ''}{extension}"


def _distinct(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """``pairs``, unless two inputs would be written to the same output (a.jpg and a.png with --ext png)."""
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        if target in seen:
            raise ValueError(f"{seen[target].name} and {source.name} would both be written to {target} (use "
                             "--ext auto, or move one of them)")
        seen[target] = source
    return pairs


def _output_file(target: Path, ext: str, suffix: str) -> Path:
    """``target`` if its extension is a format we write; a dotted folder name needs a trailing '/'."""

    if target.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"{target}: unsupported output format {target.suffix!r} (use one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}; end the path with '/' for a folder)")
    if (ext != "auto"
            and target.suffix.lower() not in {".png": (".png",), ".jpg": (".jpg", ".jpeg")}[f".{ext}"]):
        raise ValueError(f"{target}: --ext {ext} contradicts the output file's extension (drop --ext, or "
                         "give a folder as -o)")
    if suffix:
        raise ValueError(f"{target}: --suffix names outputs inside a folder, -o already names the file (drop "
                         "--suffix, or give a folder as -o)")
    return target


def refuse_overwriting_inputs(pairs: list[tuple[Path, Path]]) -> None:
    """Raise when an output would replace one of the inputs (same file: inode compared, links included).

    Raises:
        ValueError: names the output and the input it would replace.
    """
    inputs = {_file_id(source): source for source, _ in pairs}
    for _, target in pairs:
        replaced = inputs.get(_file_id(target)) if target.exists() else None
        if replaced is not None:
            raise ValueError(f"{target}: the output would overwrite the input {replaced}; choose another -o "
                             "or pass --overwrite")


def _file_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def skipped_files(input_path: Path) -> list[tuple[Path, str]]:
    """Visible entries of an input folder that are not restored, with the reason (nothing is skipped
    silently)."""

    if not input_path.is_dir():
        return []
    skipped = []
    for path in sorted(p for p in input_path.iterdir() if not p.name.startswith(".")):
        if path.is_symlink() and not path.exists():
            skipped.append((path, "broken symbolic link"))
        elif path.is_dir():
            skipped.append((path, "sub-folder (folders are not searched recursively)"))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            what = f"unsupported format {path.suffix!r}" if path.suffix else "no image extension"
            skipped.append((path, f"{what} (supported: {', '.join(IMAGE_EXTENSIONS)})"))
    return skipped
