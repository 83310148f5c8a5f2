"""`ctq load`: a CSV file with a header row into a new table, read carefully or not at all, as a stream.

Every common way a CSV file is misread is either handled and reported, or refused with one line
naming the file (and the line and column where it applies), exit code 2 and nothing written:

- Encoding: byte-order marks (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) are detected and removed; without
  one the file must be UTF-8 (a bad byte is refused with its line and offset and the hint to pass
  ``--encoding cp1252`` for Latin-1/Excel files) or in the ``--encoding`` given. UTF-16 without a BOM
  and NUL characters are refused. ``.gz``, ``.bz2`` and ``.xz`` files (and ``.zst`` with the
  ``zstandard`` package) are read compressed, as they are.
- Delimiter: comma, semicolon, tab or pipe, detected from the file's first lines (the candidate that
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
- Types, inferred per column over every row of the file: ``int8`` (ASCII integers; beyond int8
  ``numeric``), ``float8`` (decimal point, exponent, inf), ``bool`` (true/false, t/f, yes/no) and ``text``
  otherwise. A value at the file's last line that does not fit the type of the lines before widens
  the type (int8 to float8, anything to text). A column that is text although it holds numbers gets
  a note naming the first value (and line) that is not one: decimal commas, thousands separators,
  unknown missing-value markers. Integers with leading zeros (codes, zip codes) stay text, with a note.

How it loads, in memory bounded by a few batches of ``BATCH_VALUES`` fields whatever the file's
size (the first batch suggests the types to try):

- A file of numbers (every byte after the header a digit, ``. + - e E``, the delimiter or a line
  break) goes to the server's own ``COPY ... (FORMAT csv)`` as it is, as ``psql \\copy`` would send
  it, while its bytes are checked here (:class:`_NumberBytes`): the server's int8/float8 input then
  checks every value, and anything either side would read otherwise sends the load to the next way.
- Otherwise the file is parsed here with Python's C ``csv`` reader a batch at a time, every value
  typed, while the same bytes (or, when ``COPY`` would read them otherwise, the values rewritten to
  ``COPY``'s text format, markers as ``\\N``) stream into a table of the types of the first batch.
  When the whole file confirms those types, that is the load; otherwise the table is created again
  with the types of the whole file and the file is read a second time.

A library could sniff and infer for us (pyarrow's streaming CSV reader, DuckDB's ``read_csv``), but
both infer the types from a first block, not the whole file, neither reports the line of a bad
record the way the refusals above do, and neither would make the loading faster than ``COPY``.

The table is created and filled in one transaction: a failure or Ctrl-C leaves no table, and
``--replace`` drops the old table in that same transaction, so it is replaced only by a successful load;
the privileges granted on it and its comment carry over to the new one (as for ``ctq predict --replace``:
a reload took a shared reader's SELECT away, a user trial), its indexes and the like do not.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import asyncpg

from ctq.catalog import current_role
from ctq.connection import unless_lost
from ctq.errors import DatabaseError, DataError, UsageError, from_database, is_missing_privilege, permission_denied
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
CHUNK_BYTES = 1 << 20  # read from the file at a time
HEAD_BYTES = 4 << 20  # the delimiter, the header and the trailing-delimiter rule are read from these
BATCH_VALUES = 200_000  # fields parsed, checked and sent at a time: the loader's memory is a few batches

_BOMS = (  # UTF-32 LE first: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_INT = re.compile(r"[+-]?[0-9]+")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]+")
_LEADING_ZERO_IN = re.compile(r"(?:^|\x00)\s*([+-]?0[0-9]+)\s*(?=\x00|$)")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)
_COMMA_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)*")
# a boolean's spellings, any case: PostgreSQL's own (COPY and psql write t and f) but its
# prefixes and on/off/y/n, which are as often text codes
_BOOL = {"true": True, "false": False, "t": True, "f": False, "yes": True, "no": False}
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1
_FLOAT_LIMIT = 2**1024  # an integer at least this large is out of float8's range
_COPY_NULL = "\\N"  # COPY text format's NULL
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass
class Column:
    name: str
    type: str  # int8 | numeric | float8 | bool | text
    nulls: int = 0


@dataclass
class ParsedCsv:
    """What :func:`read_csv` found in a whole file; nothing of the data is kept."""

    columns: list[Column]
    rows: int
    encoding: str  # as said to the user: "UTF-8", "UTF-16 LE with BOM", "cp1252"...
    delimiter: str
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    table: str  # schema-qualified, as PostgreSQL placed it
    columns: list[Column]
    rows: int
    notes: list[str]
    passes: int = 1  # reads of the file: 2 when the first pass's types or COPY reading did not hold

    def summary(self) -> str:
        cols = ", ".join(f"{c.name if _PLAIN_NAME.fullmatch(c.name) else quote_ident(c.name)} {c.type}"
                         + (f" ({c.nulls} NULL)" if c.nulls else "") for c in self.columns)
        return f"created {self.table}: {len(self.columns)} columns ({cols}), {self.rows} rows"


# a progress callback: (what, bytes of the file read, its size on disk); the size is 0 when unknown
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# Reading the file (pure Python)
# --------------------------------------------------------------------------------------------


def _open(path: Path, where: str):
    """(decompressed binary stream, the file on disk, its size): ``.gz``, ``.bz2``, ``.xz`` and, with the
    zstandard package, ``.zst`` files are decompressed as they are read."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{where}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
    size = os.fstat(raw.fileno()).st_size
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw), raw, size
    if suffix == ".bz2":
        return bz2.BZ2File(raw), raw, size
    if suffix == ".xz":
        return lzma.LZMAFile(raw), raw, size
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raw.close()
            raise DataError(f"{where}: a .zst file needs the zstandard package (pip install zstandard), "
                            "or unpack it first") from None
        return zstandard.ZstdDecompressor().stream_reader(raw), raw, size
    return raw, raw, size


