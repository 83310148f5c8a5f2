"""`ctq load`: a CSV file with a header row into a new table, read carefully or not at all.

Every common way a CSV file is misread is either handled and reported, or refused with one line
naming the file (and the line and column where it applies), exit code 2 and nothing written:

- Encoding: byte-order marks (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) are detected and removed; without
  one the file must be UTF-8 (a bad byte is refused with its line and offset and the hint to pass
  ``--encoding cp1252`` for Latin-1/Excel files) or in the ``--encoding`` given. UTF-16 without a BOM
  and NUL characters are refused.
- Delimiter: comma, semicolon, tab or pipe, detected from the lines themselves (the candidate that
  splits the header and the first records into the same number of fields, at least two); an Excel
  ``sep=;`` first line is honoured; ``--delimiter`` overrides. Two candidates that both fit, or a
  file read as one column whose header contains another candidate, are refused.
- Quoting: RFC 4180 (``"`` quotes, ``""`` inside), so quoted fields may hold delimiters and line
  breaks; a quote in the wrong place or a quoted field never closed is refused with its line.
- Rows: a record with more or fewer fields than the header is refused with its line; blank lines
  are skipped (and counted); a trailing delimiter on every line (an empty last column with no name)
  is dropped with a note.
- Header: names are trimmed of surrounding spaces; an empty, duplicated (also when differing only in
  case), or system-column name (``xmin``, ``ctid``...) is refused; a name longer than PostgreSQL's 63
  bytes (which PostgreSQL would silently cut) is shortened with a note saying the final name; names
  are kept exactly (quoted), and those that are not plain lower-case identifiers get a note. A first
  line made only of numbers is taken for a missing header and refused.
- Missing values: by default an empty field and NA, N/A, NULL, NaN, None (any case) are NULL in
  number and boolean columns; in text columns only an empty field is NULL and the other markers are
  kept as text with a note. ``--null X`` makes exactly ``X`` the marker everywhere, as ``COPY``.
- Types, inferred per column over the whole file: ``int8`` (ASCII integers; beyond int8 ``numeric``),
  ``float8`` (decimal point, exponent, inf), ``bool`` (true/false) and ``text`` otherwise. A column
  that is text although it holds numbers gets a note naming the first value (and line) that is not
  one: decimal commas, thousands separators, unknown missing-value markers. Integers with leading
  zeros (codes, zip codes) stay text, with a note.

The table is created and filled in one transaction: a failure leaves no table, and ``--replace``
drops the old table in that same transaction, so it is replaced only by a successful load.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg

from ctq.errors import DatabaseError, DataError, UsageError
from ctq.sql import quote_ident, render, template

MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer identifiers are cut with only a NOTICE
MAX_COLUMNS = 1600
# what to do with a file wider than one PostgreSQL row (1,600 columns, or one 8 kB heap page of
# values that cannot be moved out of line: at 8 bytes a float8, about 1,000)
TOO_WIDE = ("load fewer columns (e.g. `cut -d, -f1-1000`), or keep the values in one real[] array column "
            "and train on it as the single feature (nothing was written)")
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
DEFAULT_NULLS = frozenset({"", "na", "n/a", "null", "nan", "none"})
SYSTEM_COLUMNS = frozenset({"tableoid", "cmax", "xmax", "cmin", "xmin", "ctid"})  # PostgreSQL >= 12
SNIFF_RECORDS = 200

_BOMS = (  # UTF-32 LE first: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_INT = re.compile(r"[+-]?[0-9]+")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)
_COMMA_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)*")
_BOOL = {"true": True, "false": False}
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1


@dataclass
class Column:
    name: str
    type: str  # int8 | numeric | float8 | bool | text
    nulls: int = 0


@dataclass
class ParsedCsv:
    columns: list[Column]
    rows: list[tuple]
    encoding: str
    delimiter: str
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    table: str  # schema-qualified, as PostgreSQL placed it
    columns: list[Column]
    rows: int
    notes: list[str]

    def summary(self) -> str:
        cols = ", ".join(f"{c.name if _PLAIN_NAME.fullmatch(c.name) else quote_ident(c.name)} {c.type}"
                         + (f" ({c.nulls} NULL)" if c.nulls else "") for c in self.columns)
        return f"created {self.table}: {len(self.columns)} columns ({cols}), {self.rows} rows"


# --------------------------------------------------------------------------------------------
# Reading the file (pure Python)
# --------------------------------------------------------------------------------------------


def parse_delimiter(text: str | None) -> str | None:
    """``--delimiter``: one character; ``\\t`` and ``tab`` mean a tab."""
    if text is None:
        return None
    if text in ("\\t", "tab", "TAB"):
        return "\t"
    if len(text) != 1 or text in ('"', "\n", "\r"):
        raise UsageError(f"--delimiter must be one character other than a quote or a line break, got {text!r}")
    return text


def _clip(name: str, n: int = 40) -> str:
    return name if len(name) <= n else name[:n - 3] + "..."


def _show(ch: str) -> str:
    return {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}.get(ch, repr(ch))


def _decode(data: bytes, where: str, encoding: str | None) -> tuple[str, str, list[str]]:
    """Text, a description of the encoding, notes."""
    notes: list[str] = []
    wanted = None
    if encoding is not None:
        try:
            wanted = codecs.lookup(encoding).name
        except LookupError:
            raise UsageError(f"--encoding: unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from None
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            family = codec.split("-")[0] + "-" + codec.split("-")[1]  # utf-8, utf-16, utf-32
            if wanted is not None and not wanted.startswith(family):
                raise DataError(f"{where}: starts with a {label} byte-order mark, but --encoding {encoding} was given")
            body = data[len(bom):]
            try:
                text = body.decode(codec)
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not valid {label} after its byte-order mark "
                                f"(byte offset {exc.start + len(bom)})") from None
            notes.append(f"{where}: read as {label}; its byte-order mark was removed")
            return text, f"{label} with BOM", notes
    codec = wanted or "utf-8"
    sample = data[:4096]
    if wanted is None and sample.count(0) > len(sample) // 4:  # ASCII text in UTF-16: every other byte
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        guess = "utf-16-le" if odd > even else "utf-16-be"
        raise DataError(f"{where}: contains NUL bytes; it looks like {guess.upper()} without a byte-order mark "
                        f"(pass --encoding {guess} if so)")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        bad = data[exc.start:exc.start + 1].hex()
        hint = ("; if it is Latin-1 or Windows-1252 (e.g. saved by Excel), pass --encoding cp1252"
                if wanted is None else "")
        raise DataError(f"{where}:{line}: not valid {codec.upper() if wanted is None else encoding} "
                        f"(byte 0x{bad} at offset {exc.start}){hint}") from None
    if wanted is not None and wanted != "utf-8":
        notes.append(f"{where}: read as {encoding}")
    return text, (encoding if wanted else "UTF-8"), notes


def _reader(text: str, delimiter: str):
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                      strict=True)


def _sniff(text: str, where: str) -> str:
    """The candidate delimiter that splits the first records consistently into >= 2 fields."""
    fits: list[str] = []
    header_counts: dict[str, int] = {}
    for d in CANDIDATE_DELIMITERS:
        counts = set()
        try:
            for i, row in enumerate(_reader(text, d)):
                if i >= SNIFF_RECORDS:
                    break
                if row:
                    header_counts.setdefault(d, len(row))
                    counts.add(len(row))
        except csv.Error:
            continue
        if len(counts) == 1 and counts.pop() >= 2:
            fits.append(d)
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise DataError(f"{where}: cannot tell the delimiter: {' and '.join(_show(d) for d in fits)} both split "
                        "every line into the same number of fields; pass --delimiter")
    in_header = [d for d in CANDIDATE_DELIMITERS if header_counts.get(d, 1) >= 2]
    if len(in_header) == 1:
        return in_header[0]  # the rows disagree with the header: the full read names the line
    if len(in_header) > 1:
        raise DataError(f"{where}: cannot tell the delimiter: the header contains "
                        f"{' and '.join(_show(d) for d in in_header)} and neither splits the lines consistently; "
                        "pass --delimiter")
    return ","  # one column


def _header_names(raw: list[str], at: str, notes: list[str]) -> list[str]:
    if len(raw) > MAX_COLUMNS:
        raise DataError(f"{at}: {len(raw)} columns do not fit in one PostgreSQL row (at most {MAX_COLUMNS}); "
                        + TOO_WIDE)
    if all(_FLOAT.fullmatch(v.strip()) for v in raw if v.strip()) and any(v.strip() for v in raw):
        shown = ", ".join(raw[:4]) + (", ..." if len(raw) > 4 else "")
        raise DataError(f"{at}: the first line ({shown}) looks like data, not a header: "
                        "add a first line naming the columns")
    names: list[str] = []
    for i, h in enumerate(raw, start=1):
        name = h.strip()
        if name != h:
            notes.append(f"column {i} {h!r}: surrounding spaces removed, named {name!r}")
        if not name:
            raise DataError(f"{at}: column {i} has no name in the header")
        if len(name.encode()) > MAX_NAME_BYTES:
            short = name.encode()[:MAX_NAME_BYTES].decode("utf-8", "ignore")
            notes.append(f"column {i}: name is {len(name.encode())} bytes, PostgreSQL keeps at most {MAX_NAME_BYTES}; "
                         f"renamed to {short!r} (use this name in grid.yaml)")
            name = short
        if name.lower() in SYSTEM_COLUMNS:
            raise DataError(f"{at}: column {i} is named {name!r}, a PostgreSQL system column name: rename it")
        names.append(name)
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        key = name.casefold()
        if key in seen:
            j = seen[key]
            other = names[j - 1]
            if raw[j - 1].strip() != other or raw[i - 1].strip() != name:
                raise DataError(f"{at}: columns {j} and {i} both become {_clip(name)!r} when shortened to "
                                f"PostgreSQL's {MAX_NAME_BYTES} bytes: rename one")
            how = "the same name" if other == name else "names that differ only in case"
            raise DataError(f"{at}: columns {j} ({_clip(other)!r}) and {i} ({_clip(name)!r}) have {how}: rename one")
        seen[key] = i
    quoted = [n for n in names if not _PLAIN_NAME.fullmatch(n)]
    if quoted:
        shown = ", ".join(quoted[:5]) + (f" and {len(quoted) - 5} more" if len(quoted) > 5 else "")
        notes.append(f"column names kept exactly as written (write them so in grid.yaml; in SQL quote them, "
                     f"e.g. {quote_ident(quoted[0])}): {shown}")
    return names


def _infer(name: str, values: list[str], lines: list[int], nulls: frozenset[str] | None, notes: list[str],
           where: str):
    """(column type, converted values, NULL count) for one column over the whole file."""

    def is_marker(v: str) -> bool:
        return v.strip().lower() in DEFAULT_NULLS if nulls is None else v in nulls

    present = [(k, v.strip()) for k, v in enumerate(values) if not is_marker(v)]
    kind = None
    if present and all(v.lower() in _BOOL for _, v in present):
        kind = "bool"
    elif present and all(_INT.fullmatch(v) for _, v in present):
        zero = next(((k, v) for k, v in present if _LEADING_ZERO.fullmatch(v)), None)
        if zero is not None:
            notes.append(f"column {name!r}: kept as text because of leading zeros ({zero[1]!r} on line "
                         f"{lines[zero[0]]}): codes, not numbers?")
        else:
            big = any(not _INT8_MIN <= int(v) <= _INT8_MAX for _, v in present)
            kind = "numeric" if big else "int8"
    elif present and all(_FLOAT.fullmatch(v) for _, v in present):
        kind = "float8"
    if kind is None:  # text: only the --null marker (default: the empty field) is NULL
        text_null = (lambda v: v == "") if nulls is None else (lambda v: v in nulls)
        out = [None if text_null(v) else v for v in values]
        if nulls is None:
            kept = sorted({v for v in values if v != "" and is_marker(v)})
            if kept:
                notes.append(f"column {name!r} is text; its values {', '.join(map(repr, kept[:3]))} are kept as text "
                             f"(pass --null {kept[0]!r} to load them as NULL)")
        numbers = sum(1 for v in values if not is_marker(v) and _FLOAT.fullmatch(v.strip()))
        offender = next(((k, v) for k, v in enumerate(values)
                         if not is_marker(v) and not _FLOAT.fullmatch(v.strip())), None)
        comma = [(k, v) for k, v in enumerate(values) if not is_marker(v)]
        if any("," in v for _, v in comma) and all(_COMMA_NUMBER.fullmatch(v.strip()) for _, v in comma):
            k, v = next((k, v) for k, v in comma if "," in v)
            notes.append(f"column {name!r} is text: its values are numbers written with a comma ({v!r} on line "
                         f"{lines[k]}), a decimal comma or a thousands separator, which is not read as a number; "
                         f"convert it in SQL (e.g. replace(...)::float8) or in the file")
        elif numbers and offender is not None:
            notes.append(f"column {name!r} is text although {numbers} of its values are numbers: "
                         f"{offender[1]!r} on line {lines[offender[0]]} is not a number")
        return "text", out, sum(1 for v in out if v is None)
    convert = {"bool": lambda v: _BOOL[v.lower()], "int8": int, "numeric": Decimal, "float8": float}[kind]
    out = [None if is_marker(v) else convert(v.strip()) for v in values]
    if kind == "float8":
        for k, (x, v) in enumerate(zip(out, values)):
            if x is not None and math.isinf(x) and "inf" not in v.lower():
                raise DataError(f"{where}:{lines[k]}: column {name!r}: {v.strip()!r} is out of the range of float8")
    return kind, out, sum(1 for v in out if v is None)


def read_csv(path: str | Path, *, delimiter: str | None = None, null: str | None = None,
             encoding: str | None = None) -> ParsedCsv:
    """Read and check the whole file; raise DataError (exit 2) for anything it would misread."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{where}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
    text, enc, notes = _decode(data, where, encoding)
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DataError(f"{where}:{line}: contains a NUL character, which PostgreSQL text cannot hold")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    skip_first = False
    if re.fullmatch(r"sep=.", first_line):  # Excel's delimiter hint line
        sep = first_line[4]
        if delimiter is not None and delimiter != sep:
            raise DataError(f"{where}:1: the file says sep={sep} but --delimiter {_show(delimiter)} was given")
        delimiter, skip_first = sep, True
        text = text.split("\n", 1)[1] if "\n" in text else ""
        notes.append(f"{where}:1: Excel's 'sep={sep}' line read as the delimiter")
    if not text.strip():
        raise DataError(f"{where}: the file is empty")
    detected = delimiter is None
    if detected:
        delimiter = _sniff(text, where)
    offset = 1 if skip_first else 0
    reader = _reader(text, delimiter)
    records: list[list[str]] = []
    lines: list[int] = []
    blank = 0
    start = 1
    try:
        for row in reader:
            if not row:
                blank += 1
            else:
                records.append(row)
                lines.append(start + offset)
            start = reader.line_num + 1
    except csv.Error as exc:
        msg = str(exc)
        if "field larger than field limit" in msg:
            raise DataError(f"{where}:{start + offset}: a field longer than {csv.field_size_limit()} characters "
                            "(a quote opened and never closed?)") from None
        if "unexpected end of data" in msg:
            raise DataError(f"{where}:{start + offset}: a quoted field starting on this record is never closed") from None
        raise DataError(f"{where}:{start + offset}: bad quoting ({msg}); a field with a quote must be quoted "
                        'as a whole, with inner quotes doubled ("")') from None
    if not records:
        raise DataError(f"{where}: the file is empty")
    header, rows, row_lines = records[0], records[1:], lines[1:]
    if len(header) == 1:
        others = [d for d in CANDIDATE_DELIMITERS if d != delimiter and d in header[0]]
        if others:
            raise DataError(f"{where}:{lines[0]}: read as a single column {header[0][:40]!r}, but the header contains "
                            f"{_show(others[0])}: wrong delimiter? (pass --delimiter {others[0]!r})")
    n = len(header)
    if (n > 1 and header[-1].strip() == "" and rows
            and all(len(r) == n and r[-1] == "" for r in rows)):
        header, rows = header[:-1], [r[:-1] for r in rows]
        notes.append(f"{where}: every line ends with a delimiter; the empty last column was dropped")
        n -= 1
    for r, line in zip(rows, row_lines):
        if len(r) != n:
            raise DataError(f"{where}:{line}: expected {n} fields (as in the header), found {len(r)}")
    if not rows:
        raise DataError(f"{where}: no data rows after the header")
    if blank:
        notes.append(f"{where}: {blank} blank line(s) skipped")
    names = _header_names(header, f"{where}:{lines[0]}", notes)
    if detected and delimiter != ",":
        notes.insert(0, f"{where}: {_show(delimiter)}-separated")
    nulls = None if null is None else frozenset({null})
    columns, converted = [], []
    for i, name in enumerate(names):
        kind, values, n_null = _infer(name, [r[i] for r in rows], row_lines, nulls, notes, where)
        columns.append(Column(name, kind, n_null))
        converted.append(values)
    return ParsedCsv(columns=columns, rows=list(zip(*converted)), encoding=enc, delimiter=delimiter, notes=notes)


