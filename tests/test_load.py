"""`ctq load`: every common way a CSV file is misread is handled and said, or refused with one line
(file, line), exit code 2 and nothing written."""

from __future__ import annotations

import codecs

import pytest

from ctq.errors import DataError
from ctq.loader import read_csv

LONG = "a_very_long_column_name_that_goes_on_and_on_well_past_the_postgres_limit"  # 72 bytes

# name: (file bytes, read_csv kwargs, [(column, type, nulls)], substrings expected in the notes)
READS = {
    "plain": (b"age,bmi,name,ok\n1,2.5,x,true\n3,,y,false\n", {},
              [("age", "int8", 0), ("bmi", "float8", 1), ("name", "text", 0), ("ok", "bool", 0)], []),
    "utf8-bom": (codecs.BOM_UTF8 + b"age,b\n1,2\n", {}, [("age", "int8", 0), ("b", "int8", 0)],
                 ["UTF-8", "byte-order mark was removed"]),
    "utf16le-bom-semicolon": (codecs.BOM_UTF16_LE + "age;b\r\n1;2.5\r\n".encode("utf-16-le"), {},
                              [("age", "int8", 0), ("b", "float8", 0)], ["UTF-16 LE", "';'-separated"]),
    "utf16be-bom-tab": (codecs.BOM_UTF16_BE + "age\tb\n1\t2\n".encode("utf-16-be"), {},
                        [("age", "int8", 0), ("b", "int8", 0)], ["UTF-16 BE", "tab-separated"]),
    "cp1252-with-encoding": ("city,n\nMontr\xe9al,1\n".encode("cp1252"), {"encoding": "cp1252"},
                             [("city", "text", 0), ("n", "int8", 0)], ["read as cp1252"]),
    "pipe": (b"a|b\n1|2\n", {}, [("a", "int8", 0), ("b", "int8", 0)], ["'|'-separated"]),
    "delimiter-option": (b"a:b\n1:2\n", {"delimiter": ":"}, [("a", "int8", 0), ("b", "int8", 0)], []),
    "excel-sep-line": (b"sep=;\na;b\n1;2\n", {}, [("a", "int8", 0), ("b", "int8", 0)], ["sep=;"]),
    "quoted-delimiters-and-newlines": (b'a,b\n"x, y",1\n"two\nlines",2\n"say ""hi""",3\n', {},
                                       [("a", "text", 0), ("b", "int8", 0)], []),
    "missing-markers": (b"a,b,c\n1,NA,x\nNULL,2.5,NA\n,nan,\n3,N/A,y\n", {},
                        [("a", "int8", 2), ("b", "float8", 3), ("c", "text", 1)],
                        ["column 'c' is text; its values 'NA' are kept as text (pass --null 'NA'"]),
    "null-option": (b"a,b\n1,-\n-,x\n", {"null": "-"}, [("a", "int8", 1), ("b", "text", 1)], []),
    "long-name-renamed": (f"{LONG},b\n1,2\n".encode(), {}, [(LONG.encode()[:63].decode(), "int8", 0), ("b", "int8", 0)],
                          ["72 bytes", f"renamed to '{LONG[:63]}'"]),
    "mixed-case-kept": (b"Age,my col\n1,2\n", {}, [("Age", "int8", 0), ("my col", "int8", 0)],
                        ["kept exactly as written", '"Age"']),
    "trailing-delimiter": (b"a,b,\n1,2,\n3,4,\n", {}, [("a", "int8", 0), ("b", "int8", 0)],
                           ["ends with a delimiter"]),
    "spaces-and-blank-lines": (b"a, b\r\n1, 2\r\n\r\n3, 4\r\n", {}, [("a", "int8", 0), ("b", "int8", 0)],
                               ["named 'b'", "1 blank line"]),
    "leading-zeros-stay-text": (b"zip,n\n02134,1\n10001,2\n", {}, [("zip", "text", 0), ("n", "int8", 0)],
                                ["leading zeros ('02134' on line 2)"]),
    "decimal-comma-said": (b"a;b\n1,5;2\n2,5;3\n", {}, [("a", "text", 0), ("b", "int8", 0)],
                           ["numbers written with a comma ('1,5' on line 2)"]),
    "stray-marker-said": (b"a\n1\n2\n?\n", {}, [("a", "text", 0)], ["'?' on line 4 is not a number"]),
    "beyond-int8": (b"id\n123456789012345678901\n1\n", {}, [("id", "numeric", 0)], []),
    "no-unicode-digits-or-underscores": ("a,b\n\u0661\u0662,1_000\n".encode(), {},
                                         [("a", "text", 0), ("b", "text", 0)], []),
}

