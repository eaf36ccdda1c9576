"""The command line end to end, through typer's CliRunner, on real files in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genome_index.cli import app
from genome_index.io.fasta import read_genome
from tests.helpers import EXAMPLES, copy_store, one_line_error, write_fasta

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_with_input(data: bytes, *args: str):
    return runner.invoke(app, [str(a) for a in args], input=data, catch_exceptions=False)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("genome-index ")


@pytest.mark.slow
def test_embed_writes_one_row_per_chunk(tmp_path: Path, example_genomes) -> None:
    out = tmp_path / "emb.parquet"
    result = run("embed", *example_genomes[:2], "--model", "nt-tiny", "--layer", "2", "--out", out)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["file", "genome", "record", "start", "end", "n_tokens", "embedding"]
    rows = table.to_pylist()
    assert {r["genome"] for r in rows} == {p.name.removesuffix(".fna.gz") for p in example_genomes[:2]}
    assert all(len(r["embedding"]) == 128 and 1 < r["n_tokens"] <= 1000 for r in rows)
    assert "layer 2" in result.stderr
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(out).metadata.items() if k.startswith(b"genome_index.")}
    assert meta["genome_index.model"] == "nt-tiny" and meta["genome_index.layer"] == "2"
    assert meta["genome_index.model_revision"].startswith("sha256:") and meta["genome_index.chunk_tokens"] == "1000"
    assert {"genome_index.chunking", "genome_index.pooling", "genome_index.tool_version"} <= set(meta)


@pytest.mark.slow
def test_a_dash_reads_fasta_from_stdin(tmp_path: Path, example_genomes, nt_tiny_store: Path) -> None:
    import gzip
    import json

    text = gzip.decompress(example_genomes[1].read_bytes())[:30_000]  # a contig's worth: quick to embed
    fragment = tmp_path / "fragment.fa"
    fragment.write_bytes(text)
    piped = run_with_input(text, "query", "-", "-k", "2", "-i", nt_tiny_store, "-f", "json", "--no-align")
    named = run("query", fragment, "-k", "2", "-i", nt_tiny_store, "-f", "json", "--no-align")
    assert piped.exit_code == 0, piped.output
    hits, expected = json.loads(piped.stdout), json.loads(named.stdout)
    assert [(h["name"], h["score"]) for h in hits] == [(h["name"], h["score"]) for h in expected]
    assert hits[0]["query"] == "stdin"
    out = tmp_path / "stdin.parquet"
    assert run_with_input(text, "embed", "-", "-o", out, "-m", "kmer:4").exit_code == 0
    assert set(pq.read_table(out).column("genome").to_pylist()) == {"stdin"}


def test_reads_query_as_fastq_gzip_file_or_stdin(tmp_path: Path, example_genomes, nt_tiny_store: Path) -> None:
    """Reads of one stored genome, as a gzipped FASTQ file and piped: the same hits, the source first."""
    import gzip
    import json

    import numpy as np

    genome = read_genome(example_genomes[1])
    sequence, rng = genome.records[0].sequence, np.random.default_rng(3)
    starts = rng.integers(0, len(sequence) - 150, 40)
    reads = b"".join(b"@r%d\n%s\n+\n%s\n" % (i, sequence[s : s + 150], b"F" * 150) for i, s in enumerate(starts))
    path = tmp_path / "reads.fq.gz"
    path.write_bytes(gzip.compress(reads))
    args = ["-k", "2", "-i", nt_tiny_store, "-f", "json"]
    named = run("query", path, *args)
    piped = run_with_input(gzip.compress(reads), "query", "-", *args)
    assert named.exit_code == piped.exit_code == 0, named.output
    hits = json.loads(named.stdout)
    assert hits[0]["name"] == genome.name and hits[0]["identity"] == 1.0
    assert [(h["name"], h["score"]) for h in json.loads(piped.stdout)] == [(h["name"], h["score"]) for h in hits]


@pytest.mark.parametrize("command", ["embed", "build"])
def test_one_default_model_and_one_line_on_how_to_choose_offline(tmp_path: Path, monkeypatch, command: str) -> None:
    """Every command defaults to the same model; offline, a plain command says how to choose."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 100)])
    where = ["--out", tmp_path / "e.parquet"] if command == "embed" else ["--index", tmp_path / "index"]
    one_line_error(run(command, fasta, *where), "nucleotide-transformer-2.5b-multi-species", "--model nt-tiny")
    assert not (tmp_path / "index").exists()


