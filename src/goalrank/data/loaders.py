"""Loaders: each raw log format becomes one interaction frame ``user, item, timestamp, label``.

Every loader returns a polars DataFrame with columns user:int64, item:int64, timestamp:int64 and
label:int8 (1 = positive feedback), rows in file order (the order breaks timestamp ties later).
Files are scanned lazily and only the four needed columns are materialised, so large logs stream.

Label rules (options of ``PrepareConfig``): explicit ratings (MovieLens, Amazon) are positive when
``rating >= min_positive_rating`` (default 4, the usual MovieLens convention); KuaiRand is positive
on ``long_view`` (the paper's industrial signal, §4.1.1: watching most of a video), or on
``is_click`` if asked; generic and simulator logs already carry a binary label.

Bad input raises DataError with one line naming the file, the column and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast

import polars as pl

from goalrank.errors import DataError
from goalrank.simulate.folder import SimulatorFolder

Source = Literal["movielens", "amazon", "kuairand", "generic", "simulator"]
KuaiRandLabel = Literal["long_view", "is_click"]
LOG_SCHEMA: dict[str, type[pl.DataType]] = {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "label": pl.Int8}
MOVIELENS_COLUMNS = ("UserID", "MovieID", "Rating", "Timestamp")
AMAZON_CSV_COLUMNS = ("user", "item", "rating", "timestamp")
AMAZON_JSON_COLUMNS = ("reviewerID", "asin", "overall", "unixReviewTime")
KUAIRAND_COLUMNS = ("user_id", "video_id", "time_ms")
GENERIC_COLUMNS = ("user", "item", "timestamp", "label")


def load_log(
    source: Source,
    path: Path | str,
    min_positive_rating: float = 4.0,
    kuairand_positive: KuaiRandLabel = "long_view",
) -> pl.DataFrame:
    """Load the log of ``source`` at ``path`` (a file; a folder for ``simulator``)."""
    path = Path(path)
    loaders: dict[str, Callable[[], pl.DataFrame]] = {
        "movielens": lambda: load_movielens(path, min_positive_rating),
        "amazon": lambda: load_amazon(path, min_positive_rating),
        "kuairand": lambda: load_kuairand(path, kuairand_positive),
        "generic": lambda: load_generic(path),
        "simulator": lambda: load_simulator(path),
    }
    if source not in loaders:
        raise DataError(f"source {source!r}: expected one of {sorted(loaders)}")
    return loaders[source]()


def source_files(source: Source, path: Path | str) -> list[Path]:
    """The files a log is read from, for the manifest's checksums."""
    path = Path(path)
    return [simulator_log(path)] if source == "simulator" else [path]


def simulator_log(folder: Path) -> Path:
    """``<folder>/interactions.parquet``, the log `goalrank simulate` writes in the generic format."""
    return SimulatorFolder(Path(folder)).interactions


def load_movielens(path: Path, min_positive_rating: float = 4.0) -> pl.DataFrame:
    """MovieLens: ML-1M ``ratings.dat`` (``::``), ML-100K ``u.data`` (tab) or ``ratings.csv`` (header).

    The form comes from the file name (``.dat``, ``.data``/``.tsv``, ``.csv``), or from the first
    line when the name says nothing.
    """
    line = _first_line(path)
    separator = _movielens_separator(path, line)
    if separator == ",":
        frame = _scan_csv(path, has_header=True)
        names = _match_columns(path, frame, MOVIELENS_COLUMNS, separator, line)
        frame = frame.select(pl.col(n).alias(c) for n, c in zip(names, MOVIELENS_COLUMNS, strict=True))
    else:
        # ``::`` is two one-byte separators: fields land in every other column of a ':' scan.
        step = 2 if separator == "::" else 1
        frame = _scan_csv(path, has_header=False, separator=separator[0])
        found = len(frame.collect_schema())
        if found != step * (len(MOVIELENS_COLUMNS) - 1) + 1:
            raise DataError(_separator_message(path, separator, MOVIELENS_COLUMNS, line))
        frame = frame.select(
            pl.nth(step * k).alias(name) for k, name in enumerate(MOVIELENS_COLUMNS)
        )
    typed = _cast(path, frame, {"UserID": pl.Int64, "MovieID": pl.Int64, "Rating": pl.Float64,
                                "Timestamp": pl.Int64})
    return _log(typed["UserID"], typed["MovieID"], typed["Timestamp"],
                typed["Rating"] >= min_positive_rating)


