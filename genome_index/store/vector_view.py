"""The `chunk_vectors` view of a store whose chunk vectors lie in files beside it (`vector_files.py`).

Every connection, the SQL worker's included, registers the files its snapshot lists in
`vector_files` as one Arrow dataset named `chunk_vectors`: DuckDB opens no file itself, so a
connection keeps file access off. Only pyarrow here: the SQL worker, which imports neither
numpy nor this package, loads this module beside itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = "vectors"


def vector_schema(dim: int, vector_dtype: str) -> Any:
    """The files' columns, typed as the old `chunk_vectors` table was: FLOAT[dim], or float16 bytes."""
    import pyarrow as pa

    vector = pa.binary() if vector_dtype == "float16" else pa.list_(pa.float32(), dim)
    return pa.schema([("chunk_id", pa.int64()), ("vector", vector)])


def dataset(folder: Path, files: list[tuple[str, int]], schema: Any) -> Any:
    """The files of `folder` named in `files` (name, bytes) as one Arrow dataset; one missing or
    of another size is left out (`check` names it): its chunks have no vector."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    paths = [str(folder / name) for name, size in files if _size(folder / name) == size]
    return ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.ParquetFileFormat(), filesystem=pafs.LocalFileSystem()
    )


def register(con: Any, store_directory: Path) -> None:
    """`chunk_vectors` on `con` (a connection to the store in `store_directory` that lists its
    vector files): the files of its snapshot."""
    settings = dict(con.execute("SELECT key, value FROM settings WHERE key IN ('dim', 'vector_dtype')").fetchall())
    files = con.execute("SELECT name, bytes FROM vector_files ORDER BY first_chunk").fetchall()
    schema = vector_schema(int(settings["dim"]), settings.get("vector_dtype", "float32"))
    con.register("chunk_vectors", dataset(Path(store_directory) / FOLDER, files, schema))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None
