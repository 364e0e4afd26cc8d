"""Weights registry, download (resume, checksum, atomic rename) and the download script.

Nothing is fetched from the internet: downloads come from an http.server on 127.0.0.1 (with a hand-written
Range implementation and a switch to drop the connection half-way) or from file:// URLs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from gpen_fewshot import weights
from gpen_fewshot.weights import (
    REGISTRY,
    ChecksumMismatchError,
    DownloadError,
    WeightSpec,
    WeightsUnavailableError,
    download_file,
    weight_path,
)

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
REPO = Path(__file__).resolve().parents[2]


class _Server:
    """State shared with the handler: what to serve and how to misbehave; what was requested."""

    def __init__(self) -> None:
        self.payload = PAYLOAD
        self.drop_after: int | None = None  # close the connection after this many body bytes (once)
        self.ignore_range = False
        self.ranges: list[str | None] = []
        self.bytes_sent = 0
        self.port = 0

    def url(self, name: str = "model.pth") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(state: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path.endswith("/missing.pth"):
                self.send_error(404)
                return
            header = self.headers.get("Range")
            state.ranges.append(header)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(state.payload):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(state.payload)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = state.payload[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.drop_after is not None:
                body, state.drop_after = body[: state.drop_after], None
                self.close_connection = True
            # counted before the write: the client may finish before this line runs
            state.bytes_sent += len(body)
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server():
    state = _Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own weights dir and TORCH_HOME; nothing touches the user's caches."""
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights._VERIFIED.clear()
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spec(url: str, sha256: str | None = None, **kw) -> WeightSpec:
    return WeightSpec("test-model", "test-model.pth", url, sha256, None, "test", "a test file", **kw)


# ------------------------------------------------------------------------------------------ download_file
def test_full_download_with_progress(server, tmp_path, capsys):
    dest = download_file(server.url(), tmp_path / "dl" / "model.pth", sha256=PAYLOAD_SHA, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "model.pth.part").exists()
    assert server.ranges == [None]
    err = capsys.readouterr().err
    assert "model.pth" in err and "%" in err  # the tqdm bar was drawn


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "model.pth"
    server.drop_after = len(PAYLOAD) // 2
    with pytest.raises(DownloadError, match=f"{len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)
    part = tmp_path / "model.pth.part"
    assert not dest.exists() and part.stat().st_size == len(PAYLOAD) // 2
    download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == PAYLOAD_SHA
    assert server.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert server.bytes_sent == len(PAYLOAD)  # the second request sent only the missing half
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "model.pth.part").write_bytes(b"\0" * 1000)  # wrong bytes: appending would corrupt
    dest = download_file(server.url(), tmp_path / "model.pth", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]