@pytest.mark.slow
def test_embed_quiet_prints_nothing(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 100)])
    result = run("embed", fasta, "--model", "nt-tiny", "--out", tmp_path / "e.parquet", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"not fasta\n", "not FASTA"), (b"", "empty file"), (b">p\nMKTAYIAKQRQISFVKSHFSRQ\n", "protein")],
)
def test_embed_bad_input_one_line_and_no_output(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.fa"
    bad.write_bytes(content)
    out = tmp_path / "e.parquet"
    one_line_error(run("embed", bad, "--model", "nt-tiny", "--out", out), fragment, "bad.fa")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("chunking", ["anchored", "fixed"])
def test_embed_windows_follow_the_chunking(tmp_path: Path, example_genomes, chunking: str) -> None:
    out = tmp_path / "emb.parquet"
    result = run("embed", example_genomes[0], "--model", "kmer:6", "--chunking", chunking, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    starts = sorted(r["start"] for r in rows if r["record"] == rows[0]["record"])
    on_grid = all(s % 6000 == 0 for s in starts)
    assert on_grid == (chunking == "fixed") and len(starts) > 2


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--chunking", "tiles"], "unknown chunking 'tiles'"),
        (["--overlap", "10"], "--overlap applies to fixed windows"),
        (["--sketch-scaled", "0"], "--sketch-scaled must be at least 1"),
    ],
)
def test_build_refuses_bad_window_and_sketch_options(tmp_path: Path, example_genomes, options, fragment) -> None:
    index = tmp_path / "index"
    one_line_error(run("build", example_genomes[0], "--index", index, "--model", "kmer:6", *options), fragment)
    assert not index.exists()


def test_build_window_and_sketch_options_are_stored(tmp_path: Path, example_genomes) -> None:
    index = tmp_path / "index"
    result = run("build", example_genomes[0], "--index", index, "--model", "kmer:6", "--chunking", "fixed",
                 "--sketch-scaled", "200", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = sql_rows(index, "SELECT key, value FROM settings WHERE key IN ('chunking', 'sketch_scaled') ORDER BY key")
    assert rows == [{"key": "chunking", "value": "fixed"}, {"key": "sketch_scaled", "value": "200"}]
    one_line_error(run("build", example_genomes[1], "--index", index, "--chunking", "anchored"), "built with chunking")


def test_embed_bad_layer(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 10)])
    one_line_error(
        run("embed", fasta, "--model", "nt-tiny", "--out", tmp_path / "e.parquet", "--layer", "9"), "layer 9"
    )


# -- build / query / sql / info / remove / reindex ----------------------------------------


@pytest.fixture
def store(nt_tiny_store: Path, tmp_path: Path) -> Path:
    return copy_store(nt_tiny_store, tmp_path)


def test_build_a_folder_and_say_what_was_added(tmp_path: Path, example_genomes) -> None:
    result = run("build", example_genomes[0].parent, "--model", "kmer:6", "--index", tmp_path / "index")
    assert result.exit_code == 0, result.output
    assert f"added {len(example_genomes)} genome(s)" in result.stderr
    again = run("build", example_genomes[0].parent, "--index", tmp_path / "index")
    assert f"nothing new to add to {tmp_path / 'index'}; {len(example_genomes)} already stored" in again.stderr


