"""`data fetch --variant`: each of the leaderboard's exports fetched from a local HTTP server laid out like the
real host (`/datasets/<owner>/<repo>/resolve/main/...`, answered by a redirect to the file, as the Hub does);
and the CaseOps byte sidecar in the harness's byte count, against the documents' own bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from agentgolf.baseline.data_check import check_dataset
from agentgolf.baseline.dataset import load_dataset
from agentgolf.baseline.fetch import FetchError, fetch_official
from agentgolf.baseline.shards import BOS_ID, read_shard, write_shard
from agentgolf.baseline.variants import ENDPOINT_ENV, VAL_BYTES_PATTERN, VARIANTS, Variant
from agentgolf.sandbox.scoring.bpb import ByteTable, ByteTableError, load_byte_sidecar, stream_bytes

PUBLISHED_TRAIN = 3


class Hub:
    """Files under root/<owner>/<repo>/..., served at /datasets/<owner>/<repo>/resolve/main/... via a 302."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        hub = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root / "files"), **kwargs)

            def do_GET(self):  # noqa: N802
                hub.requests.append(self.path)
                parts = self.path.split("/")
                if self.path.startswith("/datasets/") and parts[4:6] == ["resolve", "main"]:
                    self.send_response(302)
                    self.send_header("Location", "/" + "/".join([*parts[2:4], *parts[6:]]))
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def export(self, v: Variant, tokenizer: Path, *, manifest: bool, val_shards: int = 2) -> Path:
        """An export of `v` in its repository: shards of 20 docs, its tokenizer, the CaseOps sidecar."""
        root = self.root / "files" / v.repo / "datasets"
        ds = root / "datasets" / v.dataset
        rng = np.random.default_rng(len(v.name))
        names = [f"fineweb_val_{i:06d}.bin" for i in range(val_shards)]
        names += [f"fineweb_train_{i:06d}.bin" for i in range(PUBLISHED_TRAIN)]
        for name in names:
            tokens = rng.integers(8, 256, size=2000).astype(np.uint16)
            tokens[::100] = BOS_ID
            write_shard(ds / name, tokens)
            if v.byte_sidecar and name.startswith("fineweb_val_"):
                counts = np.where(tokens == BOS_ID, 0, rng.integers(1, 6, size=tokens.size)).astype(np.uint16)
                write_shard(ds / VAL_BYTES_PATTERN.format(int(name[-10:-4])), counts)
        (root / v.tokenizer_model).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tokenizer, root / v.tokenizer_model)
        if manifest:
            entry = {
                "name": v.dataset,
                "tokenizer_name": "tok",
                "stats": {"files_train": PUBLISHED_TRAIN, "files_val": val_shards},
            }
            tok = {"name": "tok", "model_path": v.tokenizer_model}
            (root / "manifest.json").write_text(json.dumps({"datasets": [entry], "tokenizers": [tok]}))
        return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    h = Hub(tmp_path / "hub")
    monkeypatch.setenv(ENDPOINT_ENV, h.url)
    yield h
    h.server.shutdown()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_is_fetched_from_its_repository(hub, tmp_path, tiny_dataset, name):
    v = VARIANTS[name]
    src = hub.export(v, tiny_dataset.tokenizer, manifest=name != "sp4096")
    dest = tmp_path / "data"
    info = fetch_official(dest, name, train_shards=2)
    assert info.dataset_dir == dest / "datasets" / v.dataset and info.tokenizer == dest / v.tokenizer_model
    assert len(info.train_files) == 2 and len(info.val_files) == (2 if name != "sp4096" else 1)
    for path in [*info.train_files, *info.val_files, info.tokenizer]:
        assert path.read_bytes() == (src / path.relative_to(dest)).read_bytes()
    assert all(
        r.startswith(f"/datasets/{v.repo}/resolve/main/datasets/") for r in hub.requests if "resolve" in r
    )
    assert any(r.endswith(v.tokenizer_model) for r in hub.requests)
    m = json.loads((info.dataset_dir / "manifest.json").read_text())
    assert m["variant"] == name and m["source"] == v.base_url()
    assert m["published_train_shards"] == (PUBLISHED_TRAIN if name != "sp4096" else v.train_shards)
    sidecars = sorted(info.dataset_dir.glob("fineweb_val_bytes_*.bin"))
    if v.byte_sidecar:
        assert (
            [p.name for p in sidecars]
            == m["val_bytes"]
            == ["fineweb_val_bytes_000000.bin", "fineweb_val_bytes_000001.bin"]
        )
        assert read_shard(sidecars[0]).size == read_shard(info.val_files[0]).size
    else:
        assert sidecars == [] and "val_bytes" not in m
    assert load_dataset(info.dataset_dir) == info
    # what was fetched passes the data check's shard and tokenizer findings (the counts are a toy's)
    report = check_dataset(info.dataset_dir)
    assert report.variant == name
    assert [f.level for f in report.findings if f.check in ("shards", "tokenizer", "bos")] == ["ok"] * 3
    assert any(f.check == "val" and f.level == "fail" for f in report.findings)  # 40 docs, not 50,000