def test_complete_part_file_416_restarts(server, tmp_path):
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD + b"extra")
    dest = download_file(server.url(), tmp_path / "model.pth", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    with pytest.raises(ChecksumMismatchError, match=f"sha256 {PAYLOAD_SHA}, expected 0+"):
        download_file(server.url(), tmp_path / "model.pth", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_download_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url("missing.pth"), tmp_path / "model.pth", progress=False)
    assert not (tmp_path / "model.pth").exists()


def test_file_url_download_and_restart(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    (tmp_path / "out.bin.part").write_bytes(b"junk")  # file:// ignores Range: must restart, not append
    dest = download_file(source.as_uri(), tmp_path / "out.bin", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


# -------------------------------------------------------------------------------------------- weight_path
def test_offline_error_names_file_folder_and_url():
    url = f"http://127.0.0.1:{_closed_port()}/GPEN-BFR-512.pth"
    spec = dataclasses.replace(REGISTRY["GPEN-BFR-512"], url=url)
    expected = weights.weights_dir() / "GPEN-BFR-512.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        weight_path(spec, progress=False)
    message = str(info.value)
    assert "'GPEN-BFR-512'" in message and url in message and "cannot connect" in message
    assert f"save it as {expected}" in message and f"folder {expected.parent}" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_without_download_says_where(server):
    with pytest.raises(WeightsUnavailableError, match="downloading is disabled") as info:
        weight_path(_spec(server.url()), download=False)
    assert str(weights.weights_dir() / "test-model.pth") in str(info.value)
    assert server.ranges == []


def test_unknown_checksum_recorded_then_enforced(server):
    path = weight_path(_spec(server.url()), progress=False)
    assert path == weights.weights_dir() / "test-model.pth" and path.read_bytes() == PAYLOAD
    record = json.loads((path.parent / weights.CHECKSUMS_FILENAME).read_text())
    assert record["test-model.pth"] == {"sha256": PAYLOAD_SHA, "size": len(PAYLOAD), "url": server.url()}
    assert weight_path(_spec(server.url()), progress=False) == path  # verified against the record
    path.write_bytes(PAYLOAD[:-1] + b"x")  # corrupted later
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        weight_path(_spec(server.url()), progress=False)
    assert len(server.ranges) == 1


def test_known_checksum_and_prefix_are_checked(server):
    with pytest.raises(ChecksumMismatchError):
        weight_path(_spec(server.url(), sha256="f" * 64), progress=False)
    assert not (weights.weights_dir() / "test-model.pth").exists()
    with pytest.raises(ChecksumMismatchError, match="deadbeef"):
        weight_path(_spec(server.url(), sha256_prefix="deadbeef"), progress=False)
    assert weight_path(_spec(server.url(), sha256_prefix=PAYLOAD_SHA[:8]), progress=False).is_file()


def test_torch_hub_location(server, isolated_dirs):
    import torch.hub

    assert weights._default_torch_hub_dir() == Path(torch.hub.get_dir())  # the torch-free rule agrees
    spec = _spec(server.url(), location="torch_hub")
    path = weight_path(spec, progress=False)
    assert path == isolated_dirs / "torch" / "hub" / "checkpoints" / "test-model.pth"
    assert weights.destination(REGISTRY["lpips-alexnet"]).parent == path.parent


def test_bundled_retinaface_verified():
    path = weight_path("retinaface-mobilenet0.25", download=False)
    assert path.parent == REPO / "gpen_fewshot" / "assets" / "weights"
    assert weights.is_available("retinaface-mobilenet0.25")
    assert weights.verify("retinaface-mobilenet0.25") == REGISTRY["retinaface-mobilenet0.25"].sha256


def test_registry_matches_contract():
    gpen = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
    for name in ("GPEN-BFR-512", "GPEN-BFR-512-D", "GPEN-BFR-256", "GPEN-BFR-256-D", "RetinaFace-R50",
                 "ParseNet-latest", "model_ir_se50"):
        assert REGISTRY[name].url == f"{gpen}{name}.pth" and REGISTRY[name].filename == f"{name}.pth"
    assert REGISTRY["GPEN-BFR-256-D"].kind == "discriminator" and REGISTRY["GPEN-BFR-256"].kind == "generator"
    assert REGISTRY["lpips-alexnet"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert REGISTRY["fid-inception"].filename == "pt_inception-2015-12-05-6726825d.pth"
    assert {s.location for s in REGISTRY.values()} == {"weights_dir", "torch_hub", "bundled"}
    with pytest.raises(KeyError, match="known: GPEN-BFR-512"):
        weights.get_spec("GPEN-BFR-1024")


def test_weights_dir_default_in_checkout(monkeypatch):
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR)
    assert weights.weights_dir() == REPO / "data" / "weights"


# ------------------------------------------------------------------------------------------------- script
def _script():
    """The CLI module (``scripts/download_weights.py`` is a wrapper of it)."""
    return importlib.import_module("gpen_fewshot.cli.weights")


def test_script_list(capsys):
    assert _script().main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "GPEN-BFR-512-D" in out and "retinaface-mobilenet0.25" in out and "present" in out


def test_script_download_verify_and_failures(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(REGISTRY, "test-model", _spec(server.url()))
    offline = dataclasses.replace(REGISTRY["GPEN-BFR-256"], url=f"http://127.0.0.1:{_closed_port()}/x.pth")
    monkeypatch.setitem(REGISTRY, "GPEN-BFR-256", offline)
    script = _script()
    code = script.main(["test-model", "GPEN-BFR-256", "nope", "--dir", str(tmp_path / "d"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "d" / "test-model.pth").read_bytes() == PAYLOAD
    failures = captured.err.strip().splitlines()
    assert len(failures) == 2 and "Traceback" not in captured.err
    assert failures[0].startswith("FAILED nope: unknown name")
    assert failures[1].startswith("FAILED GPEN-BFR-256: weights 'GPEN-BFR-256' unavailable")
    assert script.main(["--verify", "--dir", str(tmp_path / "d")]) == 0
    assert f"sha256 {PAYLOAD_SHA}" in capsys.readouterr().out
