"""Registry, cache location, download and checksum verification of pretrained weight files.

Every network the project uses that is not trained here has a ``WeightSpec`` in ``REGISTRY``. Files are
fetched on first use (``weight_path(name)``) into ``weights_dir()`` (or, for files that torchvision / lpips /
pytorch-fid look up themselves, into torch's hub cache). Downloads resume from a ``.part`` file, are renamed
into place only when complete and verified, and their sha256 is checked: against the registry when it is
known, otherwise it is recorded on first download ("trust on first use") in ``gpen_fewshot_checksums.json``
next to the file and every later use is checked against that record.

Bundled files (the RetinaFace MobileNet-0.25 detector, the MobileFaceNet identity network and the project's
own compact prior ``gpen-compact-256`` / ``gpen-compact-256-D``) ship inside the package in
``gpen_fewshot/assets/weights/`` and are never downloaded: a missing one is a broken install, reported as
such.

The dlib face-recognition models are not in the registry: they ship in the ``face-recognition-models`` PyPI
package.

Why one file over 400 lines: about half of it is the registry table itself (one ``WeightSpec`` per file, with
URL, sha256, size and licence); download, checksum and lookup code stays next to the table it serves.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from gpen_fewshot.utils.atomic import atomic_write_json
from gpen_fewshot.utils.checkout import source_root
from gpen_fewshot.utils.hashing import sha256_file  # noqa: F401  (public: weights.sha256_file)

ENV_WEIGHTS_DIR = "GPEN_FEWSHOT_WEIGHTS_DIR"
CHECKSUMS_FILENAME = "gpen_fewshot_checksums.json"
_GPEN_URL = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_GPEN_LICENCE = "GPEN (yangxy/GPEN): (c) Alibaba 2021, for academic and non-commercial use only"
_CHUNK = 1 << 20
_USER_AGENT = "gpen-fewshot/0.1 (weights download)"

# The project's own compact prior (registry names "gpen-compact-256" and "gpen-compact-256-D"), bundled in
# gpen_fewshot/assets/weights/. `python scripts/export_prior.py <pretraining run>` writes both files and
# prints these four values; paste them here. None = not pinned yet: the file is then accepted without a
# checksum.
COMPACT_256_SHA256: str | None = "8cb8d4c81c0641cb00ca5cc93ed975b0ebfb2bfa585793f6a3a81dbbcf1d762c"
COMPACT_256_SIZE: int | None = 8_943_214
COMPACT_256_D_SHA256: str | None = "1c2456cb32a1bcd202333d8be2ab3fb0ff30cea799ca36d533151d50be55159f"
COMPACT_256_D_SIZE: int | None = 3_009_538
COMPACT_256_LICENCE = ("non-commercial research only (trained on UTKFace; see "
                       "gpen_fewshot/assets/weights/gpen-compact-256.md)")

Location = Literal["weights_dir", "torch_hub", "bundled"]


class WeightsUnavailableError(FileNotFoundError):
    """A weight file is not on disk and could not be downloaded; the message says where to put it."""


class DownloadError(OSError):
    """A download failed (network error, HTTP error or incomplete transfer); a ``.part`` file may remain."""


class ChecksumMismatchError(ValueError):
    """A file's sha256 differs from the registry's or from the one recorded when it was first downloaded."""


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable (or bundled) weight file.

    Attributes:
        name: registry key, e.g. ``"GPEN-BFR-512"``.
        filename: file name on disk.
        url: where it is downloaded from (``None`` for bundled files).
        sha256: expected hex digest, or ``None`` when unknown (then recorded on first download).
        size: expected size in bytes, or ``None`` when unknown.
        licence: licence / terms of use, one line.
        description: what the network is and what this project uses it for.
        kind: ``"generator"``, ``"discriminator"``, ``"detector"``, ``"parsing"``, ``"identity"`` or
            ``"metric"``; lets loaders refuse e.g. a detector given as a GPEN generator.
        location: where the file lives. ``"weights_dir"``: ``weights_dir()/filename``. ``"torch_hub"``:
            ``<torch hub dir>/checkpoints/filename`` (``$TORCH_HOME/hub/checkpoints``), the place where
            torchvision, lpips and pytorch-fid look for it themselves, so they work offline once it is there.
            ``"bundled"``: shipped inside the package in ``gpen_fewshot/assets/weights/`` (never downloaded).
        sha256_prefix: leading hex digits of the sha256 when only those are known (torch hub file names
            ``name-<prefix>.pth`` carry them); checked when ``sha256`` is ``None``.
    """

    name: str
    filename: str
    url: str | None
    sha256: str | None
    size: int | None
    licence: str
    description: str
    kind: str = "generator"
    location: Location = "weights_dir"
    sha256_prefix: str | None = None