def sql_rows(store: Path, statement: str) -> list[dict]:
    import json

    result = run("sql", statement, "--index", store, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_rebuild_adds_nothing(store: Path, example_genomes) -> None:
    result = run("build", *example_genomes, "--index", store)
    assert result.exit_code == 0, result.output
    assert "nothing new" in result.stderr and f"{len(example_genomes)} already stored" in result.stderr


def test_duplicate_under_another_name(store: Path, example_genomes, tmp_path: Path) -> None:
    from genome_index.io.fasta import read_genome

    genome = read_genome(example_genomes[0])
    copy = write_fasta(tmp_path / "renamed.fa", [(f"NZ_{r.id}", r.sequence.decode()) for r in genome.records])
    result = run("build", copy, "--index", store)
    assert result.exit_code == 0, result.output
    assert f"same sequence as stored genome '{genome.name}'" in result.stderr
    assert sql_rows(store, "SELECT count(*) AS n FROM genomes") == [{"n": len(example_genomes)}]


def test_real_genbank_refseq_pair_is_one_genome(tmp_path: Path, staph_dir: Path) -> None:
    gca = staph_dir / "GCA_900620245.1_BPH2947_genomic.fna.gz"
    gcf = staph_dir / "GCF_900620245.1_BPH2947_genomic.fna.gz"
    from genome_index.io.fasta import read_genome

    assert read_genome(gca).sha256 == read_genome(gcf).sha256
    assert read_genome(gca).records[0].id != read_genome(gcf).records[0].id


HIT_COLUMNS = [
    "query", "rank", "tied", "genome_id", "name", "file", "score", "centred_score", "mode", "support",
    "containment", "query_hashes", "ani_estimate", "ani_low", "ani_high", "identity", "aligned_bp",
    "query_coverage", "match", "explained_bp", "reference_coverage", "relation", "target_record",
    "target_start", "target_end", "strand", "ranked_by",
]  # fmt: skip
TABLE = {
    "--align": ["rank", "name", "identity", "query_coverage", "target_record", "target_start", "target_end", "strand"],
    "--no-align": ["rank", "name", "score", "support", "containment", "ani_estimate"],
}


@pytest.mark.parametrize(("mode", "align"), [("genome", "--no-align"), ("chunks", "--align")])  # each value once
@pytest.mark.slow
def test_query_formats_carry_the_same_columns_in_every_mode(store: Path, mode: str, align: str) -> None:
    import csv
    import io
    import json

    ask = ["query", EXAMPLES / "query.fa", "-k", "2", "--index", store, "--mode", mode, align]  # 20 kb of DSM20231
    table = run(*ask)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == TABLE[align]
    ranks = [line.split()[0] for line in table.stdout.splitlines()[2:]]
    assert ranks == (["1", "2="] if align == "--align" else ["1", "2"])  # 3 align nowhere: tied
    rows = json.loads(run(*ask, "--format", "json").stdout)
    assert [list(row) for row in rows] == [[*HIT_COLUMNS, "alignments"]] * 2
    assert rows[0]["name"] == "DSM20231" and isinstance(rows[0]["rank"], int) and isinstance(rows[0]["score"], float)
    assert (rows[0]["support"] is None) == (mode == "genome")
    assert (rows[0]["identity"] == 1.0 and rows[0]["query_coverage"] == 1.0) == (align == "--align")
    assert rows[0]["ranked_by"] == ("explained_bp" if align == "--align" else "containment, centred_score")
    tsv = run(*ask, "--format", "tsv").stdout.splitlines()
    assert tsv[0].split("\t") == HIT_COLUMNS and tsv[1].split("\t")[4] == "DSM20231"
    parsed = list(csv.DictReader(io.StringIO(run(*ask[:2], "--index", store, "--mode", mode, "-f", "csv").stdout)))
    assert len(parsed) == 4 and list(parsed[0]) == HIT_COLUMNS


@pytest.mark.slow
def test_query_chunks_mode_per_record(store: Path, example_genomes) -> None:
    import json

    result = run(
        "query",
        example_genomes[0],
        "--mode",
        "chunks",
        "--per-record",
        "-k",
        "1",
        "--index",
        store,
        "-f",
        "json",
    )
    rows = json.loads(result.stdout)
    assert {"query", "rank", "genome_id", "name", "file", "score", "support", "containment", "ani_estimate"} <= set(
        rows[0]
    )
    assert len(rows) == 2 and all(r["name"] == "ATCC12600" for r in rows)


@pytest.mark.slow
def test_labels_are_stored_queryable_and_shown(store: Path, example_genomes, tmp_path: Path) -> None:
    import json

    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,species,host\n" + "".join(f"{p.name},S. aureus,host{i}\n" for i, p in enumerate(example_genomes))
    )
    result = run("build", *example_genomes, "--index", store, "--labels", labels)
    assert result.exit_code == 0, result.output
    assert f"labels set on {len(example_genomes)}" in result.stderr
    rows = sql_rows(store, "SELECT value AS host, count(*) AS n FROM labels WHERE key = 'host' GROUP BY 1 ORDER BY 1")
    assert [r["host"] for r in rows] == [f"host{i}" for i in range(len(example_genomes))]
    record = read_genome(example_genomes[2]).records[0]  # 10 kb of it: quick, and found by its chunks
    fragment = write_fasta(tmp_path / "fragment.fa", [(record.id, record.sequence[:10_000].decode())])
    hits = json.loads(run("query", fragment, "-k", "1", "--index", store, "-f", "json").stdout)
    assert hits[0]["name"] == "BPH2947" and hits[0]["species"] == "S. aureus" and hits[0]["host"] == "host2"