def _read(stream, size: int, where: str) -> bytes:
    try:
        return stream.read(size)
    except (OSError, EOFError, lzma.LZMAError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{where}: cannot decompress the file: {exc}") from None


def _encoding(head: bytes, where: str, encoding: str | None) -> tuple[str, int, str, list[str]]:
    """From the file's first bytes: (Python codec, byte-order mark's length, encoding as said, notes)."""
    wanted = None
    if encoding is not None:
        try:
            wanted = codecs.lookup(encoding).name
        except LookupError:
            raise UsageError(f"--encoding: unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from None
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            family = codec.split("-")[0] + "-" + codec.split("-")[1]  # utf-8, utf-16, utf-32
            if wanted is not None and not wanted.startswith(family):
                raise DataError(f"{where}: starts with a {label} byte-order mark, but --encoding {encoding} was given")
            return codec, len(bom), f"{label} with BOM", [f"{where}: read as {label}; its byte-order mark was removed"]
    sample = head[:4096]
    if wanted is None and sample.count(0) > len(sample) // 4:  # ASCII text in UTF-16: every other byte
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        guess = "utf-16-le" if odd > even else "utf-16-be"
        raise DataError(f"{where}: contains NUL bytes; it looks like {guess.upper()} without a byte-order mark "
                        f"(pass --encoding {guess} if so)")
    if wanted is not None and wanted != "utf-8":
        return wanted, 0, encoding, [f"{where}: read as {encoding}"]
    return "utf-8", 0, "UTF-8", []


def _bad_byte(path: Path, where: str, codec: str, skip: int, shown: str) -> DataError:
    """The refusal of the file's first byte that ``codec`` cannot read, with its line and offset: the
    file is read again to find it (only ever on the way to this error)."""
    stream, raw, _ = _open(path, where)
    decoder = codecs.getincrementaldecoder(codec)("strict")
    consumed, newlines = skip, 0
    try:
        _read(stream, skip, where)
        while True:
            chunk = _read(stream, CHUNK_BYTES, where)
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                before = exc.object[:exc.start]
                at = consumed - len(pending) + exc.start
                line = newlines - pending.count(b"\n") + before.count(b"\n") + 1
                byte = exc.object[exc.start:exc.start + 1].hex()
                hint = ("; if it is Latin-1 or Windows-1252 (e.g. saved by Excel), pass --encoding cp1252"
                        if shown == "UTF-8" else "")
                return DataError(f"{where}:{line}: not valid {shown.removesuffix(' with BOM')} "
                                 f"(byte 0x{byte} at offset {at}){hint}")
            if not chunk:
                return DataError(f"{where}: not valid {shown}")
            consumed += len(chunk)
            newlines += chunk.count(b"\n")
    finally:
        stream.close()
        raw.close()


def _csv_error(exc: csv.Error, where: str, line: int) -> DataError:
    msg = str(exc)
    if "field larger than field limit" in msg:
        return DataError(f"{where}:{line}: a field longer than {csv.field_size_limit()} characters "
                         "(a quote opened and never closed?)")
    if "unexpected end of data" in msg:
        return DataError(f"{where}:{line}: a quoted field starting on this record is never closed")
    return DataError(f"{where}:{line}: bad quoting ({msg}); a field with a quote must be quoted "
                     'as a whole, with inner quotes doubled ("")')


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


def _reader(lines, delimiter: str):
    """RFC 4180 records from ``lines`` (a string, or lines as read with ``newline=''``)."""
    if isinstance(lines, str):
        lines = io.StringIO(lines, newline="")
    return csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)


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


@dataclass
class _Layout:
    """What the file's first bytes say: how to read the rest of it."""

    path: Path
    where: str
    codec: str  # Python's codec
    encoding: str  # as said to the user
    bom: int  # bytes of the byte-order mark
    delimiter: str
    header_lines: int  # lines before the first record: an Excel sep= line, blank lines, the header
    data_offset: int  # bytes (decompressed) before the first record
    names: list[str]
    fields: int  # fields per record as written, a trailing empty one included
    drop_last: bool  # every line ends with a delimiter: the empty last field is dropped
    notes: list[str]


def _head(path: Path, *, delimiter: str | None, encoding: str | None) -> _Layout:
    """Read the encoding, the delimiter and the header from the file's first ``HEAD_BYTES``."""
    where = str(path)
    stream, raw, _ = _open(path, where)
    try:
        head = _read(stream, HEAD_BYTES, where)
        more = bool(_read(stream, 1, where))
    finally:
        stream.close()
        raw.close()
    codec, bom, shown, notes = _encoding(head, where, encoding)
    try:
        text = codecs.getincrementaldecoder(codec)("strict").decode(head[bom:], not more)
    except UnicodeDecodeError:
        raise _bad_byte(path, where, codec, bom, shown) from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DataError(f"{where}:{line}: contains a NUL character, which PostgreSQL text cannot hold")
    if more and "\n" in text:
        text = text[:text.rindex("\n") + 1]  # whole lines only
    full = text
    first_line = text.split("\n", 1)[0].rstrip("\r")
    sep_lines = 0
    if re.fullmatch(r"sep=.", first_line):  # Excel's delimiter hint line
        sep = first_line[4]
        if delimiter is not None and delimiter != sep:
            raise DataError(f"{where}:1: the file says sep={sep} but --delimiter {_show(delimiter)} was given")
        delimiter, sep_lines = sep, 1
        text = text.split("\n", 1)[1] if "\n" in text else ""
        notes.append(f"{where}:1: Excel's 'sep={sep}' line read as the delimiter")
    if not text.strip():
        raise DataError(f"{where}: the file is empty")
    detected = delimiter is None
    if detected:
        delimiter = _sniff(text, where)
        if delimiter != ",":
            notes.insert(0, f"{where}: {_show(delimiter)}-separated")
    reader = _reader(text, delimiter)
    records: list[list[str]] = []
    start = 1
    header_start = header_end = 0
    try:
        for row in reader:
            if row:
                records.append(row)
                if len(records) == 1:
                    header_start, header_end = start + sep_lines, reader.line_num
                elif len(records) > SNIFF_RECORDS:
                    break
            start = reader.line_num + 1
    except csv.Error as exc:
        if not (more and "unexpected end of data" in str(exc) and len(records) > 1):
            raise _csv_error(exc, where, start + sep_lines) from None
    if not records:
        raise DataError(f"{where}: the file is empty")
    header, rows = records[0], records[1:]
    at = f"{where}:{header_start}"
    if len(header) == 1:
        others = [d for d in CANDIDATE_DELIMITERS if d != delimiter and d in header[0]]
        if others:
            raise DataError(f"{at}: read as a single column {header[0][:40]!r}, but the header contains "
                            f"{_show(others[0])}: wrong delimiter? (pass --delimiter {others[0]!r})")
    n = len(header)
    drop_last = (n > 1 and header[-1].strip() == "" and bool(rows)
                 and all(len(r) == n and r[-1] == "" for r in rows))
    if drop_last:
        notes.append(f"{where}: every line ends with a delimiter; the empty last column was dropped")
    names = _header_names(header[:-1] if drop_last else header, at, notes)
    before = "".join(islice(io.StringIO(full, newline=""), sep_lines + header_end))  # lines before the data
    return _Layout(path=path, where=where, codec=codec, encoding=shown, bom=bom, delimiter=delimiter,
                   header_lines=sep_lines + header_end,
                   data_offset=bom + len(before.encode(codec)),
                   names=names, fields=n, drop_last=drop_last, notes=notes)


class _LineBreaks:
    """Whether every line break so far is of the first one's kind (LF, or CRLF): COPY takes the first
    line's for the whole file and stops at another."""

    def __init__(self):
        self.crlf: bool | None = None
        self.ok = True
        self._prev = b"\n"

    def see(self, chunk: bytes) -> None:
        last, self._prev = self._prev + chunk, chunk[-1:]  # with the previous read's last byte
        if self.crlf is None and (i := last.find(b"\n", 1)) > 0:
            self.crlf = last[i - 1:i] == b"\r"
        if self.crlf:
            lone = (last if last[:1] == b"\r" else last[1:]).replace(b"\r\n", b"")
            if b"\n" in lone or b"\r" in lone[:-1]:  # a CR last pairs with the next read's LF
                self.ok = False
        elif b"\r" in chunk:
            self.ok = False


class _Tap(io.RawIOBase):
    """The file's (decompressed) bytes on their way to the csv reader: counted, checked for NUL
    characters and for what ``COPY ... (FORMAT csv)`` would read otherwise than this module, and
    kept from ``keep_from`` on, to be sent to ``COPY`` as they are."""

    def __init__(self, stream, where: str, *, nul_check: bool, keep_from: int | None, null: str | None,
                 line_at: Callable[[int], int]):
        super().__init__()
        self.stream, self.where, self.nul_check, self.keep_from = stream, where, nul_check, keep_from
        self.line_at = line_at  # the line of a byte offset (only on the way to an error)
        self.done = 0  # bytes read
        self.kept: list[bytes] = []
        self.breaks = _LineBreaks()
        # COPY reads a quoted "" as an empty string (here: missing), \. as the end of the data and a
        # quoted --null marker as text (here: missing)
        self.copy_safe = True
        self._quoted_null = b'"' + null.encode() + b'"' if null else None
        self._tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = _read(self.stream, len(buffer), self.where)
        n = len(data)
        buffer[:n] = data
        if n:
            self._see(data)
        return n

    def _see(self, data: bytes) -> None:
        if self.nul_check and b"\x00" in data:
            at = self.done + data.index(b"\x00")
            raise DataError(f"{self.where}:{self.line_at(at)}: contains a NUL character, which PostgreSQL text "
                            "cannot hold")
        if self.copy_safe:
            seam = self._tail + data  # patterns across two reads
            if b'""' in seam or b"\\." in seam or (self._quoted_null is not None and self._quoted_null in seam):
                self.copy_safe = False
            self._tail = data[-16:]
        self.breaks.see(data)
        if self.keep_from is not None and self.done + len(data) > self.keep_from:
            self.kept.append(data[max(0, self.keep_from - self.done):])
        self.done += len(data)

    def take(self) -> bytes:
        """The bytes kept since the last call."""
        out = b"".join(self.kept)
        self.kept.clear()
        return out

    def stop_keeping(self) -> None:
        self.keep_from = None
        self.kept.clear()


def _plain_decimals(joined: str) -> bool:
    """Whether every one of these ASCII floats (joined by NUL) is digits with at most a decimal point
    inside (``_COMMA_NUMBER``'s form): no exponent, no point first or last, no spaces to strip."""
    return not (any(c in joined for c in ("e", "E", " ", "\t", "\x00.", ".\x00", "-.", "+."))
                or joined.startswith(".") or joined.endswith("."))


class _ColumnScan:
    """One column's type from all of its values, a batch at a time.

    Numbers take a fast path (C-level ``int``/``float`` over the batch, with the markers already met
    removed first); a batch it cannot settle (a new marker spelling, a boolean, text, an inf) is read
    value by value, once per distinct value."""

    def __init__(self, name: str, nulls: frozenset[str] | None):
        self.name, self.nulls = name, nulls
        self.markers = 0  # missing-value markers: NULL in a number or boolean column
        self.text_nulls = 0  # NULL in a text column: '' (or the --null marker)
        self.spellings: set[str] = set(nulls) if nulls is not None else {""}  # markers met, as written
        self.bools = self.ints = self.floats = self.others = False  # the kinds of value met
        self.numbers = 0  # values that are numbers
        self.truths = 0  # values that are true or false
        self.stray: tuple[str, int] | None = None  # the first value neither a number nor true/false, its line
        self.offender: tuple[str, int] | None = None  # the first value that is not a number, its line
        self.zero: tuple[str, int] | None = None  # the first integer with leading zeros
        self.comma: tuple[str, int] | None = None  # the first number written with a comma
        self.comma_numbers = True  # every value is a number written with or without commas
        self.big = False  # an integer beyond int8
        self.overflow: tuple[str, int] | None = None  # the first number beyond float8
        self.rewrite = False  # a value COPY would not read as written (spaces beyond ASCII, +nan)

    def is_marker(self, v: str) -> bool:
        return v.strip().lower() in DEFAULT_NULLS if self.nulls is None else v in self.nulls

    def type(self) -> str | None:
        """The column's type from the values so far; None while they are all missing."""
        if self.others or (self.bools and (self.ints or self.floats)):
            return "text"
        if self.bools:
            return "bool"
        if self.floats:
            return "float8"
        if self.ints:
            return "text" if self.zero else "numeric" if self.big else "int8"
        return None

    def copy_safe(self, kind: str) -> bool:
        """Whether COPY's CSV format (NULL '' or --null) reads this column's values as this module does."""
        return kind == "text" or (self.spellings <= (self.nulls or {""}) and not self.rewrite)

    def feed(self, col: tuple[str, ...], starts: list[int]) -> None:
        counts = {v: col.count(v) for v in self.spellings}  # the markers met so far, in this batch
        self.text_nulls += counts.get("", 0) if self.nulls is None else sum(map(col.count, self.nulls))
        if (self.others or self.bools) or not self._numbers(col, starts, counts):
            self._each(col, starts)

    def _numbers(self, col: tuple[str, ...], starts: list[int], counts: dict[str, int]) -> bool:
        """The fast path; False when the batch needs reading value by value."""
        marked = sum(counts.values())
        values = col if not marked else list(filter(None, col)) if marked == counts.get("") else \
            [v for v in col if v not in self.spellings]
        if values:
            joined = "\x00".join(values)
            if not joined.isascii() or "_" in joined:  # int() and float() read other digits and 1_000
                return False
            ints = None
            if not self.floats:
                try:
                    ints = list(map(int, values))
                except ValueError:
                    pass
            if ints is not None:
                self._integers(ints, joined, col, starts)
            else:
                try:
                    floats = list(map(float, values))
                except ValueError:
                    return False
                if not math.isfinite(sum(floats)):  # inf, nan (a marker) or beyond float8: one by one
                    return False
                self.floats = True
                if self.comma_numbers and not _plain_decimals(joined):
                    self.comma_numbers = False
        self.markers += marked
        self.numbers += len(values)
        return True

    def _integers(self, ints: list[int], joined: str, col: tuple[str, ...], starts: list[int]) -> None:
        self.ints = True
        if max(ints) > _INT8_MAX or min(ints) < _INT8_MIN:
            self.big = True
            if self.overflow is None:
                huge = next((x for x in ints if abs(x) >= _FLOAT_LIMIT), None)
                if huge is not None:
                    self.overflow = self._first(col, starts, lambda v: v not in self.spellings and int(v) == huge, strip=True)
        if self.zero is None:
            probe = "\x00" + joined
            if "\x000" in probe or "\x00+0" in probe or "\x00-0" in probe or " " in joined or "\t" in joined:
                if _LEADING_ZERO_IN.search(joined):
                    self.zero = self._first(col, starts, lambda v: _LEADING_ZERO.fullmatch(v.strip()), strip=True)

    @staticmethod
    def _first(col, starts, test, strip=False) -> tuple[str, int]:
        k = next(k for k, v in enumerate(col) if test(v))
        return (col[k].strip() if strip else col[k]), starts[k]

    def _each(self, col: tuple[str, ...], starts: list[int]) -> None:
        """Value by value, once per distinct value."""
        offenders, strays, zeros, commas, overflows = set(), set(), set(), set(), set()
        for v, count in Counter(col).items():
            if self.is_marker(v):
                self.markers += count
                self.spellings.add(v)
                continue
            s = v.strip()
            if not v.isascii():
                self.rewrite = True
            if s.lower() in _BOOL:
                self.bools = True
                self.truths += count
                offenders.add(v)
                self.comma_numbers = False
            elif _INT.fullmatch(s):
                self.ints = True
                self.numbers += count
                x = int(s)
                if not _INT8_MIN <= x <= _INT8_MAX:
                    self.big = True
                    if abs(x) >= _FLOAT_LIMIT:
                        overflows.add(v)
                if _LEADING_ZERO.fullmatch(s):
                    zeros.add(v)
            elif _FLOAT.fullmatch(s):
                self.floats = True
                self.numbers += count
                x = float(s)
                if math.isinf(x) and "inf" not in s.lower():
                    overflows.add(v)
                if x != x:  # +nan, -nan: numbers here, spelled otherwise for COPY
                    self.rewrite = True
                if not _COMMA_NUMBER.fullmatch(s):
                    self.comma_numbers = False
            else:
                self.others = True
                offenders.add(v)
                strays.add(v)
                if not _COMMA_NUMBER.fullmatch(s):
                    self.comma_numbers = False
                elif "," in s:
                    commas.add(v)
        for attr, found, strip in (("offender", offenders, False), ("stray", strays, False), ("zero", zeros, True),
                                   ("comma", commas, False), ("overflow", overflows, True)):
            if found and getattr(self, attr) is None:
                setattr(self, attr, self._first(col, starts, found.__contains__, strip))

    def finish(self, where: str) -> tuple[Column, list[str]]:
        """The column's type and NULL count, and the notes to print; DataError for a number float8
        cannot hold in a float8 column."""
        notes: list[str] = []
        kind = self.type() or "text"
        name = self.name
        if kind == "text" and self.zero is not None and not (self.others or self.bools or self.floats):
            notes.append(f"column {name!r}: kept as text because of leading zeros ({self.zero[0]!r} on line "
                         f"{self.zero[1]}): codes, not numbers?")
        if kind == "float8" and self.overflow is not None:
            value, line = self.overflow
            raise DataError(f"{where}:{line}: column {name!r}: {value!r} is out of the range of float8")
        if kind != "text":
            return Column(name, kind, self.markers), notes
        kept = sorted(self.spellings - {""}) if self.nulls is None else []
        if kept:
            notes.append(f"column {name!r} is text; its values {', '.join(map(repr, kept[:3]))} are kept as text "
                         f"(pass --null {kept[0]!r} to load them as NULL)")
        if self.comma_numbers and self.comma is not None:
            notes.append(f"column {name!r} is text: its values are numbers written with a comma ({self.comma[0]!r} "
                         f"on line {self.comma[1]}), a decimal comma or a thousands separator, which is not read "
                         f"as a number; convert it in SQL (e.g. replace(...)::float8) or in the file")
        elif self.truths > self.numbers and self.stray is not None:
            notes.append(f"column {name!r} is text although {self.truths} of its values are true/false: "
                         f"{self.stray[0]!r} on line {self.stray[1]} is neither")
        elif self.truths > self.numbers:
            notes.append(f"column {name!r} is text: it mixes {self.truths} true/false values with {self.numbers} "
                         f"number{'s' if self.numbers != 1 else ''}")
        elif self.numbers and self.offender is not None:
            notes.append(f"column {name!r} is text although {self.numbers} of its values are numbers: "
                         f"{self.offender[0]!r} on line {self.offender[1]} is not a number")
        return Column(name, "text", self.text_nulls), notes

    def to_copy_text(self, kind: str) -> Callable[[tuple[str, ...]], list[str] | tuple[str, ...]]:
        """How this column's values are written in COPY's text format once its type is ``kind``."""
        if kind == "text":
            nullset = self.nulls if self.nulls is not None else frozenset({""})

            def text(col):
                if "\\" in (joined := "\x00".join(col)) or "\t" in joined or "\n" in joined or "\r" in joined:
                    return [_COPY_NULL if v in nullset else v.translate(_COPY_ESCAPES) for v in col]
                if sum(map(col.count, nullset)):
                    return [_COPY_NULL if v in nullset else v for v in col]
                return col
            return text

        def value(col):
            spellings = self.spellings
            if sum(map(col.count, spellings)):
                col = [_COPY_NULL if v in spellings else v for v in col]
            if self.rewrite:
                col = [v if v == _COPY_NULL else "NaN" if v.strip().lower() in ("+nan", "-nan") else v.strip()
                       for v in col]
            return col
        return value


class _Scan:
    """One read of a file's records, a batch of about ``BATCH_VALUES`` fields at a time: checked
    (field counts, quoting, encoding) and typed column by column."""

    def __init__(self, layout: _Layout, nulls: frozenset[str] | None, *, keep: bool = False,
                 progress: Progress | None = None, what: str = "reading"):
        self.layout, self.progress, self.what = layout, progress, what
        stream, self._file, self.size = _open(layout.path, layout.where)
        ascii_like = "\n\x00".encode(layout.codec) == b"\n\x00"
        self.tap = _Tap(stream, layout.where, nul_check=ascii_like, keep_from=layout.data_offset if keep else None,
                        null=next(iter(nulls)) if nulls else None, line_at=self._line_at)
        self._text = io.TextIOWrapper(io.BufferedReader(self.tap, CHUNK_BYTES), encoding=layout.codec,
                                      errors="strict", newline="")
        self._text._CHUNK_SIZE = CHUNK_BYTES
        lines = self._text if ascii_like else self._no_nul(self._text)
        try:
            for _ in range(layout.header_lines):
                next(lines)
        except UnicodeDecodeError:
            raise self._bad_byte() from None
        self.reader = _reader(lines, layout.delimiter)
        self.next_line = layout.header_lines + 1  # where the next record starts
        self.rows = self.blank = 0
        self.done = False
        self.diverged = False  # the first pass stopped sending: the file turned out otherwise than its start
        self.columns = [_ColumnScan(name, nulls) for name in layout.names]
        self.batch = max(1, BATCH_VALUES // layout.fields)

    def _no_nul(self, lines):
        for number, line in enumerate(lines, start=1):
            if "\x00" in line:
                raise DataError(f"{self.layout.where}:{number}: contains a NUL character, which PostgreSQL text "
                                "cannot hold")
            yield line

    def _line_at(self, offset: int) -> int:
        stream, file, _ = _open(self.layout.path, self.layout.where)
        try:
            return _read(stream, offset, self.layout.where).count(b"\n") + 1
        finally:
            stream.close()
            file.close()

    def _bad_byte(self) -> DataError:
        layout = self.layout
        return _bad_byte(layout.path, layout.where, layout.codec, layout.bom, layout.encoding)

    def close(self) -> None:
        self._file.close()

    def types(self) -> list[str]:
        return [c.type() or "text" for c in self.columns]

    def copy_safe(self, types: list[str]) -> bool:
        """Whether ``COPY (FORMAT csv)`` of the bytes read so far would load what this module reads."""
        return (self.layout.codec == "utf-8" and not self.layout.drop_last and not self.blank
                and self.tap.copy_safe and self.tap.breaks.ok
                and all(c.copy_safe(t) for c, t in zip(self.columns, types)))

    def step(self, infer: bool = True) -> list[tuple[str, ...]] | None:
        """The next batch of records as columns, checked (and typed when ``infer``); None at the end."""
        where, reader, base = self.layout.where, self.reader, self.layout.header_lines + 1
        rows: list[list[str]] = []
        starts: list[int] = []
        while not rows and not self.done:
            start, read = self.next_line, 0
            try:
                for row in islice(reader, self.batch):
                    read += 1
                    if row:
                        rows.append(row)
                        starts.append(start)
                    else:
                        self.blank += 1
                    start = base + reader.line_num
            except csv.Error as exc:
                raise _csv_error(exc, where, start) from None
            except UnicodeDecodeError:
                raise self._bad_byte() from None
            self.next_line = start
            self.done = read < self.batch
        if self.progress is not None:
            self.progress(self.what, self._file.tell(), self.size)
        if not rows:
            return None
        n = self.layout.fields
        if len(rows[0]) != n or len(set(map(len, rows))) != 1:
            k = next(k for k, r in enumerate(rows) if len(r) != n)
            raise DataError(f"{where}:{starts[k]}: expected {n} fields (as in the header), found {len(rows[k])}")
        cols = list(zip(*rows))
        del rows
        if self.layout.drop_last:
            last = cols.pop()
            if any(last):
                k = next(k for k, v in enumerate(last) if v)
                raise DataError(f"{where}:{starts[k]}: a value in column {n}, which has no name in the header "
                                "(the lines before all ended with a delimiter)")
        self.rows += len(starts)
        if infer:
            for column, values in zip(self.columns, cols):
                column.feed(values, starts)
        return cols

    def finish(self) -> tuple[list[Column], list[str]]:
        """The columns' types and the notes; DataError for a file without data rows."""
        where = self.layout.where
        if not self.rows:
            raise DataError(f"{where}: no data rows after the header")
        notes = [f"{where}: {self.blank} blank line(s) skipped"] if self.blank else []
        columns = []
        for scan in self.columns:
            column, more = scan.finish(where)
            columns.append(column)
            notes += more
        return columns, notes


def _nulls(null: str | None) -> frozenset[str] | None:
    return None if null is None else frozenset({null})


def read_csv(path: str | Path, *, delimiter: str | None = None, null: str | None = None,
             encoding: str | None = None, progress: Progress | None = None) -> ParsedCsv:
    """Read and check the whole file, a batch at a time, in bounded memory; raise DataError (exit 2)
    for anything it would misread. Nothing is written anywhere."""
    layout = _head(Path(path), delimiter=delimiter, encoding=encoding)
    scan = _Scan(layout, _nulls(null), progress=progress)
    try:
        while scan.step() is not None:
            pass
        columns, notes = scan.finish()
    finally:
        scan.close()
    return ParsedCsv(columns=columns, rows=scan.rows, encoding=layout.encoding, delimiter=layout.delimiter,
                     notes=layout.notes + notes)


# --------------------------------------------------------------------------------------------
# Loading the table (one transaction)
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


async def _chunks(chunks: Iterator[bytes]):
    """COPY's source: the chunks made as COPY asks for them. (Made a few ahead in a thread instead,
    measured no faster: the server reads a chunk faster than this module parses the next.)"""
    for chunk in chunks:
        yield chunk


class _Redo(Exception):
    """The first pass's table does not hold the file as read: roll it back and load again."""


def _copy_lines(cols: list[tuple[str, ...]], plan: list[Callable]) -> bytes:
    """One batch of columns as COPY text-format lines."""
    out = [convert(col) for convert, col in zip(plan, cols)]
    return ("\n".join(map("\t".join, zip(*out))) + "\n").encode()


class _NumberBytes:
    """The check that lets a file of numbers go to COPY as it is, never parsed here.

    When every byte after the header is a digit, ``. + - e E``, the delimiter or a line break, every
    field is empty (NULL for both) or a number that PostgreSQL's ``int8in``/``float8in`` accepts exactly
    when this module's int8/float8 rules do (no spaces, letters, quotes or other digits to read
    differently): the server's COPY into the types of the first batch then checks every value. What
    COPY would take that this module would not is refused here: blank lines, a line break other than
    the first one's kind, and (with an int8 column) integers with leading zeros."""

    _ALLOWED = b"0123456789.+-eE\r\n"
    _ZEROS = (b"|00", b"|01", b"|-00", b"|-01")

    def __init__(self, delimiter: str, zeros: bool):
        self.allowed = self._ALLOWED + delimiter.encode()
        # field starts as '|', signs as '-', digits 1-9 as '1': leading zeros are the patterns above
        self.map = bytes.maketrans(delimiter.encode() + b"\n\r+23456789", b"|||-11111111")
        self.zeros, self.tail = zeros, b"\n"  # the data starts a line
        self.breaks = _LineBreaks()

    def fits(self, chunk: bytes) -> bool:
        if chunk.translate(None, self.allowed):
            return False
        seam, self.tail = self.tail + chunk, chunk[-3:]  # patterns across two reads
        if b"\n\n" in seam or b"\n\r\n" in seam:  # a blank line
            return False
        self.breaks.see(chunk)
        if not self.breaks.ok:
            return False
        return not (self.zeros and any(p in seam.translate(self.map) for p in self._ZEROS))


def _number_bytes(layout: _Layout, check: _NumberBytes, progress: Progress | None, state: dict) -> Iterator[bytes]:
    """The file's bytes after the header, while ``check`` holds; ``state['whole']`` once all were sent."""
    stream, file, size = _open(layout.path, layout.where)
    try:
        _read(stream, layout.data_offset, layout.where)
        while chunk := _read(stream, CHUNK_BYTES, layout.where):
            if not check.fits(chunk):
                return
            yield chunk
            if progress is not None:
                progress("reading", file.tell(), size)
        state["whole"] = True
    finally:
        stream.close()
        file.close()


def _first_pass(scan: _Scan, cols, guess: list[str], raw: bool) -> Iterator[bytes]:
    """The data for COPY while the scan confirms the types guessed from its first batch (and, for
    ``raw``, that COPY reads the bytes as the scan does); it stops sending the moment it does not.
    A batch is let go before the next is read: reusing its memory is ~40 % faster than new pages."""
    plan = None if raw else [c.to_copy_text(t) for c, t in zip(scan.columns, guess)]
    while cols is not None:
        if scan.types() != guess or (raw and not scan.copy_safe(guess)):
            scan.tap.stop_keeping()
            scan.diverged = True
            return
        data = scan.tap.take() if raw else _copy_lines(cols, plan)
        cols = None
        if data:
            yield data
        data = None
        cols = scan.step()
    if raw and (data := scan.tap.take()):
        yield data


def _second_pass(scan: _Scan, plan: list[Callable] | None) -> Iterator[bytes]:
    while True:
        cols = scan.step(infer=False)
        if cols is None:
            break
        data = scan.tap.take() if plan is None else _copy_lines(cols, plan)
        cols = None
        if data:
            yield data
        data = None
    if plan is None and (data := scan.tap.take()):
        yield data


def _copy_options(layout: _Layout, null: str | None, raw: bool) -> dict:
    if raw:  # the file's own bytes, as `psql \copy ... csv` would send them
        return {"format": "csv", "delimiter": layout.delimiter, "quote": '"', "escape": '"', "null": null or ""}
    return {"format": "text"}


async def _load_numbers(conn, engine, layout: _Layout, target: str, guess: list[str], create, copy,
                        progress: Progress | None) -> tuple[list[Column] | None, int]:
    """The file's bytes straight into COPY (see :class:`_NumberBytes`); (None, 0) and nothing left
    when the file or the server says it is not all numbers of the first batch's types."""
    state: dict = {}
    try:
        async with conn.transaction():  # a savepoint
            await create(guess)
            await copy(_number_bytes(layout, _NumberBytes(layout.delimiter, "int8" in guess), progress, state), True)
            if not state.get("whole"):
                raise _Redo
            counts = ", ".join(f"count({quote_ident(name)})" for name in layout.names)
            row = await conn.fetchrow(engine.render("load_counts.sql", table=target, counts=counts))
    except (_Redo, asyncpg.DataError):
        return None, 0
    rows = row[0]
    if not rows:
        return None, 0  # the parsed load says what is wrong
    return [Column(name, kind, rows - n) for name, kind, n in zip(layout.names, guess, row[1:])], rows


async def _load_parsed(conn, layout: _Layout, nulls: frozenset[str] | None, guess: list[str], create, copy,
                       progress: Progress | None) -> tuple[list[Column], int, list[str], int]:
    """Parse the file while COPY loads it as the first batch's types; when the whole file disagrees
    (or COPY would read it otherwise), load it again with the types of the whole file.
    (columns, rows, notes, reads of the file)."""
    scan = _Scan(layout, nulls, keep=True, progress=progress)
    try:
        first = scan.step()
        raw = scan.copy_safe(guess)
        if not raw:
            scan.tap.stop_keeping()
        try:
            async with conn.transaction():  # a savepoint: the first pass's table
                await create(guess)
                failed = None
                chunks = _first_pass(scan, first, guess, raw)
                del first
                try:
                    await copy(chunks, raw)
                except (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError) as exc:
                    failed = exc
                while scan.step() is not None:  # what the first pass did not read
                    pass
                columns, notes = scan.finish()
                types = [c.type for c in columns]
                if types == guess and isinstance(failed, asyncpg.exceptions.ProgramLimitExceededError):
                    raise failed
                if failed is not None or scan.diverged or types != guess or (raw and not scan.copy_safe(types)):
                    raise _Redo
            return columns, scan.rows, notes, 1
        except _Redo:
            pass
        raw = scan.copy_safe(types)
        await create(types)
        again = _Scan(layout, nulls, keep=raw, progress=progress, what="reading again")
        try:
            plan = None if raw else [c.to_copy_text(t) for c, t in zip(scan.columns, types)]
            await copy(_second_pass(again, plan), raw)
        finally:
            again.close()
        return columns, scan.rows, notes, 2
    finally:
        scan.close()


async def load_csv(conn: asyncpg.Connection, path: str | Path, table: str, *, delimiter: str | None = None,
                   null: str | None = None, encoding: str | None = None, replace: bool = False,
                   distributed_by: str | None = None, progress: Progress | None = None) -> LoadResult:
    """Create ``table`` (``name`` or ``schema.name``) from the CSV file at ``path`` and fill it with the
    server's ``COPY``, in one transaction: on any failure (or Ctrl-C) nothing is left, and with
    ``replace`` the old table is dropped only by a load that succeeds.

    The file is read as a stream, once when its first batch's types hold for the whole file (else
    twice), in memory bounded by a few batches; ``progress`` is told the bytes read. On Greenplum the
    table is distributed by ``distributed_by`` (a column of the file) or randomly; elsewhere that is
    only checked. Raises DataError (exit 2) for the file's faults, with its line, and for a table
    that exists (without ``replace``) or a missing schema; DatabaseError when the server refuses.
    """
    from ctq.engines import detect

    path = Path(path)
    schema, name = parse_table(table)
    target = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
    layout = _head(path, delimiter=delimiter, encoding=encoding)
    if distributed_by is not None and distributed_by not in layout.names:
        raise UsageError(f"--distributed-by {distributed_by!r}: not a column of {layout.where} "
                         f"(its columns: {', '.join(layout.names[:8])}{', ...' if len(layout.names) > 8 else ''})")
    nulls = _nulls(null)
    engine = await detect(conn)
    distribution = (engine.render("distribution/by_column.sql", column=quote_ident(distributed_by))
                    if distributed_by is not None else engine.template("distribution/random.sql")).strip()
    names = list(layout.names)

    async def create(types: list[str]) -> None:
        columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in zip(names, types))
        await conn.execute(engine.render("load_create.sql", table=target, columns=columns, distribution=distribution))

    async def copy(chunks: Iterator[bytes], raw: bool) -> None:
        await unless_lost(conn, conn.copy_to_table(name, schema_name=schema, columns=names, source=_chunks(chunks),
                                                   **_copy_options(layout, null, raw)))

    probe = _Scan(layout, nulls)  # the first batch: the types to try first
    try:
        probe.step()
        guess = probe.types()
        numbers_only = probe.copy_safe(guess) and set(guess) <= {"int8", "float8"}
    finally:
        probe.close()
    passes = 1
    try:
        async with conn.transaction():
            carried = []  # what the old table's readers hold carries over, as for ctq predict --replace
            if replace:
                if (old := await conn.fetchval(template("relation_oid.sql"), target)) is not None:
                    carried = [r[0] for r in await conn.fetch(render("carry_grants.sql", table=target), old)]
                await conn.execute(engine.render("load_drop.sql", table=target))
            columns = None
            if numbers_only:
                columns, rows = await _load_numbers(conn, engine, layout, target, guess, create, copy, progress)
                notes = []
            if columns is None:
                columns, rows, notes, passes = await _load_parsed(conn, layout, nulls, guess, create, copy, progress)
            for statement in carried:
                await conn.execute(statement)
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
        raise DataError(f"{layout.where}: {len(names)} columns do not fit in one PostgreSQL row "
                        f"({exc.message}); " + TOO_WIDE) from None
    except (asyncpg.InterfaceError, OSError) as exc:
        if not conn.is_closed():
            raise
        raise DatabaseError(f"{layout.where}: the connection to the database was lost during the load (the server "
                            "stopped, or ended this session); nothing was written: load again once it is back") from exc
    except asyncpg.PostgresError as exc:  # classified as anywhere (a missing privilege: exit 2, with its fix)
        error = permission_denied(exc, await current_role(conn)) if is_missing_privilege(exc) else from_database(exc)
        raise type(error)(f"{layout.where}: PostgreSQL refused the load (nothing was written): {error}") from None
    return LoadResult(table=where, columns=columns, rows=rows, notes=layout.notes + notes, passes=passes)


if __name__ == "__main__":  # python -m ctq.loader FILE: what would be loaded, no database
    p = read_csv(sys.argv[1])
    print(p.encoding, _show(p.delimiter), [(c.name, c.type, c.nulls) for c in p.columns], p.rows)
    print("\n".join(p.notes))