# name: (file bytes, read_csv kwargs, substrings of the one-line refusal)
REFUSALS = {
    "latin1-without-encoding": ("name,city\nx,Montr\xe9al\n".encode("latin-1"), {},
                                ["f.csv:2: not valid UTF-8 (byte 0xe9 at offset 17)", "--encoding cp1252"]),
    "utf16-without-bom": ("age,b\n1,2\n".encode("utf-16-le"), {}, ["UTF-16-LE without a byte-order mark"]),
    "bom-contradicts-encoding": (codecs.BOM_UTF8 + b"a\n1\n", {"encoding": "latin-1"}, ["UTF-8 byte-order mark"]),
    "nul-character": (b"a,b\n1,x\x00y\n", {}, ["f.csv:2: contains a NUL character"]),
    "ambiguous-delimiter": (b"a,b;c\n1,2;3\n", {}, ["cannot tell the delimiter", "--delimiter"]),
    "wrong-delimiter": (b"a,b,c\n1,2,3\n", {"delimiter": ";"}, ["single column 'a,b,c'", "wrong delimiter"]),
    "one-column-but-header-has-delimiter": (b"a;b\n1\n2\n", {}, ["f.csv:2: expected 2 fields", "found 1"]),
    "ragged-row": (b"a,b\n1,2\n3,4,5\n6,7\n", {}, ["f.csv:3: expected 2 fields (as in the header), found 3"]),
    "bad-quote": (b'a,b\n1,"x"y\n', {}, ["f.csv:2: bad quoting"]),
    "unclosed-quote": (b'a,b\n1,2\n"x,1\n3,4\n', {}, ["f.csv:3: a quoted field", "never closed"]),
    "empty-name": (b"a,,c\n1,2,3\n", {}, ["f.csv:1: column 2 has no name"]),
    "duplicate-name": (b"a,b,a\n1,2,3\n", {}, ["f.csv:1: columns 1 ('a') and 3 ('a') have the same name"]),
    "duplicate-after-case-folding": (b"Age,age\n1,2\n", {}, ["differ only in case"]),
    "duplicate-after-truncation": (f"{LONG}1,{LONG}2\n1,2\n".encode(), {}, ["columns 1 and 2 both become", "63 bytes"]),
    "system-column": (b"a,xmin\n1,2\n", {}, ["column 2 is named 'xmin'"]),
    "no-header": (b"1,2.5,3\n4,5,6\n", {}, ["f.csv:1: the first line (1, 2.5, 3) looks like data, not a header"]),
    "float-out-of-range": (b"a\n1.5\n1e400\n", {}, ["f.csv:3: column 'a': '1e400' is out of the range"]),
    "huge-field": (b'a,b\n1,"' + b"x" * 200_000 + b'\n', {}, ["f.csv:2: a field longer than"]),
    "header-only": (b"a,b\n", {}, ["no data rows"]),
    "empty-file": (b"", {}, ["f.csv: the file is empty"]),
}


@pytest.mark.parametrize("name", READS)
def test_read(name, tmp_path):
    data, kwargs, columns, notes = READS[name]
    (tmp_path / "f.csv").write_bytes(data)
    parsed = read_csv(tmp_path / "f.csv", **kwargs)
    assert [(c.name, c.type, c.nulls) for c in parsed.columns] == columns
    text = "\n".join(parsed.notes)
    for expected in notes:
        assert expected in text
    if not notes:
        assert not parsed.notes


@pytest.mark.parametrize("name", REFUSALS)
def test_refused(name, tmp_path):
    data, kwargs, expected = REFUSALS[name]
    (tmp_path / "f.csv").write_bytes(data)
    with pytest.raises(DataError) as err:
        read_csv(tmp_path / "f.csv", **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "f.csv") in message
    for text in expected:
        assert text in message