def _gpen(name: str, kind: str, description: str) -> WeightSpec:
    return WeightSpec(name, f"{name}.pth", _GPEN_URL + f"{name}.pth", None, None, _GPEN_LICENCE, description,
                      kind)


def _bundled_prior(name: str, kind: str, sha256: str | None, size: int | None,
                   description: str) -> WeightSpec:
    """A prior trained by this project (``experiment=pretrain``), shipped as ``<name>.safetensors``."""
    return WeightSpec(name, f"{name}.safetensors", None, sha256, size, COMPACT_256_LICENCE, description, kind,
                      "bundled")


REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _gpen("GPEN-BFR-512", "generator", "GPEN face restoration generator, 512 px (cm 2, narrow 1)"),
        _gpen("GPEN-BFR-512-D", "discriminator", "discriminator released with GPEN-BFR-512"),
        _gpen("GPEN-BFR-256", "generator", "GPEN face restoration generator, 256 px (cm 1, narrow 0.5)"),
        _gpen("GPEN-BFR-256-D", "discriminator", "discriminator released with GPEN-BFR-256 (narrow 1)"),
        _gpen("RetinaFace-R50", "detector", "RetinaFace ResNet-50 face detector (boxes + 5 landmarks)"),
        _gpen("ParseNet-latest", "parsing", "face parsing network (paste-back masks)"),
        _gpen("model_ir_se50", "identity", "ArcFace IR-SE50 face recognition (identity loss)"),
        WeightSpec(
            "retinaface-mobilenet0.25", "retinaface_mobilenet0.25.pth", None,
            "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1", 1_789_735,
            "MIT (c) 2019 biubug6, see gpen_fewshot/assets/weights/README.md",
            "RetinaFace MobileNet-0.25 face detector (boxes + 5 landmarks), bundled", "detector", "bundled",
        ),
        WeightSpec(
            "lpips-alexnet", "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", None, None,
            "BSD-3-Clause (torchvision)", "torchvision AlexNet, the LPIPS backbone", "metric", "torch_hub",
            sha256_prefix="7be5be79",
        ),
        WeightSpec(
            "fid-inception", "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth", None, None,
            "Apache-2.0 (pytorch-fid; weights ported from TensorFlow's Inception 2015-12-05)",
            "Inception-v3 FID feature extractor (pytorch-fid)", "metric", "torch_hub",
        ),
        WeightSpec(
            "mobilefacenet", "mobilefacenet_model-y1-test2.params", None,
            "b151f97e392e68cb540fb9710a91a574a4187d491eeda77d1c1799ae6dc3b82b", 4_115_182,
            "non-commercial research only (InsightFace MobileFaceNet trained on MS1M), see "
            "gpen_fewshot/assets/weights/README.md",
            "InsightFace MobileFaceNet (ArcFace, 128-d, MXNet format), identity loss and metric, bundled",
            "identity", "bundled",
        ),
        _bundled_prior("gpen-compact-256", "generator", COMPACT_256_SHA256, COMPACT_256_SIZE,
                       "the project's compact residual GPEN prior, 256 px "
                       "(style_dim 256, n_mlp 4, cm 1, narrow 0.25), "
                       "EMA generator trained by gpen-fewshot experiment=pretrain_cpu, fp16, bundled"),
        _bundled_prior("gpen-compact-256-D", "discriminator", COMPACT_256_D_SHA256, COMPACT_256_D_SIZE,
                       "discriminator (cm 1, narrow 0.25) trained with the previous gpen-compact-256, "
                       "fp16, bundled"),
    )
}


def weights_dir() -> Path:
    """Directory for downloaded weights.

    ``$GPEN_FEWSHOT_WEIGHTS_DIR`` if set; else ``<repo>/data/weights`` when running from a source checkout
    (a ``pyproject.toml`` next to the package); else ``~/.cache/gpen_fewshot/weights``.
    """
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        return Path(env).expanduser()
    repo = source_root()
    if repo is not None:
        return repo / "data" / "weights"
    return Path.home() / ".cache" / "gpen_fewshot" / "weights"


