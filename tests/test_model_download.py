"""allow_download against a local stand-in for the Hugging Face hub: the file API huggingface_hub calls (HEAD/GET
/{repo}/resolve/{revision}/{file} with its X-Repo-Commit / ETag / X-Linked-Etag headers and Range requests, and the
/api/models/{repo}/revision and /tree listings a snapshot needs), including a connection dropped mid-file, a gated
repo, a file whose digest is wrong, and no hub at all."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers import run_snakemake, write_config
from huggingface_hub import constants

from deforum_steps import model_download, model_files, models
from deforum_steps.config import ConfigError, load_config
from deforum_steps.dependencies import MODEL_SETTINGS, pick
from deforum_steps.diffusion import denoise

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = load_config({}, REPO / "config" / "schema.yaml")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"
LFS_SUFFIXES = (".safetensors", ".ckpt")


class Hub(ThreadingHTTPServer):
    """repos: {repo id: {path: bytes}}; gated: repo ids that need `Authorization: Bearer TOKEN`; drop_once: paths
    whose first whole-file GET is cut off halfway; log: (method, path, Range header) of every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.gated: set[str] = set()
        self.drop_once: set[str] = set()
        self.lie_about: set[str] = set()  # paths served under another file's sha256
        self.log: list[tuple[str, str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of a file of that path."""
        return [r for method, p, r in self.log if method == "GET" and p.endswith("/" + path)]


class HubHandler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        self.serve(body=True)

    def serve(self, body: bool):
        hub = self.server
        path = self.path.split("?")[0]
        hub.log.append((self.command, path, self.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            return self.api(parts[2:])
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        if repo_id not in hub.repos or len(rest) < 3 or rest[0] != "resolve":
            return self.error(404, "RepoNotFound")
        if repo_id in hub.gated and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(401, "GatedRepo")
        name = "/".join(rest[2:])
        data = hub.repos[repo_id].get(name)
        if data is None:
            return self.error(404, "EntryNotFound")
        etag = file_etag(name, b"lie" if name in hub.lie_about else data)
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        if name.endswith(LFS_SUFFIXES):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        if name in hub.drop_once and not start:
            hub.drop_once.discard(name)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])

    def api(self, parts):
        """/api/models/{owner}/{name}/revision/{rev} and /api/models/{owner}/{name}/tree/{rev}."""
        repo_id = "/".join(parts[:2])
        files = self.server.repos.get(repo_id)
        if files is None:
            return self.error(404, "RepoNotFound")
        if parts[2] == "revision":
            payload = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
        else:
            payload = [{"type": "file", "path": f, "size": len(d), "oid": git_sha(d),
                        **({"lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 130}}
                           if f.endswith(LFS_SUFFIXES) else {})} for f, d in files.items()]
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status: int, code: str):
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_etag(name: str, data: bytes) -> str:
    """The hub's ETag: an LFS file's sha256, a git file's blob hash."""
    return hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else git_sha(data)


@pytest.fixture
def hub():
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> dict[str, bytes]:
    """builtin:tiny as the files of a diffusers repo on the hub, with files a load does not need."""
    folder = tmp_path_factory.mktemp("tiny_repo")
    models.save_pipeline(models.build_tiny(), folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["v1-tiny-pruned.safetensors"] = b"a single-file copy a diffusers load does not need"
    files["safety_checker/model.safetensors"] = b"not needed either"
    return files


# 22 MB: more than one of huggingface_hub's 10 MB download chunks, the unit a cut-off download resumes from
CHECKPOINT = b"checkpoint bytes " * 1_300_000


def fetch(model, hub, tmp_path, **kw):
    return model_download.fetch(model, str(tmp_path / "models"), tmp_path / "digests.json", endpoint=hub.url,
                                cache_dir=tmp_path / "hf", **kw)


def one_line(call, key="model"):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}:"), message
    return message


@pytest.fixture
def known(monkeypatch):
    """A known checkpoint name served by the test hub (the real table's files are gigabytes)."""
    entry = model_download.Known("deforum-test/checkpoints", "tiny-v1.safetensors",
                                 hashlib.sha256(CHECKPOINT).hexdigest())
    monkeypatch.setitem(model_download.KNOWN_CHECKPOINTS, entry.filename, entry)
    return entry


def test_known_checkpoint_is_downloaded_once_and_resumed(hub, known, tmp_path):
    hub.repos[known.repo] = {known.filename: CHECKPOINT}
    hub.drop_once.add(known.filename)
    path = Path(fetch(known.filename, hub, tmp_path))
    assert path.read_bytes() == CHECKPOINT
    assert path.is_relative_to(tmp_path / "hf" / "models--deforum-test--checkpoints" / "snapshots" / COMMIT)
    ranges = hub.gets(known.filename)
    assert ranges[0] is None and len(ranges) == 2  # cut off halfway, then resumed from the bytes received
    assert ranges[1] == f"bytes={constants.DOWNLOAD_CHUNK_SIZE}-", ranges  # the whole chunk that had arrived
    assert path.resolve().name == known.sha256  # the blob, named by the sha256 the hub gave
    # planning again: the cache only, no request at all, digest from the digest cache
    requests = len(hub.log)
    assert fetch(known.filename, hub, tmp_path) == str(path) and len(hub.log) == requests
    # a local copy (working directory or models_path) wins: nothing fetched
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / known.filename).write_bytes(b"mine")
    assert fetch(known.filename, hub, tmp_path) == known.filename and len(hub.log) == requests


def test_known_checkpoint_with_the_wrong_digest_is_removed(hub, known, tmp_path, monkeypatch):
    hub.repos[known.repo] = {known.filename: CHECKPOINT + b"tampered"}
    message = one_line(lambda: fetch(known.filename, hub, tmp_path))
    assert known.sha256 in message and "removed from the cache" in message
    assert not any(p.is_file() for p in (tmp_path / "hf").rglob("*.safetensors"))
    assert not list((tmp_path / "hf").rglob("blobs/*"))
    hub.repos[known.repo] = {known.filename: CHECKPOINT}  # fixed on the hub: the next run downloads it again
    assert Path(fetch(known.filename, hub, tmp_path)).read_bytes() == CHECKPOINT


def test_hub_id_snapshot_loads_like_the_model(hub, tiny_repo, tmp_path):
    hub.repos["deforum-test/tiny"] = tiny_repo
    hub.drop_once.add("unet/diffusion_pytorch_model.safetensors")
    folder = Path(fetch("deforum-test/tiny", hub, tmp_path))
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert "v1-tiny-pruned.safetensors" not in got and "safety_checker/model.safetensors" not in got
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"} <= set(got)
    assert len(hub.gets("unet/diffusion_pytorch_model.safetensors")) == 2  # cut off, fetched again (< one chunk)
    settings = {**pick(DEFAULTS, MODEL_SETTINGS), "model": str(folder)}
    args = dict(prompt="a cat", steps=2, cfg_scale=7, sampler="euler", seed=1, width=64, height=64)
    downloaded = denoise(models.load_pipeline(settings), None, **args)
    assert torch.equal(downloaded, denoise(models.build_tiny(), None, **args))
    # the same id again: the cached snapshot, no request
    requests = len(hub.log)
    assert fetch("deforum-test/tiny", hub, tmp_path) == str(folder) and len(hub.log) == requests


def test_a_file_that_is_not_what_the_hub_says_is_refused(hub, tiny_repo, tmp_path):
    hub.repos["deforum-test/tiny"] = tiny_repo
    hub.lie_about.add("vae/diffusion_pytorch_model.safetensors")
    message = one_line(lambda: fetch("deforum-test/tiny", hub, tmp_path))
    assert "diffusion_pytorch_model.safetensors" in message and "removed from the cache" in message


def test_gated_repo_needs_hf_token(hub, known, tmp_path, monkeypatch):
    hub.repos[known.repo] = {known.filename: CHECKPOINT}
    hub.gated.add(known.repo)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    message = one_line(lambda: fetch(known.filename, hub, tmp_path))
    assert "gated" in message and "HF_TOKEN" in message and f"hf download {known.repo} {known.filename}" in message
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert Path(fetch(known.filename, hub, tmp_path)).read_bytes() == CHECKPOINT


def test_missing_on_the_hub_and_no_hub(hub, tmp_path):
    message = one_line(lambda: fetch("nobody/nothing", hub, tmp_path))
    assert "hf download nobody/nothing" in message and hub.url in message
    with socket.socket() as s:  # a port nothing listens on: offline
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    message = one_line(lambda: model_download.fetch("nobody/nothing", "models", tmp_path / "d.json", endpoint=closed,
                                                    cache_dir=tmp_path / "hf"))
    assert "cannot download nobody/nothing" in message and "hf download nobody/nothing" in message


def test_without_allow_download_nothing_is_fetched(hub, known, tmp_path, monkeypatch):
    """allow_download off (the default): a missing known checkpoint says where it is published, a hub id how to
    fetch it; no request is made."""
    monkeypatch.chdir(tmp_path)
    message = one_line(lambda: model_files.check_model({**DEFAULTS, "model": "v1-5-pruned-emaonly.safetensors"}))
    assert model_download.KNOWN_CHECKPOINTS["v1-5-pruned-emaonly.safetensors"].url in message
    assert "allow_download: true" in message
    message = one_line(lambda: model_files.check_model({**DEFAULTS, "model": "nobody-here/no-such-model"}))
    assert "allow_download: true" in message and not hub.log


def test_download_when_the_workflow_loads(hub, tiny_repo, tmp_path, monkeypatch):
    """allow_download in a render: fetched while the Snakefile loads, before any job (a dry run plans with it),
    with HF_ENDPOINT and HF_HOME from the environment; the jobs load the cached folder (the test above)."""
    hub.repos["deforum-test/tiny"] = tiny_repo
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    write_config(tmp_path, model="deforum-test/tiny", allow_download=True, max_frames=1)
    run_snakemake(tmp_path, "-n", check=True)
    snapshot = tmp_path / "hf_home" / "hub" / "models--deforum-test--tiny" / "snapshots" / COMMIT
    assert (snapshot / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (tmp_path / "output").exists()
