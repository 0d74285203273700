#!/usr/bin/env python3
"""Check `rota ingest` against the public test corpora of its formats.

Usage:
  python3 scripts/corpora.py ROTA_BINARY CORPORA_DIR [--corpus NAME ...] [--jobs N]
                             [--report OUT.json] [--verbose] [--match TEXT] [--decisions FILE]
  scripts/corpora.sh CORPORA_DIR [args]      (builds rota first, then runs this)

CORPORA_DIR holds parquet-testing, arrow-testing, JSONTestSuite, toml-test,
yaml-test-suite, calamine and csv-spectrum (see its README.md). Each file is
ingested as a careful new user would (`--format` from its extension or the
corpus's layout; XLSB is left to detection) into a fresh scratch store, with a
60 s timeout and its peak RSS measured; the payload (`--payload ndjson`) is
read back with `rota tasks payload`, and every line must be strict JSON (UTF-8,
no NaN/Infinity, no lone surrogates) and an object. See docs/corpora.md.

What rota should do comes from the corpus's own verdicts and expected data
where it has them (JSONTestSuite y_/n_/i_ with Python's json for the rows,
toml-test's tagged JSON, yaml-test-suite's in.json and error files,
csv-spectrum's json/), else from an independent reader run in a child process
(pyarrow, fastavro, openpyxl, xlrd, python-calamine; crosscheck.py's sheet
rules). Rows follow Rota's record model: a JSON document is an array of
objects or one object; a YAML document a mapping or a sequence of mappings (a
null document gives nothing); a TOML file one record; a sheet is its first
sheet, first row the header. A valid document outside the model must be refused.

Classes: agree (rows equal after normalising, or refused as it must be);
disagree (rows differ, or a must-refuse file was accepted); refused (rota
failed on a file the reference finds valid, or "either"); crash (a signal,
the timeout, an exit status other than 0/1, "panicked at" on stderr, peak RSS
over 512 MiB, or an invalid payload line). scripts/corpora-decisions.txt
(`corpus/relative/path<TAB>decision-id`) marks known differences as decided.
Exit status 1 when a crash, or an undecided disagree or refusal of a valid
file, remains.
"""
import argparse
import concurrent.futures
import datetime
import decimal
import importlib.util
import json
import math
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DECISIONS = os.path.join(HERE, "corpora-decisions.txt")
TIMEOUT = 60
RSS_LIMIT_KIB = 512 * 1024
ADDRESS_LIMIT_KIB = 8 * 1024 * 1024  # ulimit -v for rota, so a runaway cannot take the machine
CLASSES = ("agree", "disagree", "refused", "crash")
UNCOMPARED = "<not compared: the reference reader cannot read this type>"
SHEET_ERRORS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA"}

_spec = importlib.util.spec_from_file_location("crosscheck", os.path.join(HERE, "..", "tests", "crosscheck", "crosscheck.py"))
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)

# ---------------------------------------------------------------- values


class NotRecords(Exception):
    """A valid document that Rota's record model has no rows for."""


class Narrow(float):
    """A float32/float16 widened to a double: rota's shortest text of the
    narrow value (1.1 for 1.100000023841858) matches it."""

    def __new__(cls, value, bits):
        v = super().__new__(cls, value)
        v.bits = bits
        return v

    def __reduce__(self):
        return Narrow, (float(self), self.bits)


def narrowed(x, bits):
    code = "<f" if bits == 32 else "<e"
    try:
        return struct.unpack(code, struct.pack(code, float(x)))[0]
    except (OverflowError, struct.error):
        return None


def interval(months, days, nanoseconds):
    return {"months": int(months), "days": int(days), "nanoseconds": int(nanoseconds)}


EPOCH = datetime.datetime(1970, 1, 1)
UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def iso(dt, shift_years=0, frac=""):
    """ISO text of a naive datetime moved by whole 400-year cycles (the
    calendar repeats), for years outside Python's 1..9999: +52951-07-27T10:00:00."""
    year = dt.year + shift_years
    frac = frac.rstrip("0")
    return (f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}") + dt.isoformat()[4:] + (f".{frac}" if frac else "")


def ns_text(ns, with_date=True):
    secs, frac = divmod(ns, 10**9)
    if not with_date:
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}" + f".{frac:09d}".rstrip("0").rstrip(".")
    days, secs = divmod(secs, 86400)
    cycles, days = divmod(days, 146097)
    return iso(EPOCH + datetime.timedelta(days=days, seconds=secs), 400 * cycles, f"{frac:09d}")


