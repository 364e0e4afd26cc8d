"""Download, list or verify the pretrained weight files of gpen-fewshot.

Examples:
    python scripts/download_weights.py --list
    python scripts/download_weights.py                      # every GPEN generator/discriminator file
    python scripts/download_weights.py GPEN-BFR-256 lpips-alexnet --dir /data/weights
    python scripts/download_weights.py --verify             # check the sha256 of every file on disk

Files go to $GPEN_FEWSHOT_WEIGHTS_DIR (or --dir), except "torch_hub" entries (lpips-alexnet, fid-inception),
which go to $TORCH_HOME/hub/checkpoints where torchvision / lpips / pytorch-fid look for them.
Exit status: 0 when everything asked for succeeded, 1 otherwise (one "FAILED" line per failure).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpen_fewshot import weights
from gpen_fewshot.weights import REGISTRY, ChecksumMismatchError, WeightsUnavailableError

_DEFAULT_KINDS = ("generator", "discriminator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registry names (default: all GPEN generator/discriminator "
                        "files; with --verify: every file on disk)")
    parser.add_argument("--list", action="store_true",
                        help="list the registry and what is on disk, then exit")
    parser.add_argument("--dir", type=Path, help=f"weights folder (sets ${weights.ENV_WEIGHTS_DIR})")
    parser.add_argument("--verify", action="store_true",
                        help="check sha256 of files on disk; download nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _status(name: str) -> str:
    spec = REGISTRY[name]
    if weights.is_available(name):
        return "present"
    return "MISSING (bundled file lost: reinstall)" if spec.location == "bundled" else "missing"


def list_registry() -> None:
    """Print one block per registry entry: status, path, URL, licence."""
    print(f"weights folder: {weights.weights_dir()}")
    for name, spec in REGISTRY.items():
        print(f"\n{name:<26} {spec.kind:<14} {_status(name)}")
        print(f"  {spec.description}")
        print(f"  path:    {weights.destination(name)}")
        if spec.url:
            print(f"  url:     {spec.url}")
        print(f"  sha256:  {spec.sha256 or 'recorded on first download'}")
        print(f"  licence: {spec.licence}")


def _unknown(names: list[str]) -> list[str]:
    return [f"FAILED {n}: unknown name (known: {', '.join(REGISTRY)})" for n in names if n not in REGISTRY]


def run(names: list[str], verify_only: bool, progress: bool) -> list[str]:
    """Download (or verify) each name; return one failure line per failed name."""
    failures = _unknown(names)
    for name in (n for n in names if n in REGISTRY):
        try:
            if verify_only:
                digest = weights.verify(name)
                print(f"ok       {name:<26} sha256 {digest}")
            else:
                was_there = weights.is_available(name)
                path = weights.weight_path(name, download=True, progress=progress)
                print(f"{'present' if was_there else 'fetched':<8} {name:<26} {path}")
        except (WeightsUnavailableError, ChecksumMismatchError, OSError, ValueError) as error:
            failures.append(f"FAILED {name}: {error}")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dir is not None:
        os.environ[weights.ENV_WEIGHTS_DIR] = str(args.dir.expanduser().resolve())
    if args.list:
        list_registry()
        return 0
    names = args.names
    if not names:
        names = ([n for n in REGISTRY if weights.is_available(n)] if args.verify
                 else [n for n, s in REGISTRY.items() if s.kind in _DEFAULT_KINDS])
    if not names:
        print("nothing to do: no weight file is on disk yet")
        return 0
    failures = run(names, args.verify, progress=not args.no_progress)
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