# --------------------------------------------------------------------------------------------
# Writing the table (one transaction)
# --------------------------------------------------------------------------------------------


def parse_table(table: str) -> tuple[str | None, str]:
    """``--table``: ``table`` or ``schema.table``, exact names (quotes allowed), as grid.yaml's data.table."""
    from ctq.config import parse_table_name

    try:
        schema, name = parse_table_name(table)
    except ValueError as exc:
        raise UsageError(f"--table {table!r}: {exc}") from None
    for part in (schema, name):
        if part is not None and len(part.encode()) > MAX_NAME_BYTES:
            raise UsageError(f"--table: {part!r} is longer than PostgreSQL's {MAX_NAME_BYTES} bytes")
    return schema, name


async def write_table(conn: asyncpg.Connection, parsed: ParsedCsv, table: str, *, replace: bool = False,
                      source: str = "the file") -> LoadResult:
    """Create ``table`` for ``parsed`` and copy its rows in, in one transaction (nothing on failure)."""
    schema, name = parse_table(table)
    target = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
    columns = ", ".join(f"{quote_ident(c.name)} {c.type}" for c in parsed.columns)
    try:
        async with conn.transaction():
            if replace:
                await conn.execute(render("load_drop.sql", table=target))
            await conn.execute(render("load_create.sql", table=target, columns=columns))
            await conn.copy_records_to_table(name, records=parsed.rows, schema_name=schema,
                                             columns=[c.name for c in parsed.columns])
            where = await conn.fetchval(template("load_where.sql"), target)
    except asyncpg.exceptions.DuplicateTableError:
        raise DataError(f"table {table} already exists (use --replace to overwrite it)") from None
    except asyncpg.exceptions.InvalidSchemaNameError:
        if schema is None:
            raise DataError(f"--table {table}: no schema on the search_path to create it in; "
                            "give schema.table") from None
        raise DataError(f"--table {table}: schema {schema!r} does not exist") from None
    except asyncpg.exceptions.DependentObjectsStillExistError as exc:
        raise DataError(f"--replace: table {table} cannot be dropped: {exc.detail or exc}") from None
    except asyncpg.exceptions.WrongObjectTypeError as exc:
        raise DataError(f"--table {table}: {exc}") from None
    except asyncpg.exceptions.ProgramLimitExceededError as exc:  # 54000 row too big, 54011 > 1,600 columns
        raise DataError(f"{source}: {len(parsed.columns)} columns do not fit in one PostgreSQL row "
                        f"({exc.message}); " + TOO_WIDE) from None
    except asyncpg.PostgresError as exc:
        raise DatabaseError(f"{source}: PostgreSQL refused the load (nothing was written): "
                            f"{type(exc).__name__}: {exc}") from None
    return LoadResult(table=where, columns=parsed.columns, rows=len(parsed.rows), notes=parsed.notes)


if __name__ == "__main__":  # python -m ctq.loader FILE: what would be loaded, no database
    p = read_csv(sys.argv[1])
    print(p.encoding, _show(p.delimiter), [(c.name, c.type, c.nulls) for c in p.columns], len(p.rows))
    print("\n".join(p.notes))