async def columns_of(conn, table: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", table)]


async def test_load_says_what_it_created_with_the_names_grid_yaml_uses(run_cli, conn, tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_bytes(codecs.BOM_UTF8 + f"Age;bmi;{LONG};[city]\n41;22,5;1;Montréal\n;NA;2;NA\n".encode())
    proc = run_cli("load", str(csv), "--table", "public.people", env={"COLUMNS": "1000"})
    assert proc.returncode == 0, proc.stderr
    short = LONG[:63]
    assert proc.stdout.strip() == (f'created public.people: 4 columns ("Age" int8 (1 NULL), bmi text, '
                                   f'{short} int8, "[city]" text), 2 rows')
    assert "byte-order mark was removed" in proc.stderr and f"renamed to '{short}'" in proc.stderr
    assert "numbers written with a comma" in proc.stderr and "'[city]'" in proc.stderr
    assert await columns_of(conn, "public.people") == [("Age", "bigint"), ("bmi", "text"), (short, "bigint"),
                                                       ("[city]", "text")]
    assert await conn.fetchval('SELECT "[city]" FROM public.people WHERE "Age" IS NULL') == "NA"


async def test_refusals_write_nothing_and_replace_keeps_the_old_table(run_cli, conn, tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad[x].csv"
    good.write_text("a,b\n1,2\n")
    assert run_cli("load", str(good), "--table", "public.kept").returncode == 0
    for content, where in (("a,b\n1,2\n3\n", "bad[x].csv:3:"), ("a,b\n1,2\n", None)):
        bad.write_text(content)
        for args in ((), ("--replace",)):
            proc = run_cli("load", str(bad), "--table", "public.kept", *args, env={"COLUMNS": "1000"})
            if where is None and args:  # the good file replaces
                assert proc.returncode == 0, proc.stderr
                continue
            assert proc.returncode == 2, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
            assert (where or "--replace") in proc.stderr
            assert await conn.fetchval("SELECT count(*) FROM public.kept") == 1
    proc = run_cli("load", str(bad), "--table", "public.never", "--delimiter", ";;")
    assert proc.returncode == 2 and "--delimiter" in proc.stderr
    bad.write_text("a,a\n1,2\n")
    proc = run_cli("load", str(bad), "--table", "public.never")
    assert proc.returncode == 2 and "same name" in proc.stderr
    assert await conn.fetchval("SELECT to_regclass('public.never')") is None


async def test_delimiter_null_and_encoding_options(run_cli, conn, tmp_path):
    csv = tmp_path / "t.txt"
    csv.write_bytes("name\tscore\nJos\xe9\t-\nAnn\t3.5\n".encode("cp1252"))
    proc = run_cli("load", str(csv), "--table", "public.opts", "--delimiter", "\\t", "--null", "-",
                   "--encoding", "cp1252")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "created public.opts: 2 columns (name text, score float8 (1 NULL)), 2 rows"
    assert await conn.fetchval("SELECT name FROM public.opts WHERE score IS NULL") == "José"


@pytest.mark.parametrize("width", [1501, 1601])
async def test_a_csv_too_wide_for_a_row_says_what_to_do_and_writes_nothing(run_cli, conn, tmp_path, width):
    """1,501 float8 columns are more than one 8 kB heap row holds ("row is too big"), 1,601 more
    than a table may have: either way exit 2, one line saying what to do, no table, and with
    --replace the old table is kept."""
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(f"p{i}" for i in range(width)) + "\n" + ",".join(["0.5"] * width) + "\n")
    for args in ((), ("--replace",)):
        proc = run_cli("load", str(csv), "--table", "public.wide_kept", *args, env={"COLUMNS": "1000"})
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{width} columns do not fit" in proc.stderr and "array column" in proc.stderr, proc.stderr
        if not args:
            assert await conn.fetchval("SELECT to_regclass('public.wide_kept')") is None
            (tmp_path / "narrow.csv").write_text("a\n1\n")
            assert run_cli("load", str(tmp_path / "narrow.csv"), "--table", "public.wide_kept").returncode == 0
    assert await conn.fetchval("SELECT count(*) FROM public.wide_kept") == 1
    await conn.execute("DROP TABLE public.wide_kept")