def torch_hub_checkpoints_dir() -> Path:
    """``<torch hub dir>/checkpoints``: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/...``).

    Uses ``torch.hub.get_dir()`` (which also honours ``torch.hub.set_dir``) when torch is already imported;
    otherwise the same rule is applied without importing torch, so listing/downloading stays fast.
    """
    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    return _default_torch_hub_dir() / "checkpoints"


def _default_torch_hub_dir() -> Path:
    """torch's default hub dir rule, without importing torch."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(torch_home).expanduser() / "hub"


def bundled_dir() -> Path:
    """Folder of the weight files shipped inside the package."""
    return Path(str(resources.files("gpen_fewshot"))) / "assets" / "weights"


def get_spec(name: str | WeightSpec) -> WeightSpec:
    """Registry entry for ``name`` (a ``WeightSpec`` is returned unchanged).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    if isinstance(name, WeightSpec):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}") from None


def destination(name: str | WeightSpec) -> Path:
    """Where the file of ``name`` lives (whether or not it exists yet)."""
    spec = get_spec(name)
    folder = {"weights_dir": weights_dir, "torch_hub": torch_hub_checkpoints_dir, "bundled": bundled_dir}
    return folder[spec.location]() / spec.filename


def is_available(name: str | WeightSpec) -> bool:
    """Whether the file is on disk (and has the registry's size when known). Does not hash it."""
    spec = get_spec(name)
    path = destination(spec)
    return path.is_file() and (spec.size is None or path.stat().st_size == spec.size)


def weight_path(name: str | WeightSpec, download: bool = True, progress: bool = True) -> Path:
    """Path of a verified weight file, downloading it first when missing and ``download`` is true.

    Args:
        name: registry name (or a ``WeightSpec``).
        download: fetch the file if it is not on disk.
        progress: show a progress bar while downloading.

    Returns:
        The path of the file, its checksum verified (see ``verify``).

    Raises:
        WeightsUnavailableError: missing and not downloadable (offline, download disabled, HTTP error);
            the message names the file, the directory to put it in and the URL.
        ChecksumMismatchError: the file on disk (or the one downloaded) has the wrong sha256.
    """
    spec = get_spec(name)
    path = destination(spec)
    if not path.is_file():
        if not download or spec.url is None:
            raise WeightsUnavailableError(_unavailable_message(spec, path, None))
        try:
            with _file_lock(path):
                if not path.is_file():  # another process may have finished it while we waited
                    download_file(spec.url, path, sha256=spec.sha256, progress=progress)
        except DownloadError as error:
            raise WeightsUnavailableError(_unavailable_message(spec, path, error)) from None
    verify(spec)
    return path