def duration_text(seconds):
    """ISO 8601 text of a duration in (decimal) seconds: PT1.5S, -PT0.000000001S."""
    seconds = decimal.Decimal(seconds)
    return ("-" if seconds < 0 else "") + "PT" + format(abs(seconds).normalize(), "f") + "S"


# ---------------------------------------------------------------- references


def records(docs, null_is_nothing=True):
    rows = []
    for doc in docs:
        if doc is None and null_is_nothing:
            continue
        items = doc if isinstance(doc, list) else [doc]
        if not all(isinstance(r, dict) for r in items):
            raise NotRecords("a document that is not an object or a sequence of objects")
        rows += items
    return rows


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def json_docs(text):
    """The JSON values of a stream (yaml-test-suite's in.json)."""
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            return out
        value, i = dec.raw_decode(text, i)
        out.append(value)


def untag(v):
    """toml-test's tagged JSON as plain values (datetimes stay text)."""
    if isinstance(v, dict):
        if set(v) == {"type", "value"} and isinstance(v["value"], str):
            kind, s = v["type"], v["value"]
            return {"integer": int, "float": float, "bool": lambda s: s == "true"}.get(kind, str)(s)
        return {k: untag(x) for k, x in v.items()}
    return [untag(x) for x in v] if isinstance(v, list) else v


def arrow_values(arr):
    """Python values of an Arrow array, by type: timestamps, times, dates and
    durations as exact text, binary as hex (as Rota writes it), float32/16 as
    Narrow, maps as objects, a UUID as its text, dictionaries decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if isinstance(arr, pa.ChunkedArray):
        return [v for chunk in arr.chunks for v in arrow_values(chunk)]
    t = arr.type
    if pt.is_dictionary(t):
        return arrow_values(arr.dictionary_decode())
    if isinstance(t, pa.UuidType):
        return [None if v is None else str(v) for v in arr.to_pylist()]
    if isinstance(t, pa.BaseExtensionType):
        return arrow_values(arr.storage)
    if pt.is_run_end_encoded(t):
        return arrow_values(pc.run_end_decode(arr))
    valid = [True] * len(arr) if arr.null_count == 0 else arr.is_valid().to_pylist()

    def keep(values):
        return [v if ok else None for v, ok in zip(values, valid)]

    def ints():
        return arr.view(pa.int64() if t.bit_width == 64 else pa.int32()).to_pylist()

    if pt.is_timestamp(t) or pt.is_time(t):
        return keep([None if i is None else ns_text(i * UNIT_NS[t.unit], pt.is_timestamp(t)) for i in ints()])
    if pt.is_duration(t):
        scale = decimal.Decimal(UNIT_NS[t.unit]) / 10**9
        return keep([None if i is None else duration_text(i * scale) for i in ints()])
    if pt.is_date64(t):  # milliseconds; old writers put times of day in them: keep those
        return keep([None if i is None else ns_text(i * 10**6).removesuffix("T00:00:00") for i in ints()])
    if t.id == pa.lib.Type_INTERVAL_MONTH_DAY_NANO:
        return [None if v is None else interval(v.months, v.days, v.nanoseconds) for v in arr.to_pylist()]
    if pt.is_float32(t) or pt.is_float16(t):
        return [None if v is None else Narrow(float(v), 32 if pt.is_float32(t) else 16) for v in arr.to_pylist()]
    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t) or pt.is_binary_view(t):
        return [None if v is None else v.hex() for v in arr.to_pylist()]
    if pt.is_map(t):
        o, keys, items = arr.offsets.to_pylist(), arrow_values(arr.keys), arrow_values(arr.items)
        return keep([{str(k): x for k, x in zip(keys[o[i]:o[i + 1]], items[o[i]:o[i + 1]])} for i in range(len(arr))])
    if pt.is_list(t) or pt.is_large_list(t):
        o, child = arr.offsets.to_pylist(), arrow_values(arr.values)
        return keep([child[o[i]:o[i + 1]] for i in range(len(arr))])
    if pt.is_list_view(t) or pt.is_large_list_view(t):  # (pyarrow's cast of these to lists is wrong)
        child = arrow_values(arr.values)
        return keep([child[o:o + n] for o, n in zip(arr.offsets.to_pylist(), arr.sizes.to_pylist())])
    if pt.is_fixed_size_list(t):
        n, child = t.list_size, arrow_values(arr.values)
        return keep([child[(arr.offset + i) * n:(arr.offset + i + 1) * n] for i in range(len(arr))])
    if pt.is_struct(t):
        columns = [(t.field(i).name, arrow_values(c)) for i, c in enumerate(arr.flatten())]
        return keep([{name: values[i] for name, values in columns} for i in range(len(arr))])
    return arr.to_pylist()


SKIPPED = []  # columns the reference could not read, for the note


def table_rows(table):
    columns = []
    for i, name in enumerate(table.column_names):
        try:
            values = arrow_values(table.column(i))
        except (KeyError, NotImplementedError, OverflowError, ValueError) as e:
            SKIPPED.append(f"{name} ({table.schema.field(i).type}: {type(e).__name__})")
            values = [UNCOMPARED] * table.num_rows
        columns.append((name, values))
    return [{name: values[i] for name, values in columns} for i in range(table.num_rows)]


def read_avro(path):
    """fastavro's records, binary as hex and UUIDs as text (as Rota writes
    them), the logical types fastavro leaves raw (duration, nanosecond
    timestamps) decoded, and float32 values (a double that is exactly a
    float32 yet needs more than 9 digits) as Narrow."""
    import uuid

    import fastavro

    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        logical = {field["name"]: t["logicalType"] for field in reader.writer_schema.get("fields", [])
                   for t in (field["type"] if isinstance(field["type"], list) else [field["type"]])
                   if isinstance(t, dict) and t.get("logicalType")}
        rows = list(reader)

    def plain(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, float) and narrowed(v, 32) == v and len(repr(v)) > 11:
            return Narrow(v, 32)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v

    for r in rows:
        for name, lt in logical.items():
            v = r.get(name)
            if lt == "duration" and isinstance(v, bytes) and len(v) == 12:
                months, days, millis = struct.unpack("<III", v)
                r[name] = interval(months, days, millis * 10**6)
            elif lt in ("timestamp-nanos", "local-timestamp-nanos") and isinstance(v, int):
                r[name] = ns_text(v)
    return [plain(r) for r in rows]


def sheet_rows(kind, path):
    """The first sheet's rows as lists of cell values (None for empty)."""
    if kind == "xlsx":
        import openpyxl
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        ws = wb[wb.sheetnames[0]]
        # Rows as long as their cells, not the declared size (which may claim
        # every row and column there can be, and take gigabytes to honour).
        ws.reset_dimensions()
        return [[None if c.data_type == "e" else c.value for c in r] for r in ws.iter_rows()]
    if kind == "xls":
        import xlrd
        book = xlrd.open_workbook(path)
        sheet = book.sheet_by_index(0)

        def cell(c):
            if c.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                return None
            if c.ctype == xlrd.XL_CELL_DATE:
                return xlrd.xldate.xldate_as_datetime(c.value, book.datemode)
            return bool(c.value) if c.ctype == xlrd.XL_CELL_BOOLEAN else c.value
        return [[cell(c) for c in sheet.row(r)] for r in range(sheet.nrows)]
    import python_calamine  # ODS, and XLSB (which Rota does not document)
    return python_calamine.CalamineWorkbook.from_path(path).get_sheet_by_index(0).to_python(skip_empty_area=False)


