"""The parts of the docs that are generated, so they cannot drift: each command's `--help` and the
package map with its line counts. Pages hold cog blocks that call these functions.

    python scripts/docs.py           # regenerate every cog block in README.md and docs/
    python scripts/docs.py --check   # exit 1 where a block is out of date (the tests run this)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "genome_index"
WIDTH = 100  # columns of the generated help, whatever terminal runs cog


def pages() -> list[Path]:
    """Every page that may hold a cog block."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def command_help(*words: str) -> str:
    """`genome-index WORDS --help` as a fenced text block, as a user at a 100-column terminal sees it."""
    from typer.testing import CliRunner

    from genome_index.cli import app

    result = CliRunner().invoke(
        app, [*words, "--help"], prog_name="genome-index", env={"GENOME_INDEX": None}, terminal_width=WIDTH
    )
    if result.exit_code != 0:
        raise RuntimeError(f"genome-index {' '.join(words)} --help failed: {result.output}")
    text = "\n".join(line.rstrip() for line in result.stdout.splitlines()).strip("\n")
    return f"```text\n$ genome-index {' '.join([*words, '--help'])}\n{text}\n```\n"


def _owns(init: Path) -> str:
    """What a package's docstring says it owns, in a few words: the head before its colon."""
    docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
    sentence = " ".join(docstring.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
    head = sentence.split(": ")[0]
    return head if len(head.split()) >= 3 else sentence


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def package_map() -> str:
    """A table of the packages, lowest layer first: what each owns, its modules and their lines."""
    rows = ["| package | owns | modules (lines) |", "| --- | --- | --- |"]
    top = [p for p in sorted(PACKAGE.glob("*.py")) if p.name != "__init__.py"]
    rows.append(
        "| `genome_index` | the top-level modules | " + ", ".join(f"`{p.stem}` ({_lines(p)})" for p in top) + " |"
    )
    for name in ("io", "embedding", "embedding/backends", "store", "search", "build", "analysis", "server", "cli"):
        folder = PACKAGE / name
        modules = [p for p in sorted(folder.glob("*.py")) if p.name != "__init__.py" or _lines(p) > 12]
        listed = ", ".join(f"`{p.stem}` ({_lines(p)})" for p in modules)
        owns = _owns(folder / "__init__.py").replace("|", "\\|")
        rows.append(f"| `{name.replace('/', '.')}` | {owns} | {listed} |")
    total = sum(_lines(p) for p in PACKAGE.rglob("*.py"))
    rows.append(f"| | **all** | {total:,} lines in {len(list(PACKAGE.rglob('*.py')))} files |")
    return "\n".join(rows) + "\n"


def sql_schema() -> str:
    """Every table of a store with its columns and their DuckDB types, read from an empty store's
    schema (vectors written `FLOAT[dim]`; `BLOB` in a float16 store)."""
    import duckdb

    from genome_index.store.schema import CHUNK_VECTORS_TABLE, SCHEMA, SEQUENCES, VECTOR_FILES, VECTOR_SUMS

    dim = 7  # a width no column has, written back as `dim`
    con = duckdb.connect()
    vector_type = f"FLOAT[{dim}]"
    both = f"{CHUNK_VECTORS_TABLE}{VECTOR_FILES}"  # the view's columns are the old table's
    con.execute(SCHEMA.format(dim=dim, vector_type=vector_type, sequences=SEQUENCES, vector_sums=VECTOR_SUMS,
                              chunk_vectors=both.format(vector_type=vector_type)))  # fmt: skip
    columns = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "ORDER BY table_name, ordinal_position"
    ).fetchall()
    order = [name for (name,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_oid").fetchall()]
    rows = ["| table | columns |", "| --- | --- |"]
    for table in order:
        listed = ", ".join(
            f"`{column}` {kind.replace(f'[{dim}]', '[dim]')}" for name, column, kind in columns if name == table
        )
        named = f"`{table}` (a view of the files in `vectors/`)" if table == "chunk_vectors" else f"`{table}`"
        rows.append(f"| {named} | {listed} |")
    return "\n".join(rows) + "\n"


def run_cog(check: bool) -> int:
    """Regenerate (or, with `check`, verify) the cog blocks of every page; cog's exit status."""
    from cogapp import Cog

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    files = [str(p) for p in pages() if "[[[cog" in p.read_text()]
    return Cog().main(["cog", "--check" if check else "-r", "-I", str(Path(__file__).parent), *files])


if __name__ == "__main__":
    sys.exit(run_cog(check="--check" in sys.argv[1:]))
