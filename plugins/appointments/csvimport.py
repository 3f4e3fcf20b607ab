"""Reading appointments from CSV: a header row, then one appointment per row.

::

    phone,name,starts_at,remind_before
    +61491570156,Sam Lee,2030-01-08T10:30:00+11:00,
    0491 570 157,Alex,2030-01-08T11:00:00+11:00,PT2H

Columns are matched by name, in any order and case: ``phone``, ``name`` and ``starts_at``
are required, ``remind_before`` is optional; any other column is an error (a typo in an
optional column must not be silently ignored). Blank lines are skipped. Each row is checked
on its own by the caller, so bad rows are reported and good rows kept.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["COLUMNS", "MAX_ROWS", "REQUIRED", "CsvError", "CsvRow", "read_rows"]

REQUIRED: Final = ("phone", "name", "starts_at")
COLUMNS: Final = (*REQUIRED, "remind_before")
MAX_ROWS: Final = 5000
"""The most rows one import takes."""


class CsvError(ValueError):
    """The file as a whole cannot be read (no header, unknown columns, too many rows)."""


@dataclass(frozen=True)
class CsvRow:
    """One data row: ``row`` is its line in the file (the header is row 1); ``error`` says
    why the row cannot be read at all (its values are then empty)."""

    row: int
    values: dict[str, str]
    error: str | None = None


def read_rows(text: str) -> list[CsvRow]:
    """The data rows of ``text``.

    Raises:
        CsvError: no header, a required column missing, an unknown or repeated column,
            more than :data:`MAX_ROWS` rows or malformed CSV.
    """
    rows = list(_rows(text))
    if len(rows) > MAX_ROWS:
        raise CsvError(f"at most {MAX_ROWS} rows per import, got {len(rows)}")
    return rows


def _rows(text: str) -> Iterator[CsvRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header: list[str] | None = None
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            if header is None:
                header = _header(fields)
                continue
            if len(fields) > len(header):
                extra = [f for f in fields[len(header) :] if f.strip()]
                if extra:
                    error = f"{len(fields)} columns, the header has {len(header)}"
                    yield CsvRow(reader.line_num, {}, error)
                    continue
            values = {
                name: (fields[i].strip() if i < len(fields) else "")
                for i, name in enumerate(header)
            }
            yield CsvRow(reader.line_num, values)
    except csv.Error as exc:
        raise CsvError(f"malformed CSV at line {reader.line_num}: {exc}") from None
    if header is None:
        raise CsvError(f"empty file: expected a header row {','.join(COLUMNS)}")


def _header(fields: list[str]) -> list[str]:
    names = [field.strip().lower().replace(" ", "_") for field in fields]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise CsvError(
            f"unknown column {unknown[0][:40]!r} in the header (columns: {', '.join(COLUMNS)})"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CsvError(f"column {repeated[0]!r} appears twice in the header")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise CsvError(
            f"the header lacks the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (columns: {', '.join(COLUMNS)})"
        )
    return names