def sheet_value(v):
    if v == "" or (isinstance(v, str) and v in SHEET_ERRORS):
        return None  # Rota documents error cells as null
    if isinstance(v, datetime.date) and not isinstance(v, datetime.datetime):
        return datetime.datetime.combine(v, datetime.time())  # dates are timestamps
    return v


def header_name(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # a header cell 1.0 names column "1"
    return v.isoformat() if isinstance(v, (datetime.date, datetime.time)) else v


def read_reference(kind, path):
    """Rows by an independent reader (in a child process: native code)."""
    if kind in ("parquet", "parquet-int96-us"):
        import pyarrow.parquet as pq
        return table_rows(pq.read_table(path, coerce_int96_timestamp_unit="us" if kind.endswith("-us") else "ns"))
    if kind == "arrow":
        import pyarrow as pa
        import pyarrow.ipc as ipc
        with open(path, "rb") as f:
            if f.read(6) == b"ARROW1":
                return table_rows(ipc.open_file(path).read_all())
        with pa.OSFile(path, "rb") as f:
            return table_rows(ipc.open_stream(f).read_all())
    if kind == "avro":
        return read_avro(path)
    raw = sheet_rows(kind, path)
    rows = [[sheet_value(v) for v in r] for r in raw]
    header = next((i for i, r in enumerate(rows) if any(v is not None for v in r)), None)
    if header is not None:
        rows[header] = [None if v is None else header_name(r) for v, r in zip(rows[header], raw[header])]
    return cc.sheet_records(rows, {})


def child_reference(kind, path):
    """(rows, error, note) of read_reference in a child process: a reader
    that crashes or hangs on a file counts as refusing it."""
    cmd = [sys.executable, os.path.abspath(__file__), "--reference-child", kind, path]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"reference reader timed out after {TIMEOUT}s", ""
    if p.returncode != 0 or not p.stdout:
        tail = (p.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
        return None, f"reference reader died (status {p.returncode}): {tail[:200]}", ""
    status, value, skipped = pickle.loads(p.stdout)
    note = f"; columns not compared: {', '.join(skipped)}" if skipped else ""
    return (value, None, note) if status == "ok" else (None, value, "")


def reference(case):
    """(expect, rows or None, note); expect is valid, refuse or either."""
    expect, kind, arg = case["expect"], case["ref"], case.get("arg")
    try:
        if kind is None:
            return expect, None, case["why"]
        if kind == "child":
            rows, error, skipped = child_reference(arg, case["path"])
            if error is not None:
                return case.get("if_reader_refuses", "either"), None, f"{arg} reader refuses: {error[:200]}"
            return expect, rows, f"{arg} reader" + (f"; {case['why']}" if case.get("why") else "") + skipped
        if kind == "json":
            with open(case["path"], "rb") as f:
                data = f.read()
            try:
                doc = json.loads(data, parse_constant=reject_constant)
            except (ValueError, UnicodeDecodeError) as e:
                if expect == "valid":
                    raise
                return expect, None, f"Python's json refuses: {str(e)[:120]}"
            return expect, records([doc], null_is_nothing=False), "Python's json"
        if kind == "pyyaml":
            import yaml
            try:
                with open(case["path"], encoding="utf-8-sig") as f:
                    docs = list(yaml.safe_load_all(f))
            except Exception as e:  # valid by the suite, beyond PyYAML
                return expect, None, f"no in.json; PyYAML fails ({type(e).__name__}): rows not compared"
            return expect, records(docs), "no in.json; PyYAML (YAML 1.1) rows"
        with open(arg, encoding="utf-8") as f:
            text = f.read()
        if kind == "yaml-json":
            return expect, records(json_docs(text)), "in.json"
        if kind == "toml-json":
            return expect, [untag(json.loads(text))], "toml-test JSON"
        return expect, json.loads(text), "csv-spectrum JSON"
    except NotRecords as e:
        return "refuse", None, f"valid, but {e}: Rota's model has no rows for it"


# ---------------------------------------------------------------- the corpora


def corpus_cases(corpus, root):
    """Every file of one corpus: dicts with path, rel, fmt, expect and how to
    get the reference (ref: None, child, json, pyyaml, yaml-json, toml-json, csv-json)."""
    top = os.path.join(root, corpus)
    if corpus == "toml-test":
        # Rota's toml crate follows TOML 1.1: an invalid/ file missing from the
        # 1.1 list is invalid in TOML 1.0 only (trailing commas in inline tables...).
        with open(os.path.join(top, "tests", "files-toml-1.1.0")) as f:
            toml_1_1 = {line.strip() for line in f}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)

            def case(fmt, expect, ref=None, arg=None, **extra):
                return dict(corpus=corpus, rel=rel, path=path, fmt=fmt, opts={}, expect=expect, ref=ref, arg=arg, **extra)
            if corpus == "parquet-testing":
                if rel.startswith("bad_data/") and name.endswith(".parquet"):
                    yield case("parquet", "refuse", why="bad_data/: corrupt by the corpus")
                elif name.endswith(".parquet.encrypted"):
                    yield case("parquet", "refuse", why="encrypted, and no key is given")
                elif rel == "data/int96_from_spark.parquet":  # its .md gives microseconds; as ns they overflow
                    yield case("parquet", "valid", "child", "parquet-int96-us", why="int96 as microseconds, per its .md")
                elif name.endswith(".parquet"):
                    yield case("parquet", "valid", "child", "parquet")
            elif corpus == "arrow-testing":
                if name.endswith((".stream", ".arrow_file")):
                    yield case("arrow", "valid", "child", "arrow")
                elif rel.startswith("data/arrow-ipc-file/clusterfuzz"):
                    yield case("arrow", "either", "child", "arrow", if_reader_refuses="refuse",
                               why="fuzzer regression file, usually invalid")
                elif name.endswith(".avro"):
                    yield case("avro", "valid", "child", "avro")
            elif corpus == "JSONTestSuite" and name.endswith(".json") and rel.startswith("test_"):
                if name.startswith("n_"):
                    yield case("json", "refuse", why="n_: must be refused")
                else:  # test_transform/ has no verdict: either
                    yield case("json", "valid" if name.startswith("y_") else "either", "json")
            elif corpus == "toml-test" and name.endswith(".toml") and rel.startswith("tests/"):
                if rel.startswith("tests/valid/"):
                    yield case("toml", "valid", "toml-json", path[:-5] + ".json")
                elif rel[len("tests/"):] in toml_1_1:
                    yield case("toml", "refuse", why="invalid/")
                else:
                    yield case("toml", "either", why="invalid in TOML 1.0 only")
            elif corpus == "yaml-test-suite" and name == "in.yaml":
                if os.path.exists(os.path.join(dirpath, "error")):
                    yield case("yaml", "refuse", why="error file")
                elif os.path.exists(os.path.join(dirpath, "in.json")):
                    yield case("yaml", "valid", "yaml-json", os.path.join(dirpath, "in.json"))
                else:
                    yield case("yaml", "valid", "pyyaml")
            elif corpus == "calamine" and rel.startswith("tests/"):
                ext = name.rsplit(".", 1)[-1].lower()
                if ext in ("xlsx", "xlsm", "xls", "ods"):
                    yield case("xls" if ext == "xls" else "ods" if ext == "ods" else "xlsx", "valid", "child",
                               "xlsx" if ext == "xlsm" else ext)
                elif ext == "xlsb":  # not a documented format: let rota detect it
                    yield case(None, "valid", "child", "xlsb")
            elif corpus == "csv-spectrum" and rel.startswith("csvs/") and name.endswith(".csv"):
                yield case("csv", "valid", "csv-json", os.path.join(top, "json", name[:-4] + ".json"))


CORPORA = ("parquet-testing", "arrow-testing", "JSONTestSuite", "toml-test", "yaml-test-suite", "calamine",
           "csv-spectrum")

# ---------------------------------------------------------------- comparison

INT_RE = re.compile(r"-?\d+")
NUM_RE = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
DATETIME_RE = re.compile(r"([+-]?\d{4,})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?"
                         r"\s*(Z|z|UTC|[+-]\d\d(?::?\d\d(?::?\d\d)?)?)?")
TIME_RE = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?")
DURATION_RE = re.compile(r"(-?)P(?:(\d+)D)?T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")
INTERVAL_PART = re.compile(r"(-?\d+(?:\.\d+)?) (years|mons|days|hours|mins|secs)")


def canonical_datetime(m):
    """A date-time as ISO text, in UTC when it has an offset; None when invalid."""
    y, mo, d, h, mi, s, frac, zone = m.groups()
    shift = (int(y) - 2000) // 400 * 400
    try:
        dt = datetime.datetime(int(y) - shift, int(mo), int(d), int(h), int(mi), int(s or 0))
        if zone and zone[0] in "+-":
            digits = zone[1:].replace(":", "")
            dt -= (-1 if zone[0] == "-" else 1) * datetime.timedelta(
                hours=int(digits[:2]), minutes=int(digits[2:4] or 0), seconds=int(digits[4:6] or 0))
    except (ValueError, OverflowError):
        return None
    return iso(dt, shift, frac or "")


def norm_text(v, loose):
    t = v.strip()
    if loose and t in ("", "true", "false"):
        return None if t == "" else t == "true"
    if loose and INT_RE.fullmatch(t):
        return int(t)
    if loose and NUM_RE.fullmatch(t):
        return decimal.Decimal(t)
    m = DATETIME_RE.fullmatch(t)
    if m and canonical_datetime(m):
        return canonical_datetime(m)
    m = TIME_RE.fullmatch(t)
    if m:
        frac = (m.group(4) or "").rstrip("0")
        return f"{m.group(1)}:{m.group(2)}:{m.group(3) or '00'}" + (f".{frac}" if frac else "")
    m = DURATION_RE.fullmatch(t)
    if m and t[-1] in "HMS":
        sign, d, h, mi, s = (decimal.Decimal(x or 0) for x in (m.group(1) + "1",) + m.groups()[1:])
        return duration_text(sign * (((d * 24 + h) * 60 + mi) * 60 + s))
    parts = INTERVAL_PART.findall(t)
    if parts and " ".join(f"{n} {u}" for n, u in parts) == t:  # Arrow's text of an interval
        n = {u: decimal.Decimal(x) for x, u in parts}
        secs = (n.get("hours", 0) * 60 + n.get("mins", 0)) * 60 + n.get("secs", 0)
        return interval(n.get("years", 0) * 12 + n.get("mons", 0), n.get("days", 0), secs * 10**9)
    return v


def norm(v, loose):
    """crosscheck.normalise's rules (a missing field is null, date-times as
    ISO text in UTC; and, when loose, for CSV and sheets whose readers cannot
    tell: empty text is null, "true" is true, numbers in text are numbers),
    except that numbers stay exact (ints as ints, numeric text as int or
    Decimal), date-times keep nanoseconds and any year, durations and
    intervals are canonical, and non-finite floats are null (as Rota writes them)."""
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return v if v.is_finite() else None
    if isinstance(v, str):
        return norm_text(v, loose)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return norm_text(v.isoformat(), loose)
    if isinstance(v, datetime.time):
        return norm_text(v.replace(tzinfo=None).isoformat(), loose)
    if isinstance(v, datetime.timedelta):
        return duration_text(decimal.Decimal(v.days * 86400 + v.seconds) + decimal.Decimal(v.microseconds) / 10**6)
    if isinstance(v, (list, tuple)):
        return [norm(x, loose) for x in v]
    if isinstance(v, dict):
        return {k: n for k, n in ((k, norm(x, loose)) for k, x in v.items()) if n is not None}
    return cc.normalise(v)


def same_number(a, b):
    """a (the reference) and b (rota, exact text as int or Decimal) are the
    same number: exactly; a double matches the text that parses to it; a
    Narrow matches a value that rounds to it."""
    if isinstance(a, Narrow) and narrowed(b, a.bits) == a:
        return True
    if isinstance(a, float) and isinstance(b, decimal.Decimal):
        return float(b) == a
    if isinstance(a, decimal.Decimal) and isinstance(b, float):
        return decimal.Decimal(repr(b)) == a
    return a == b  # ints, decimals and int/float compare exactly in Python


def first_diff(a, b, path=""):
    """(path, reference, rota) of the first difference, or None."""
    number = (int, float, decimal.Decimal)
    if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool) and not isinstance(b, bool):
        return None if same_number(a, b) else (path, a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) == UNCOMPARED:
                continue
            if k not in a or k not in b:
                return (f"{path}.{k}", a.get(k, "<missing>"), b.get(k, "<missing>"))
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None if len(a) == len(b) else (f"{path} (length {len(a)} vs {len(b)})", a, b)
    return None if type(a) is type(b) and a == b else (path, a, b)