def test_variant_errors(hub, tmp_path, tiny_dataset):
    v = VARIANTS["caseops-sp8192"]
    src = hub.export(v, tiny_dataset.tokenizer, manifest=True)
    with pytest.raises(FetchError, match="caseops-sp8192 has only 3 train shards"):
        fetch_official(tmp_path / "a", v.name, train_shards=4)
    sidecar = src / "datasets" / v.dataset / VAL_BYTES_PATTERN.format(1)
    write_shard(sidecar, np.ones(5, dtype=np.uint16))
    with pytest.raises(FetchError, match="5 byte counts for 2000 validation tokens"):
        fetch_official(tmp_path / "b", v.name, train_shards=1)
    sidecar.unlink()
    with pytest.raises(FetchError, match=r"fineweb_val_bytes_000001.bin: HTTP 404 \(not found\)"):
        fetch_official(tmp_path / "c", v.name, train_shards=1)
    with pytest.raises(FetchError, match="unsupported variant 'byte260'; expected one of sp1024, sp4096"):
        fetch_official(tmp_path / "d", "byte260")
    with pytest.raises(FetchError, match=r"kevclark/parameter-golf/.*fineweb_val_000000.bin: HTTP 404"):
        fetch_official(tmp_path / "e", "sp8192")  # nothing in that repository on this hub
    assert not list((tmp_path / "b").rglob("*.tmp"))


def test_cli_fetch_variant(hub, tmp_path, tiny_dataset):
    hub.export(VARIANTS["sp8192"], tiny_dataset.tokenizer, manifest=True)
    cmd = [
        sys.executable,
        "-m",
        "agentgolf.agent.cli.main",
        "data",
        "fetch",
        "--variant",
        "sp8192",
        "--train-shards",
        "3",
    ]
    env = {**os.environ, ENDPOINT_ENV: hub.url, "COLUMNS": "200"}
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "d")], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "fineweb10B_sp8192: 3 train shard(s), 2 val shard(s)" in proc.stdout


def test_byte_sidecar_against_an_independent_count(tmp_path, tiny_dataset):
    """The sidecar's count of the val stream is the documents' own UTF-8 length, whatever the tokens are."""
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset.tokenizer))
    texts = [f"Doc {i}: Café — naïve façade, 日本語 {'and more ' * i}ÉTÉ." for i in range(1, 30)]
    stream, counts = [], []
    for text in texts:
        ids = sp.encode(text.lower())  # a transform, as CaseOps lowercases: the table would count other bytes
        q, r = divmod(len(text.encode("utf-8")), len(ids))  # the doc's bytes spread over its tokens
        stream += [BOS_ID, *ids]
        counts += [0, *([q + 1] * r), *([q] * (len(ids) - r))]
    stream, counts = np.array(stream, np.uint16), np.array(counts, np.uint16)
    cut = stream.size // 2 + 3  # a document runs across the two val shards
    ds = tmp_path / "ds"
    for i, (a, b) in enumerate(((0, cut), (cut, stream.size))):
        write_shard(ds / f"fineweb_val_{i:06d}.bin", stream[a:b])
        write_shard(ds / VAL_BYTES_PATTERN.format(i), counts[a:b])
    val_files = sorted(ds.glob("fineweb_val_[0-9]*.bin"))

    sidecar = load_byte_sidecar(val_files)
    table = ByteTable.from_model(tiny_dataset.tokenizer, 256)
    independent = sum(len(t.encode("utf-8")) for t in texts)
    assert stream_bytes(table, stream, sidecar) == independent
    windows = sum(
        stream_bytes(table, stream, sidecar, a, min(a + 37, stream.size - 1))
        for a in range(0, stream.size - 1, 37)
    )
    assert windows == independent  # scored window by window, each target once
    assert stream_bytes(table, stream, None) != independent  # the table counts the lowercased pieces
    assert load_byte_sidecar([tiny_dataset.val_files[0]]) is None  # data without a sidecar: the table

    write_shard(ds / VAL_BYTES_PATTERN.format(1), counts[cut:-1])
    with pytest.raises(
        ByteTableError, match=f"{counts.size - cut - 1} byte counts for {stream.size - cut} tokens"
    ):
        load_byte_sidecar(val_files)
    (ds / VAL_BYTES_PATTERN.format(1)).unlink()
    with pytest.raises(ByteTableError, match="fineweb_val_bytes_000001.bin is missing"):
        load_byte_sidecar(val_files)