def test_labels_naming_unknown_genomes_are_refused(store: Path, example_genomes, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("name,species\nno-such-genome,x\n")
    one_line_error(run("build", *example_genomes, "--index", store, "--labels", labels), "no-such-genome")


@pytest.mark.slow
def test_sql_is_read_only(store: Path) -> None:
    before = sql_rows(store, "SELECT count(*) AS n FROM chunks")
    for statement in (
        "DELETE FROM chunks",
        "DROP TABLE genomes",
        "CREATE TABLE x (a INT)",
        "INSERT INTO settings VALUES ('a', 'b')",
    ):
        one_line_error(run("sql", statement, "--index", store), "read-only")
    assert sql_rows(store, "SELECT count(*) AS n FROM chunks") == before


@pytest.mark.slow
def test_sql_cannot_touch_other_files(store: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    one_line_error(run("sql", f"SELECT * FROM read_csv('{secret}')", "--index", store))
    one_line_error(run("sql", f"COPY chunks TO '{tmp_path / 'out.csv'}'", "--index", store))
    one_line_error(run("sql", f"ATTACH '{tmp_path / 'x.duckdb'}' AS x", "--index", store))
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "x.duckdb").exists()


def test_sql_answers_questions_per_genome_and_per_record(store: Path) -> None:
    per_genome = sql_rows(
        store,
        "SELECT g.name, count(*) AS chunks FROM chunks c JOIN genomes g ON g.id = c.genome_id "
        "GROUP BY g.name ORDER BY g.name",
    )
    assert [r["name"] for r in per_genome] == ["ATCC12600", "BPH2003", "BPH2947", "DSM20231"]
    gc = sql_rows(store, "SELECT r.name, round(r.gc, 3) AS gc FROM records r ORDER BY r.id")
    assert all(0.2 < r["gc"] < 0.5 for r in gc)


def test_info(store: Path) -> None:
    result = run("info", "--index", store, "--format", "json")
    import json

    rows = {r["key"]: r["value"] for r in json.loads(result.stdout)}
    assert rows["count.genomes"] == 4 and rows["setting.dim"] == "128" and rows["setting.index_type"] == "flat"
    assert re.fullmatch(r"\d+\.\d (KiB|MiB)", rows["disk.metadata.duckdb"]), rows["disk.metadata.duckdb"]
    raw = {r["key"]: r["value"] for r in json.loads(run("info", "--index", store, "-f", "json", "--bytes").stdout)}
    assert raw["disk.total"] == sum(v for k, v in raw.items() if k.startswith("disk.") and k != "disk.total") > 0
    table = run("info", "--index", store).stdout
    assert "MiB" in table and max(len(line) for line in table.splitlines()) <= 120


@pytest.mark.slow
def test_remove_by_name_and_id(store: Path) -> None:
    result = run("remove", "BPH2003", "1", "--index", store)
    assert result.exit_code == 0, result.output
    assert "removed genome 1 ATCC12600" in result.stderr
    names = [r["name"] for r in sql_rows(store, "SELECT name FROM genomes ORDER BY id")]
    assert names == ["BPH2947", "DSM20231"]
    assert sql_rows(store, "SELECT count(*) AS n FROM chunks WHERE genome_id IN (1, 2)") == [{"n": 0}]
    import json

    hits = json.loads(run("query", EXAMPLES / "query.fa", "--index", store, "-f", "json").stdout)
    assert {h["name"] for h in hits} == {"BPH2947", "DSM20231"}
    one_line_error(run("remove", "no-such", "--index", store), "no-such")


@pytest.mark.slow
def test_reindex_after_deleting_the_faiss_file(store: Path) -> None:
    (store / "chunks.faiss").unlink()
    (store / "genomes.faiss").unlink()
    result = run("reindex", "--index", store)
    assert result.exit_code == 0, result.output
    assert (store / "chunks.faiss").exists() and (store / "genomes.faiss").exists()
    import json

    hits = json.loads(run("query", EXAMPLES / "query.fa", "-k", "1", "--index", store, "-f", "json").stdout)
    assert hits[0]["name"] == "DSM20231"


@pytest.mark.slow
def test_query_repairs_a_missing_faiss_file_with_a_notice(store: Path) -> None:
    (store / "chunks.faiss").unlink()  # the index a fragment-sized query uses
    result = run("query", EXAMPLES / "query.fa", "-k", "1", "--index", store)
    assert result.exit_code == 0, result.output
    assert "rebuilt from the stored vectors" in result.stderr


def test_query_without_store(tmp_path: Path, example_genomes) -> None:
    one_line_error(run("query", example_genomes[0], "--index", tmp_path / "nothing"), "no genome-index store")


def test_build_settings_mismatch(store: Path, example_genomes) -> None:
    one_line_error(run("build", example_genomes[0], "--index", store, "--layer", "1"), "built with layer")


@pytest.mark.slow
def test_config_file_and_env(tmp_path: Path, example_genomes, monkeypatch) -> None:
    import shutil

    work = tmp_path / "work"
    (work / "genomes").mkdir(parents=True)
    shutil.copy(example_genomes[0], work / "genomes")
    (work / "genome-index.toml").write_text('inputs = ["genomes"]\nmodel = "nt-tiny"\nlayer = 2\ndevice = "cpu"\n')
    monkeypatch.chdir(work)
    monkeypatch.setenv("GENOME_INDEX", str(tmp_path / "from-env"))
    result = run("build")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / "metadata.duckdb").exists()
    assert sql_rows(tmp_path / "from-env", "SELECT value FROM settings WHERE key = 'layer'") == [{"value": "2"}]
    result = run("build", "--index", tmp_path / "flagged", "--layer", "1")  # a flag beats the file
    assert result.exit_code == 0, result.output
    assert sql_rows(tmp_path / "flagged", "SELECT value FROM settings WHERE key = 'layer'") == [{"value": "1"}]
    (work / "genome-index.toml").write_text(f'index = "{tmp_path / "flagged"}"\n')  # every command's default
    assert run("sql", "SELECT count(*) AS n FROM genomes", "--format", "csv").stdout == "n\n1\n"
    (work / "genome-index.toml").write_text('modle = "x"\n')
    one_line_error(run("build"), "unknown option")


