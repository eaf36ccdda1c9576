"""Helpers the tests share: paths, writing FASTA, copying a store, one-line errors, a free port."""

from __future__ import annotations

import gzip
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STAPH = ROOT.parent / "shared" / "data" / "staph"


def copy_store(built: Path, tmp_path: Path) -> Path:
    """A private copy of a store built once per module, for a test that changes it."""
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def write_fasta(path: Path, records: list[tuple[str, str]], gz: bool = False, eol: str = "\n") -> Path:
    """Write records as FASTA (optionally gzip, optionally CRLF) and return the path."""
    text = "".join(f">{header}{eol}{sequence}{eol}" for header, sequence in records)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def one_line_error(result, *fragments: str) -> None:
    """A CliRunner result that failed with exit 1 and one `genome-index: error:` line holding each fragment."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genome-index: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