def load_amazon(path: Path, min_positive_rating: float = 4.0) -> pl.DataFrame:
    """Amazon reviews: CSV ``user,item,rating,timestamp`` (header optional) or JSON lines.

    JSON lines use the public review format (reviewerID, asin, overall, unixReviewTime). The
    string ids become dense integers in sorted order, so the encoding is deterministic.
    """
    line = _first_line(path)
    if line.lstrip().startswith("{"):
        try:
            frame = pl.scan_ndjson(path, infer_schema_length=1000)
            names = _match_columns(path, frame, AMAZON_JSON_COLUMNS, None, line)
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{path}: not valid JSON lines ({_first(exc)})") from exc
        frame = frame.select(pl.col(n).alias(c) for n, c in zip(names, AMAZON_CSV_COLUMNS, strict=True))
    else:
        has_header = _looks_like_header(line, rating_field=2)
        frame = _scan_csv(path, has_header=has_header)
        if has_header:
            names = _match_columns(path, frame, AMAZON_CSV_COLUMNS, ",", line)
            frame = frame.select(pl.col(n).alias(c) for n, c in zip(names, AMAZON_CSV_COLUMNS, strict=True))
        elif len(frame.collect_schema()) != len(AMAZON_CSV_COLUMNS):
            raise DataError(_separator_message(path, ",", AMAZON_CSV_COLUMNS, line))
        else:
            frame = frame.select(pl.nth(k).alias(c) for k, c in enumerate(AMAZON_CSV_COLUMNS))
    frame = frame.with_columns(pl.col("user", "item").cast(pl.String))
    typed = _cast(path, frame, {"user": pl.String, "item": pl.String, "rating": pl.Float64,
                                "timestamp": pl.Int64})
    users = typed["user"].rank("dense") - 1
    items = typed["item"].rank("dense") - 1
    return _log(users, items, typed["timestamp"], typed["rating"] >= min_positive_rating)


def load_kuairand(path: Path, positive: KuaiRandLabel = "long_view") -> pl.DataFrame:
    """KuaiRand CSV (user_id, video_id, time_ms, is_click, long_view); positive = ``positive``."""
    line = _first_line(path)
    frame = _scan_csv(path, has_header=True)
    wanted = (*KUAIRAND_COLUMNS, positive)
    names = _match_columns(path, frame, wanted, ",", line)
    frame = frame.select(pl.col(n).alias(c) for n, c in zip(names, wanted, strict=True))
    typed = _cast(path, frame, {"user_id": pl.Int64, "video_id": pl.Int64, "time_ms": pl.Int64,
                                positive: pl.Int8})
    _check_binary(path, typed, positive)
    return _log(typed["user_id"], typed["video_id"], typed["time_ms"], typed[positive])


def load_generic(path: Path) -> pl.DataFrame:
    """CSV (with header) or Parquet with integer columns user, item, timestamp and a 0/1 label."""
    if path.suffix.lower() == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        frame = pl.scan_parquet(path)
        line = ""
    else:
        line = _first_line(path)
        frame = _scan_csv(path, has_header=True)
    try:
        names = _match_columns(path, frame, GENERIC_COLUMNS, "," if line else None, line)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first(exc)})") from exc
    frame = frame.select(pl.col(n).alias(c) for n, c in zip(names, GENERIC_COLUMNS, strict=True))
    typed = _cast(path, frame, LOG_SCHEMA)
    _check_binary(path, typed, "label")
    return typed


def load_simulator(folder: Path) -> pl.DataFrame:
    """The log of a `goalrank simulate` folder (``interactions.parquet``, generic columns)."""
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: simulator folder not found (expected `goalrank simulate` output)")
    return load_generic(simulator_log(folder))


def _log(users: pl.Series, items: pl.Series, timestamps: pl.Series, labels: pl.Series) -> pl.DataFrame:
    columns = dict(zip(LOG_SCHEMA, (users, items, timestamps, labels), strict=True))
    return pl.DataFrame({name: series.cast(LOG_SCHEMA[name]) for name, series in columns.items()})