@pytest.mark.slow
def test_a_store_held_longer_than_readers_wait_is_one_line(store: Path, example_genomes, monkeypatch) -> None:
    """Readers wait for another process's hold on the store (a commit, a long query) only so long."""
    import subprocess
    import sys

    import genome_index.store

    monkeypatch.setattr(genome_index.store, "READER_WAIT", 1.0)

    holder = subprocess.Popen(  # another process holding the store for writing, as a build does
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(store / 'metadata.duckdb')!r}); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        one_line_error(run("query", example_genomes[0], "--index", store), "another process has held the store for 1 s")
    finally:
        holder.kill()
        holder.wait()


def test_second_build_fails_fast_naming_the_lock(store: Path, example_genomes) -> None:
    from genome_index.store.lock import write_lock

    with write_lock(store):
        one_line_error(run("build", example_genomes[0], "--index", store), "build.lock")


# -- instant start ------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "sourmash")
IMPORTS_AFTER = """
import sys
from genome_index.cli import main
sys.argv = ["genome-index", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(" ".join(m for m in {heavy!r} if m in sys.modules), file=sys.__stderr__)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["sql", "SELECT count(*) FROM genomes", "--index", "STORE"],
        ["info", "--index", "STORE"],
        ["remove", "g01", "--index", "STORE"],
        ["check", "--quick", "--index", "STORE"],
        ["query", "x.fa", "--format", "nope"],
        ["build", "--no-such-option"],
        ["query"],
    ],
    ids=["help", "sql", "info", "remove", "check --quick", "bad format", "unknown option", "missing argument"],
)
@pytest.mark.slow
def test_light_commands_never_import_torch_transformers_or_sourmash(store: Path, args: list[str]) -> None:
    import subprocess
    import sys

    args = [str(store) if a == "STORE" else a for a in args]
    script = IMPORTS_AFTER.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert done.stderr.splitlines()[-1] == "", done.stderr  # the names of the heavy modules imported
    if args[0] == "remove":
        assert "g01" not in run("sql", "SELECT name FROM genomes", "--index", store).stdout


# -- help, completion, output that fits ------------------------------------------------------

COMMANDS = ["embed", "build", "query", "sql", "info", "remove", "reindex", "merge", "compare", "evaluate", "check"]


def test_the_command_list_gives_one_line_each() -> None:
    listing = run("--help").stdout
    for name in [*COMMANDS, "completion"]:
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert not line.rstrip().endswith("...") and len(line) <= 100, line


@pytest.mark.parametrize("command", COMMANDS)
def test_each_help_page_has_examples_plain_metavars_and_one_default_style(command: str) -> None:
    page = run(command, "--help").stdout
    assert "Examples:" in page and f"genome-index {command}" in page.split("Examples:")[1]
    for tag in ("<bool>", "<int>", "<str>", "<path>", "<list", "{", "Nt-tiny", "Auto ("):
        assert tag not in page, (tag, page)
    assert "default: " not in page.replace("[default: ", "")  # every default said one way
    options = page.split("Options:")[1]
    assert "--help" in options and "-q, --quiet" in options if command not in ("sql", "info", "check") else True


def test_model_help_names_every_kind_of_model_and_k_has_a_long_form() -> None:
    page = " ".join(run("build", "--help").stdout.split()).replace("- ", "-")  # undo wrapping at hyphens
    for kind in ("nt-tiny", "kmer:K", "checkpoint folder", "Hugging Face Hub id"):
        assert kind in page
    assert "[default: InstaDeepAI/nucleotide-transformer-2.5b-multi-species]" in page
    assert "-k, --top N" in run("query", "--help").stdout


def test_completion_scripts_and_completion_itself(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    for shell in ("bash", "zsh", "fish"):
        script = run("completion", shell)
        assert script.exit_code == 0 and "_GENOME_INDEX_COMPLETE" in script.stdout
    one_line_error(run("completion", "tcsh"), "bash, zsh or fish")
    shown = run("--help").stdout
    assert "--install-completion" not in shown and "--show-completion" not in shown  # offered once: the command
    env = {**os.environ, "_GENOME_INDEX_COMPLETE": "complete_bash", "COMP_WORDS": "genome-index que", "COMP_CWORD": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", "from genome_index.cli import main; main()"], env=env, capture_output=True, text=True
    )
    assert "query" in completed.stdout.split(), completed


@pytest.fixture(scope="module")
def long_named_store(tmp_path_factory, example_genomes) -> Path:
    """A kmer:4 store whose genomes have NCBI-length names and many long labels."""
    import shutil

    folder = tmp_path_factory.mktemp("long-names")
    files = []
    for i, source in enumerate(example_genomes):
        files.append(folder / f"GCA_{900_000_000 + i:09d}.1_ASM{600_000 + i}v1_a_long_assembly_name_genomic.fna.gz")
        shutil.copy(source, files[-1])
    labels = folder / "labels.csv"
    columns = ["species", "host", "country", "st", "size", "note1", "note2", "note3"]
    labels.write_text(
        "file," + ",".join(columns) + "\n"
        + "".join(f"{f.name},Staphylococcus aureus,Homo sapiens,United Kingdom,{i:03d},{3_000_000 + i},"
                  f"{'a fairly long free-text note ' * 2},x,y\n" for i, f in enumerate(files))
    )  # fmt: skip
    index = folder / "index"
    assert run("build", folder, "-i", index, "-m", "kmer:4", "--labels", labels, "-q").exit_code == 0
    return index


@pytest.mark.slow
def test_the_table_fits_a_terminal_and_json_carries_everything(long_named_store: Path, example_genomes) -> None:
    import json

    ask = ["query", example_genomes[0], "-i", long_named_store, "-k", "4"]
    names = [f"GCA_{900_000_000 + i:09d}.1_ASM{600_000 + i}v1_a_long_assembly_name_genomic" for i in range(4)]
    wide = runner.invoke(app, [str(a) for a in ask], env={"COLUMNS": "200"}).stdout.splitlines()
    assert max(len(line) for line in wide) <= 200 and wide[0].split()[:8] == TABLE["--align"]
    assert {line.split()[1] for line in wide[2:]} <= set(names) and "…" not in "".join(wide)  # whole names
    narrow = runner.invoke(app, [str(a) for a in ask], env={"COLUMNS": "100"}).stdout.splitlines()
    assert 90 <= max(len(line) for line in narrow) <= 100
    assert "…" in narrow[2] and "/" not in "".join(narrow)  # names cut in the middle, no file paths
    rows = json.loads(run("query", example_genomes[0], "-i", long_named_store, "-f", "json").stdout)
    assert rows[0]["file"].endswith(".fna.gz") and rows[0]["species"] == "Staphylococcus aureus"
    assert isinstance(rows[0]["size"], int) and rows[0]["st"] in {"000", "001", "002", "003"}  # 007 stays text
    chosen = run("query", example_genomes[0], "-i", long_named_store, "-f", "tsv", "--columns", "name,file,st")
    assert chosen.stdout.splitlines()[0] == "name\tfile\tst"


def test_an_unknown_column_fails_before_the_model_loads(long_named_store: Path, example_genomes) -> None:
    one_line_error(run("query", example_genomes[0], "-i", long_named_store, "-c", "nmae"), "no column 'nmae'")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b">p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n", "protein"), (b"@read1\nACGT\n+\nIII\n", "number of quality values")],
)
@pytest.mark.slow
def test_a_bad_query_is_refused_before_the_model_loads(tmp_path: Path, example_genomes, content, message) -> None:
    """A protein file (or, once, any FASTQ) took 7.4 s to refuse, torch loaded first, even on a kmer:6 store;
    reads are queries now, and a bad read is refused as early."""
    import subprocess
    import sys

    index = tmp_path / "index"
    assert run("build", example_genomes[0], "-i", index, "-m", "kmer:4", "-q").exit_code == 0
    bad = tmp_path / "bad.fa"
    bad.write_bytes(content)
    code = (
        "import sys\nfrom genome_index.cli import main\ntry:\n    main()\nexcept SystemExit as exc:\n"
        "    print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', file=sys.stderr)\n"
        "    sys.exit(exc.code)\n"
    )
    command = [sys.executable, "-c", code, "query", str(bad), "-i", str(index)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and message in lines[0] and lines[0].startswith("genome-index: error:")
    assert lines[1:] == ["torch not loaded"]


def test_query_explain_says_where_the_time_went_on_stderr(store: Path) -> None:
    result = runner.invoke(app, ["query", str(EXAMPLES / "query.fa"), "-i", str(store), "-k", "2", "--explain"])
    assert result.exit_code == 0, result.output
    stages = [line.split()[0] for line in result.stderr.splitlines() if line.strip()][-4:]
    assert stages == ["embed", "candidates", "rerank", "verify"]
    assert "genome(s) passed on" in result.stderr and "candidates" not in result.stdout
    quiet = runner.invoke(app, ["query", str(EXAMPLES / "query.fa"), "-i", str(store), "-k", "2", "-q"])
    assert quiet.stdout == result.stdout and "candidates" not in quiet.stderr
