"""Results as a Parquet data set, for large runs: ``evaluate_folder(..., out="results.parquet")``.

``results.parquet`` is a folder (as Spark and Dask write them; ``pyarrow.parquet.read_table``,
pandas, Polars and DuckDB read it as one table) of parts ``part-00000.parquet``, ... of
:data:`ROWS` records each (one row group), written while the run goes on, each complete
before it is renamed into place. The records not yet in a part are journaled, flushed one by
one, in ``_pending.jsonl``, a JSON-lines results file with the run's header (readers skip
names that start with ``_``): a killed run loses nothing, and a resumed one goes on from the
parts and the journal. The header is also in every part's key-value metadata
(``xai_widgets.header``), so a part alone still says how it was made.

Columns: ``image``, ``method`` (null for an unreadable image), ``error`` (null unless the
record is an error), ``target`` (null for errors) and ``record``: the whole record as the JSON
of a JSON-lines file, from which :func:`~xai_widgets.metrics.summarize` reads the same
records, so a summary of a Parquet run is that of the same run in JSON lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import MetricError

PENDING = "_pending.jsonl"
ROWS = 1024
KEY = b"xai_widgets.header"
INSTALL = 'pip install "xai-widgets[parquet]" (pyarrow)'


def is_parquet(path: Path) -> bool:
    """Is ``path`` a Parquet output (by its suffix)?"""
    return path.suffix.lower() == ".parquet"


def require() -> Any:
    """``pyarrow.parquet``, or a :class:`MetricError` that says what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MetricError(f"Parquet results need pyarrow: {INSTALL}") from exc
    return pq


def parts(directory: Path) -> list[Path]:
    """The parts of a Parquet results folder, in the order they were written."""
    return sorted(directory.glob("part-*.parquet"))


def read_part(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header (from the metadata) and the records of one part (or any Parquet file
    written by this module)."""
    pq = require()
    try:
        table = pq.read_table(path, columns=["record"])
        header = json.loads((table.schema.metadata or {})[KEY])
    except (OSError, KeyError, ValueError) as exc:
        raise MetricError(f"{str(path)!r} is not a Parquet part of evaluate_folder's results "
                          f"({type(exc).__name__}: {exc})") from exc
    return header, [json.loads(text) for text in table.column("record").to_pylist()]


def write_part(directory: Path, number: int, header: dict[str, Any],
               records: list[dict[str, Any]]) -> Path:
    """Write ``records`` as ``part-<number>.parquet`` (one row group), complete before it
    takes its name."""
    pq = require()
    import pyarrow as pa

    columns: dict[str, list[Any]] = {"image": [str(r["image"]) for r in records],
               "method": [r.get("method") for r in records],
               "error": [r.get("error") for r in records],
               "target": [r.get("target") for r in records],
               "record": [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in records]}
    schema = pa.schema([("image", pa.string()), ("method", pa.string()),
                        ("error", pa.string()), ("target", pa.int64()),
                        ("record", pa.string())],
                       metadata={KEY: json.dumps(header)})
    table = pa.table({k: _encodable(v) for k, v in columns.items()}, schema=schema)
    path = directory / f"part-{number:05d}.parquet"
    temporary = directory / f".{path.name}.{os.getpid()}.tmp"
    pq.write_table(table, temporary, row_group_size=len(records))
    os.replace(temporary, path)
    return path


def _encodable(values: list[Any]) -> list[Any]:
    """Strings with lone surrogates (file names that are not UTF-8) as their JSON escapes,
    as the JSON-lines file writes them."""
    return [v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
            for v in values]


class Parts:
    """The parts of a Parquet results folder being written. The caller journals each record
    in ``_pending.jsonl`` and :meth:`add` s it here; every :data:`ROWS` records (and at
    :meth:`flush`) become a part, and the journal is cut back to its header."""

    def __init__(self, directory: Path, header: dict[str, Any],
                 pending: list[dict[str, Any]]) -> None:
        self.directory, self.header = directory, header
        self.pending = list(pending)
        self.count = len(parts(directory))

    def add(self, record: dict[str, Any]) -> None:
        self.pending.append(record)
        if len(self.pending) >= ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the records not yet in a part as the next part."""
        if not self.pending:
            return
        write_part(self.directory, self.count, self.header, self.pending)
        self.count += 1
        self.pending.clear()
        with (self.directory / PENDING).open("r+b") as stream:
            stream.truncate(len(stream.readline()))