def _first_line(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as handle:
        line = handle.readline().rstrip("\r\n")
    if not line.strip():
        raise DataError(f"{path}: file is empty")
    return line


def _movielens_separator(path: Path, line: str) -> str:
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix == ".dat":
        return "::"
    if suffix in (".data", ".tsv") or name == "u.data":
        return "\t"
    if suffix == ".csv":
        return ","
    return "::" if "::" in line else "\t" if "\t" in line else ","


def _scan_csv(path: Path, has_header: bool, separator: str = ",") -> pl.LazyFrame:
    """Lazy CSV scan with every column as text; ``_cast`` types them so errors can name the column."""
    return pl.scan_csv(path, has_header=has_header, separator=separator, infer_schema=False)


def _match_columns(path: Path, frame: pl.LazyFrame, wanted: tuple[str, ...], separator: str | None,
                   line: str) -> list[str]:
    """Names in ``frame`` of the ``wanted`` columns, matched case-insensitively."""
    found = list(frame.collect_schema())
    if separator is not None and len(found) == 1 and len(wanted) > 1:
        raise DataError(_separator_message(path, separator, wanted, line))
    by_lower = {name.lower(): name for name in found}
    missing = [name for name in wanted if name.lower() not in by_lower]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {found}")
    return [by_lower[name.lower()] for name in wanted]


def _separator_message(path: Path, separator: str, wanted: tuple[str, ...], line: str) -> str:
    return (f"{path}: expected {len(wanted)} fields {separator.join(wanted)} separated by "
            f"{separator!r}; first line is {line[:80]!r} (wrong separator or format?)")


def _looks_like_header(line: str, rating_field: int) -> bool:
    fields = line.split(",")
    if len(fields) <= rating_field:
        return False
    try:
        float(fields[rating_field])
    except ValueError:
        return True
    return False


def _cast(path: Path, frame: pl.LazyFrame, dtypes: dict[str, type[pl.DataType]]) -> pl.DataFrame:
    """Collect ``frame`` with each column cast to its dtype; a value that cannot be cast is an error.

    Casting is lenient (unparsable → null) so the scan never aborts mid-file; any null left is
    then traced back to the raw value to name the column and row in the message.
    """
    casts = [pl.col(name).cast(dtype, strict=False) for name, dtype in dtypes.items()]
    try:
        typed = frame.select(casts).collect()
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot parse ({_first(exc)})") from exc
    if typed.height == 0:
        raise DataError(f"{path}: no rows")
    for name, dtype in dtypes.items():
        column = typed[name]
        bad = column.is_null()
        if dtype.is_float():
            bad = bad | column.is_nan()
        if bad.any():
            _raise_bad_value(path, frame, name, dtype, bad)
    return typed


def _raise_bad_value(path: Path, frame: pl.LazyFrame, name: str, dtype: type[pl.DataType],
                     bad: pl.Series) -> None:
    row = cast(int, bad.arg_max())  # the first bad row: the caller found one, so never None
    raw = frame.select(pl.col(name)).slice(row, 1).collect()[name][0]
    count = int(bad.sum())
    if raw is None or str(raw).strip().lower() in ("", "nan", "null", "none"):
        raise DataError(f"{path}: column {name!r} has {count} null/NaN value(s) (first at data row "
                        f"{row + 1}); expected a {_kind(dtype)} in every row")
    raise DataError(f"{path}: column {name!r} has non-numeric value {str(raw)[:40]!r} (data row "
                    f"{row + 1}); expected {_kind(dtype)}s")


def _kind(dtype: type[pl.DataType]) -> str:
    return "number" if dtype.is_float() else "integer" if dtype.is_integer() else "value"


def _check_binary(path: Path, typed: pl.DataFrame, name: str) -> None:
    column = typed[name]
    bad = ~column.is_in([0, 1])
    if bad.any():
        row = cast(int, bad.arg_max())  # the first bad row: never None once one is found
        raise DataError(f"{path}: column {name!r} has value {column[row]} (data row {row + 1}); "
                        f"expected a binary label 0 or 1")


def _first(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