def show(v, limit=160):
    def text(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {text(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(text(x) for x in v) + "]"
        if isinstance(v, (decimal.Decimal, float)) and not isinstance(v, bool):
            return str(v) if isinstance(v, decimal.Decimal) else repr(float(v))
        return json.dumps(v, ensure_ascii=False, default=str)
    s = text(v)
    return s if len(s) <= limit else s[:limit] + "…"


def compare(want, got, loose):
    """None when the rows agree, else (a one-line description, details)."""
    want, got = [norm(r, loose) for r in want], [norm(r, loose) for r in got]
    for i, (w, g) in enumerate(zip(want, got)):
        d = first_diff(w, g)
        if d:
            field = d[0].lstrip(".") or "(row)"
            return (f"row {i + 1} of {len(want)}/{len(got)}, {field}: reference {show(d[1], 120)} vs rota {show(d[2], 120)}",
                    {"row": i, "field": field, "reference_row": show(w, 400), "rota_row": show(g, 400)})
    if len(want) == len(got):
        return None
    i = min(len(want), len(got))
    side, rows = ("reference", want) if len(want) > len(got) else ("rota", got)
    return (f"{len(want)} rows by the reference, {len(got)} by rota; first extra ({side}): {show(rows[i], 200)}",
            {"row": i, "field": None, "reference_row": show(want[i], 400) if i < len(want) else None,
             "rota_row": show(got[i], 400) if i < len(got) else None})


# ---------------------------------------------------------------- running rota


def run(cmd, workdir, name):
    """cmd with output to files: (exit code or -signal, timed out, peak RSS KiB, stdout, stderr)."""
    out_path, err_path = os.path.join(workdir, name + ".out"), os.path.join(workdir, name + ".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.Popen(["/bin/sh", "-c", f'ulimit -v {ADDRESS_LIMIT_KIB} && exec "$0" "$@"'] + cmd,
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    state, lock = {"done": False, "timed_out": False}, threading.Lock()

    def kill():
        with lock:
            if not state["done"]:
                state["timed_out"] = True
                os.killpg(p.pid, signal.SIGKILL)

    timer = threading.Timer(TIMEOUT, kill)
    timer.start()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited but not reaped: the pid is still ours
    with lock:
        state["done"] = True
    timer.cancel()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = code = os.waitstatus_to_exitcode(status)
    with open(out_path, "rb") as out, open(err_path, "rb") as err:
        return code, state["timed_out"], usage.ru_maxrss, out.read(), err.read().decode("utf-8", "replace")


def payload_rows(data):
    """(rows, problem): the records of an NDJSON payload, numbers exactly as
    written (Decimal), or why it is not strict JSON objects in UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 at byte {e.start}"
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_constant=reject_constant, parse_float=decimal.Decimal)
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")  # lone surrogates fail here
        except (ValueError, UnicodeEncodeError) as e:
            return None, f"line {n}: {str(e)[:120]}: {line[:120]!r}"
        if not isinstance(value, dict):
            return None, f"line {n} is not an object: {line[:80]!r}"
        rows.append(value)
    return rows, None


def rota_rows(rota, case, workdir):
    """What rota makes of the file: exit, timed_out, rss_kib, accepted, rows, error, crash."""
    store = os.path.join(workdir, "db")
    cmd = [rota, "--store", store, "ingest", case["path"], "--spec", "corpora"]
    cmd += ["--format", case["fmt"]] if case["fmt"] else []
    cmd += [a for k, v in case["opts"].items() for a in ("--format-opt", f"{k}={v}")]
    code, timed_out, rss, stdout, stderr = run(cmd + ["--payload", "ndjson", "--batch-rows", "1000000", "--json",
                                                      "--quiet"], workdir, "ingest")
    got = {"exit": code, "timed_out": timed_out, "rss_kib": rss, "accepted": False, "rows": None, "error": None,
           "stderr": stderr}
    crash = [f"timed out after {TIMEOUT}s" if timed_out else f"killed by signal {signal.Signals(-code).name}"
             if code < 0 else f"exit status {code}"] if timed_out or code not in (0, 1) else []
    if "panicked at" in stderr:
        crash.append("panicked: " + one_line(stderr[stderr.index("panicked at"):])[:200])
    if rss > RSS_LIMIT_KIB:
        crash.append(f"peak RSS {rss // 1024} MiB")
    summary = None
    if code == 0:
        try:
            summary = json.loads(stdout)
        except ValueError:
            crash.append(f"the ingest summary is not JSON: {stdout[:100]!r}")
    if code != 0 or summary is None or summary.get("files_failed"):
        got["error"] = stderr.strip()[:300] if code != 0 else json.dumps((summary or {}).get("failed_files"))[:300]
        got["crash"] = "; ".join(crash) or None
        return got
    rows = []
    code, _, _, listed, err = run([rota, "--store", store, "tasks", "list", summary["job_id"], "--limit", "100000",
                                   "--json"], workdir, "list")
    if code != 0:
        crash.append(f"tasks list failed ({code}): {one_line(err)[:150]}")
    for line in listed.decode("utf-8", "replace").splitlines() if code == 0 else []:
        task = json.loads(line)
        code, _, _, payload, err = run([rota, "--store", store, "tasks", "payload", str(task["id"])], workdir, "payload")
        if code != 0 or "panicked at" in err:
            crash.append(f"tasks payload {task['id']} failed ({code}): {one_line(err)[:150]}")
            break
        more, problem = payload_rows(payload)
        if problem:
            crash.append(f"invalid payload: {problem}")
            break
        rows += more
    got.update(accepted=True, rows=rows, crash="; ".join(crash) or None)
    return got


def one_line(text):
    return " ".join((text or "").split())[:300]


def check(rota, case):
    started = time.monotonic()
    try:
        expect, want, note = reference(case)
    except Exception as e:  # a reference this script cannot compute: never an agreement
        expect, want, note = case["expect"], None, f"REFERENCE ERROR {type(e).__name__}: {e}"
    with tempfile.TemporaryDirectory(prefix="rota-corpora-") as work:
        got = rota_rows(rota, case, work)
    result = {k: case[k] for k in ("corpus", "rel", "fmt", "opts")}
    result.update(expect=expect, reference=note, reference_rows=None if want is None else len(want),
                  exit=got["exit"], timed_out=got["timed_out"], peak_rss_kib=got["rss_kib"],
                  rota_rows=None if got["rows"] is None else len(got["rows"]), diff=None, error=got["error"],
                  names_file=None if got["error"] is None else (
                      case["path"] in got["stderr"] or os.path.basename(case["path"]) in got["stderr"]))
    if got["crash"]:
        cls, reason = "crash", got["crash"]
    elif note.startswith("REFERENCE ERROR"):
        cls, reason = "disagree", note
    elif not got["accepted"]:
        cls, reason = ("agree", f"refused as it must be ({note})") if expect == "refuse" else (
            "refused", f"{expect} by {note}; rota: {one_line(got['error'])}")
    elif expect == "refuse":
        first = f"; first row {show(got['rows'][0], 120)}" if got["rows"] else ""
        cls, reason = "disagree", f"accepted ({len(got['rows'])} rows) a file that must be refused ({note}){first}"
    elif want is None:
        cls, reason = "agree", f"accepted, {len(got['rows'])} rows; {expect}, rows not compared ({note})"
    else:
        diff = compare(want, got["rows"], loose=case["fmt"] in ("csv", "xlsx", "xls", "ods", None))
        cls, reason = ("agree", f"{len(want)} rows equal ({note})") if diff is None else ("disagree", f"{diff[0]} ({note})")
        result["diff"] = diff and diff[1]
    result.update({"class": cls, "reason": reason, "seconds": round(time.monotonic() - started, 2)})
    return result


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--reference-child":
        out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)  # readers that print (xlrd's warnings) must not spoil the pickle
        try:
            value = ("ok", read_reference(sys.argv[2], sys.argv[3]), SKIPPED)
        except Exception as e:
            value = ("error", f"{type(e).__name__}: {e}", [])
        out.write(pickle.dumps(value))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rota")
    ap.add_argument("corpora")
    ap.add_argument("--corpus", action="append", choices=CORPORA, help="only this corpus (repeatable)")
    ap.add_argument("--match", help="only files whose corpus/relative path contains this text")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report", help="write every result as JSON to this file")
    ap.add_argument("--decisions", default=DECISIONS)
    ap.add_argument("--verbose", action="store_true", help="print each file as it is checked")
    args = ap.parse_args()
    rota, root = os.path.abspath(args.rota), os.path.abspath(args.corpora)
    decided = {}
    if os.path.exists(args.decisions):
        with open(args.decisions, encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    file, _, decision = line.rstrip("\n").partition("\t")
                    decided[file.strip()] = decision.strip()
    cases = [c for name in (args.corpus or CORPORA) for c in corpus_cases(name, root)
             if not args.match or args.match in f"{c['corpus']}/{c['rel']}"]
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n, future in enumerate(concurrent.futures.as_completed([pool.submit(check, rota, c) for c in cases]), 1):
            r = future.result()
            r["decided"] = decided.get(f"{r['corpus']}/{r['rel']}")
            results.append(r)
            if args.verbose:
                print(f"[{n}/{len(cases)}] {r['class']:<8} {r['corpus']}/{r['rel']}: {r['reason'][:160]}", flush=True)
    results.sort(key=lambda r: (r["corpus"], r["rel"]))
    columns = CLASSES + ("total",)
    counts = {}
    for r in results:
        row = counts.setdefault(r["corpus"], dict.fromkeys(columns, 0))
        row[r["class"]] += 1
        row["total"] += 1
    counts["total"] = {k: sum(c[k] for c in counts.values()) for k in columns}
    print(f"{'corpus':<18}" + "".join(f"{k:>10}" for k in columns))
    for name, row in counts.items():
        print(f"{name:<18}" + "".join(f"{row[k]:>10}" for k in columns))
    blocking = 0
    for r in results:
        if r["class"] != "agree":
            r["blocking"] = r["class"] == "crash" or not r["decided"] and (
                r["class"] == "disagree" or r["expect"] == "valid")
            blocking += r["blocking"]
            tag = f" [decided: {r['decided']}]" if r["decided"] else ""
            print(f"{r['class'].upper():<8} {r['corpus']}/{r['rel']}{tag}: {r['reason']}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"rota": rota, "corpora": root, "counts": counts, "blocking": blocking, "files": results},
                      f, indent=1, default=str, ensure_ascii=False)
    print(f"{len(results)} files, {blocking} blocking (a crash, or an undecided disagree or refusal of a valid file)")
    return 1 if blocking else 0


if __name__ == "__main__":
    sys.exit(main())
