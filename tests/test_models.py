"""Model resolution: nt-tiny is a real Hub-format checkpoint; clear errors for everything else."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genome_index.embedding.backends import checkpoints as models
from genome_index.embedding.encoder import resolve_layer
from genome_index.errors import GenomeIndexError
from tests.helpers import ROOT

NT_TINY = models.BUNDLED["nt-tiny"]


def test_nt_tiny_is_a_hub_format_nt_v1_checkpoint() -> None:
    names = {p.name for p in NT_TINY.iterdir()}
    assert {"config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"} <= names
    config = json.loads((NT_TINY / "config.json").read_text())
    assert config["model_type"] == "esm"
    assert config["position_embedding_type"] == "absolute"
    assert config["token_dropout"] is True
    assert config["hidden_size"] <= 128 and 2 <= config["num_hidden_layers"] <= 4
    assert config["vocab_size"] == 4107
    assert sum(p.stat().st_size for p in NT_TINY.iterdir()) < 8 * 1024 * 1024


@pytest.mark.slow
def test_make_nt_tiny_reproduces_the_committed_weights(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_nt_tiny.py"), str(tmp_path)], check=True)
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (tmp_path, NT_TINY)]
    assert digest[0] == digest[1]
    assert (tmp_path / "vocab.txt").read_text() == (NT_TINY / "vocab.txt").read_text()


def test_describe_nt_tiny() -> None:
    spec = models.describe("nt-tiny")
    assert (spec.num_layers, spec.dim, spec.max_tokens) == (4, 128, 1000)
    assert spec.revision.startswith("sha256:")
    assert spec.source == "nt-tiny"


def test_local_folder_loads_through_the_same_code(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(NT_TINY, tmp_path / "my-model")
    spec = models.describe(str(tmp_path / "my-model"))
    assert spec.revision == models.describe("nt-tiny").revision


@pytest.mark.parametrize(("layer", "expected"), [(None, 4), (0, 0), (2, 2), (4, 4), (-1, 4), (-5, 0)])
def test_layer_resolution(layer: int | None, expected: int) -> None:
    assert resolve_layer(layer, 4) == expected


@pytest.mark.parametrize("layer", [5, -6])
def test_layer_out_of_range(layer: int) -> None:
    with pytest.raises(GenomeIndexError, match="does not exist"):
        resolve_layer(layer, 4)


def test_unreachable_hub_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    with pytest.raises(GenomeIndexError, match="--model nt-tiny or a local checkpoint"):
        models.describe("InstaDeepAI/nucleotide-transformer-2.5b-multi-species")


@pytest.mark.parametrize("name", ["./no-such-folder", "not a model", "a/b/c"])
def test_bad_model_names(name: str) -> None:
    with pytest.raises(GenomeIndexError, match="nt-tiny"):
        models.describe(name)


def test_remote_code_is_opt_in(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "custom-dna", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}})
    )
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(GenomeIndexError, match="--trust-remote-code"):
        models.describe(str(folder))


def test_the_weights_hash_is_cached_until_a_weight_file_changes(tmp_path: Path, monkeypatch) -> None:
    import json
    import shutil

    from genome_index.embedding.backends.checkpoints import BUNDLED, _weights_hash

    monkeypatch.setenv("GENOME_INDEX_CACHE", str(tmp_path / "cache"))
    folder = Path(shutil.copytree(BUNDLED["nt-tiny"], tmp_path / "model"))
    first = _weights_hash(folder)
    cache = tmp_path / "cache" / "weights-sha256.json"
    entry = json.loads(cache.read_text())[str(folder.resolve())]
    assert entry["sha256"] == first and [f[0] for f in entry["files"]] == ["model.safetensors"]
    cache.write_text(json.dumps({str(folder.resolve()): {**entry, "sha256": "sha256:from-the-cache"}}))
    assert _weights_hash(folder) == "sha256:from-the-cache"  # size and mtime unchanged: not read again
    with open(folder / "model.safetensors", "ab") as handle:
        handle.write(b"\0")
    changed = _weights_hash(folder)
    assert changed.startswith("sha256:") and changed not in (first, "sha256:from-the-cache")
    cache.write_text("not json")
    assert _weights_hash(folder) == changed  # a damaged cache is recomputed, never trusted