def locate(source: str | os.PathLike, download: bool = False) -> Path:
    """File of ``source``: an existing path as given, else a registry name resolved by :func:`weight_path`.

    Raises:
        WeightsUnavailableError: registry name whose file is missing (registry message).
        FileNotFoundError: neither an existing path nor a registry name.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    if str(source) in REGISTRY:
        return weight_path(str(source), download=download)
    raise FileNotFoundError(f"{source}: no such weights file, and not a name in the weights registry "
                            f"(known names: {', '.join(REGISTRY)})")


def _unavailable_message(spec: WeightSpec, path: Path, error: Exception | None) -> str:
    if spec.location == "bundled":
        return (f"bundled weights {spec.name!r} are missing from the installed package: {path} "
                "(reinstall gpen-fewshot)")
    reason = f"download failed: {error}" if error else "not found and downloading is disabled"
    hint = f"; or set ${ENV_WEIGHTS_DIR} to the folder holding it" if spec.location == "weights_dir" else ""
    return (f"weights {spec.name!r} unavailable ({reason}). Download {spec.url} and save it as {path} "
            f"(folder {path.parent}){hint}.")


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, hashed once per process


def verify(name: str | WeightSpec) -> str:
    """Check the file of ``name`` on disk and return its sha256.

    Order of checks: registry ``sha256`` (or ``sha256_prefix``), then the sha256 recorded when the file was
    first seen. A file without any known or recorded checksum (e.g. copied there by hand) has its sha256
    recorded now. Each file is hashed at most once per process while its size and mtime are unchanged.

    Raises:
        WeightsUnavailableError: the file is not on disk.
        ChecksumMismatchError: the size or sha256 does not match.
    """
    spec = get_spec(name)
    path = destination(spec)
    if not path.is_file():
        raise WeightsUnavailableError(_unavailable_message(spec, path, None))
    stat = path.stat()
    if spec.size is not None and stat.st_size != spec.size:
        raise ChecksumMismatchError(_mismatch_message(path, f"{spec.size} bytes", f"{stat.st_size} bytes"))
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(key) or sha256_file(path)
    recorded = None if spec.location == "bundled" else _read_checksums(path.parent).get(path.name)
    expected = spec.sha256 or (recorded or {}).get("sha256")
    if expected is not None and actual != expected.lower():
        where = ("registry" if spec.sha256
                 else f"recorded at first download in {path.parent / CHECKSUMS_FILENAME}")
        raise ChecksumMismatchError(_mismatch_message(path, f"{expected} ({where})", actual))
    if spec.sha256_prefix and not actual.startswith(spec.sha256_prefix.lower()):
        raise ChecksumMismatchError(_mismatch_message(path, spec.sha256_prefix + "...", actual))
    if expected is None and spec.location != "bundled":
        record_checksum(path, actual, spec.url)
    _VERIFIED[key] = actual
    return actual


def _mismatch_message(path: Path, expected: str, actual: str) -> str:
    return (f"{path}: checksum mismatch (expected {expected}, got {actual}); the file is corrupt or not the "
            "expected release: delete it and download it again")


def _read_checksums(folder: Path) -> dict[str, dict]:
    path = folder / CHECKSUMS_FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable checksum record ({error}); delete it to re-record") from None
    return data if isinstance(data, dict) else {}


def record_checksum(path: Path, sha256: str, url: str | None) -> None:
    """Record ``path``'s sha256 in the ``gpen_fewshot_checksums.json`` of its folder (atomic write)."""
    records = _read_checksums(path.parent)
    records[path.name] = {"sha256": sha256, "size": path.stat().st_size, "url": url}
    atomic_write_json(path.parent / CHECKSUMS_FILENAME, records)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Inter-process lock so that parallel ranks/processes do not download the same file twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent downloads are then the user's problem
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
                  timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``: resumable, verified, atomic.

    Bytes go to ``dest + ".part"``; an existing ``.part`` is resumed with an HTTP ``Range`` request (servers
    that ignore it make the download restart from zero). When complete, the sha256 is checked (if given) and
    the ``.part`` is renamed to ``dest`` (``os.replace``, atomic). ``file://`` URLs work too (no resume).

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final path; its folder is created.
        sha256: expected hex digest, or ``None`` to skip the check.
        progress: show a tqdm progress bar (stderr).
        timeout: socket timeout in seconds.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DownloadError: network/HTTP error or incomplete transfer (the ``.part`` is kept for resuming).
        ChecksumMismatchError: complete but wrong sha256 (the ``.part`` is deleted, ``dest`` not created).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        try:
            _fetch(url, part, offset, progress, timeout)
            break
        except _RangeNotSatisfiable:
            part.unlink()  # the .part is as long as (or longer than) the file: start afresh once
            if attempt:
                raise DownloadError(f"{url}: server refused the download range") from None
        except DownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise DownloadError(f"{url}: {_describe(error)}") from None
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256.lower():
            part.unlink()
            raise ChecksumMismatchError(f"{url}: downloaded file has sha256 {actual}, expected {sha256}; "
                                        f"nothing was saved at {dest}")
    os.replace(part, dest)  # the .part was fsynced by _fetch; plain rename keeps resuming possible
    return dest


class _RangeNotSatisfiable(Exception):
    pass


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    if isinstance(error, http.client.IncompleteRead):
        return f"connection closed early ({len(error.partial)} bytes of the last read received)"
    return str(error) or type(error).__name__


def _fetch(url: str, part: Path, offset: int, progress: bool, timeout: float) -> None:
    """Append the bytes of ``url`` from ``offset`` to ``part`` (restarting at 0 if Range is ignored)."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise _RangeNotSatisfiable from None
        raise
    with response:
        resumed = offset > 0 and getattr(response, "status", None) == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            resumed = False  # a 206 for some other range: cannot append safely
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        _stream(response, part, start, total, progress, url)


def _stream(response, part: Path, start: int, total: int | None, progress: bool, url: str) -> None:
    from tqdm.auto import tqdm

    mode = "ab" if start else "wb"
    with open(part, mode) as handle, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=part.name[: -len(".part")],
                                          disable=not progress, leave=False) as bar:
        handle.truncate(start)  # a .part longer than what we resume from would otherwise corrupt it
        received = start
        while chunk := response.read(_CHUNK):
            handle.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        handle.flush()
        os.fsync(handle.fileno())
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes")
