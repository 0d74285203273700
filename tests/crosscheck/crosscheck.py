#!/usr/bin/env python3
"""Independent cross-check: every valid fixture of every format, read by a
reader nobody in this project wrote, must give the rows `rota ingest` gives.

Usage:
  python3 tests/crosscheck/crosscheck.py ROTA_BINARY [FIXTURES_DIR]

The readers: Python's csv and json modules for CSV, TSV, NDJSON and JSON;
pyarrow for Arrow IPC and Parquet; the msgpack package for MessagePack;
fastavro for Avro; openpyxl for XLSX, xlrd for XLS and python-calamine for
ODS and XLSB; lxml for XML (walking the same record-path mapping); PyYAML for YAML;
Python's tomllib for TOML; the file system for raw files; Python's gzip, bz2 and lzma modules and
the zstandard package for the compressed fixtures (fixtures/compressed/,
whose inner format is their name without the compression suffix). Rota's rows come from `rota ingest
--payload ndjson` into a scratch store and `rota tasks payload`. Values are
compared after normalising what legitimately differs between type systems:
numbers by value, timestamps and dates as ISO text, decimals as numbers, a
missing field as null.
Exits 1 listing every mismatch; 0 when all fixtures agree.
"""
import csv
import datetime
import decimal
import io
import json
import math
import os
import subprocess
import sys
import tempfile

# Readers by format; each returns a list of dicts.


def read_delimited(path, opts, delimiter):
    header = opts.get("header", "true") in ("true", "yes", "1")
    delimiter = opts.get("delimiter", delimiter)
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    quote = opts.get("quote", '"')
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter, quotechar=quote) if r]
    if not rows:
        return []
    if header:
        names, rows = unique_names(rows[0]), rows[1:]
    else:
        names = [f"column_{i + 1}" for i in range(len(rows[0]))]
    return [dict(zip(names, r)) for r in rows]


def unique_names(header):
    """Column names by Rota's documented rule: an empty name is column_N, a
    repeated one gets the first free suffix _2, _3, ... (a later column's own
    name is not taken)."""
    names = [n if n else f"column_{i + 1}" for i, n in enumerate(header)]
    taken, out = set(), []
    for i, name in enumerate(names):
        unique, n = name, 2
        while unique in taken or (unique != name and unique in names[i + 1:]):
            unique, n = f"{name}_{n}", n + 1
        taken.add(unique)
        out.append(unique)
    return out


def read_ndjson(path, opts):
    with open(path, encoding="utf-8-sig") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path, opts):
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if not text.strip():
        return []
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


def read_arrow(path, opts):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"ARROW1":
        table = ipc.open_file(path).read_all()
    else:
        with pa.OSFile(path, "rb") as f:
            table = ipc.open_stream(f).read_all()
    return arrow_rows(table)


def arrow_rows(table):
    """A table's rows as Rota writes them: a map as an object keyed by its
    keys' text (pyarrow gives a list of pairs)."""
    import pyarrow as pa

    def plain(v, t):
        if v is None:
            return None
        if pa.types.is_map(t):
            return {str(k): plain(x, t.item_type) for k, x in v}
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return [plain(x, t.value_type) for x in v]
        if pa.types.is_struct(t):
            return {f.name: plain(v.get(f.name), f.type) for f in t}
        return v

    fields = table.schema
    return [{f.name: plain(r[f.name], f.type) for f in fields} for r in table.to_pylist()]


def read_msgpack(path, opts):
    import msgpack

    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return []
    first = data[0]
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        rows = msgpack.unpackb(data, raw=False, strict_map_key=False)
    else:
        rows = list(msgpack.Unpacker(io.BytesIO(data), raw=False, strict_map_key=False))
    # Rota writes binary values as hex text.
    def hexed(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, list):
            return [hexed(x) for x in v]
        if isinstance(v, dict):
            return {k: hexed(x) for k, x in v.items()}
        return v

    return [hexed(r) for r in rows]


def read_avro(path, opts):
    import uuid

    import fastavro

    # Rota writes binary values as hex text, and UUIDs in their text form.
    def plain(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    with open(path, "rb") as f:
        return [plain(r) for r in fastavro.reader(f)]


def header_name(v):
    """A header cell's text as Rota gives it: whole numbers without a
    fraction, booleans as JSON writes them, a date-time in ISO 8601 (an
    ODS date, stored as a date, as its date)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2 ** 53:
        return str(int(v))
    if isinstance(v, datetime.datetime):
        text = v.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{v.microsecond // 1000:03d}" if v.microsecond >= 1000 else "")
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v).strip()


def sheet_records(rows, opts):
    """Records from a sheet's rows (lists of cell values, None for empty),
    by the rules Rota documents: blank rows (no cell with a value; empty
    text and error cells have none) count for nothing; skip_rows rows are
    dropped, then the next row names the columns (a cell's text; empty
    names are column_N, repeats get _2, _3); columns past the header are
    column_N; dates are date-times at midnight."""
    rows = [r for r in rows if any(v is not None and v != "" for v in r)]
    rows = rows[int(opts.get("skip_rows", "0")):]
    header = opts.get("header", "true") in ("true", "yes", "1")
    names = []
    if header and rows:
        seen = set()
        for i, v in enumerate(rows[0]):
            base = header_name(v) if v not in (None, "") else ""
            base = base or f"column_{i + 1}"
            name, n = base, 2
            while name in seen:
                name, n = f"{base}_{n}", n + 1
            seen.add(name)
            names.append(name)
        rows = rows[1:]
    width = max([len(names)] + [len(r) for r in rows])
    names += [f"column_{i + 1}" for i in range(len(names), width)]

    def value(v):
        if isinstance(v, datetime.date) and not isinstance(v, datetime.datetime):
            return datetime.datetime.combine(v, datetime.time())
        return v

    return [{names[i]: (value(row[i]) if i < len(row) else None) for i in range(width)} for row in rows]


def pick(names, opts):
    wanted = opts.get("sheet")
    if wanted is None:
        return names[0]
    if wanted in names:
        return wanted
    return names[int(wanted) - 1]


def is_xlsb(path):
    import zipfile

    with zipfile.ZipFile(path) as z:
        return any(n.replace("\\", "/").lower() == "xl/workbook.bin" for n in z.namelist())


def read_xlsx(path, opts):
    """openpyxl; error cells (#N/A) hold no value. XLSB workbooks, which
    openpyxl does not read, through python-calamine."""
    import openpyxl

    if is_xlsb(path):
        return read_calamine(path, opts)
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    ws = wb[pick(wb.sheetnames, opts)]
    # Rows as long as their cells, not as the sheet's declared size (which
    # may claim every row and column there can be).
    ws.reset_dimensions()
    rows = [[None if c.value == "" or c.data_type == "e" else c.value for c in r] for r in ws.iter_rows()]
    return sheet_records(rows, opts)


def read_xls(path, opts):
    import xlrd

    book = xlrd.open_workbook(path)
    sheet = book.sheet_by_name(pick(book.sheet_names(), opts))
    rows = []
    for r in range(sheet.nrows):
        row = []
        for cell in sheet.row(r):
            if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                row.append(None)
            elif cell.ctype == xlrd.XL_CELL_DATE:
                row.append(xlrd.xldate.xldate_as_datetime(cell.value, book.datemode))
            elif cell.ctype == xlrd.XL_CELL_BOOLEAN:
                row.append(bool(cell.value))
            else:
                row.append(cell.value)
        rows.append(row)
    return sheet_records(rows, opts)


def read_calamine(path, opts):
    """python-calamine, for ODS and XLSB workbooks."""
    import python_calamine

    wb = python_calamine.CalamineWorkbook.from_path(path)
    sheet = wb.get_sheet_by_name(pick(wb.sheet_names, opts))
    rows = [[None if v == "" else v for v in r] for r in sheet.to_python(skip_empty_area=False)]
    return sheet_records(rows, opts)


def read_ods(path, opts):
    return read_calamine(path, opts)


def read_raw(path, opts):
    """The file as Rota's raw format describes it, from the file system."""
    st = os.stat(path)
    limit = int(opts.get("max_inline", str(1 << 20)))
    with open(path, "rb") as f:
        data = f.read()
    modified = datetime.datetime.fromtimestamp(st.st_mtime_ns // 1000 / 1e6, datetime.timezone.utc)
    micros = st.st_mtime_ns // 1000
    return [{
        "location": path,
        "path": os.path.basename(path),
        "size": len(data),
        "modified": modified.replace(microsecond=modified.microsecond // 1000 * 1000),
        "etag": f"{micros}-{st.st_size}",
        # Rota writes binary values as hex text.
        "content": data.hex() if len(data) <= limit else None,
    }]
def read_xml(path, opts):
    """The same mapping as Rota's XML format, walked with lxml: elements at
    the record path (local names, * for any), attributes as prefixed fields,
    children as fields (lists when repeated or named in lists=), own text
    under the text key."""
    from lxml import etree

    if os.path.getsize(path) == 0:
        return []
    prefix = opts.get("attribute_prefix", "@")
    text_key = opts.get("text_key", "#text")
    lists = {n.strip().rsplit(":", 1)[-1] for n in opts.get("lists", "").split(",") if n.strip()}
    steps = [s.rsplit(":", 1)[-1] for s in opts.get("record", "/*/*").strip("/").split("/")]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(path, parser).getroot()

    def local(tag):
        return etree.QName(tag).localname

    def add(fields, key, value):
        if key not in fields:
            fields[key] = value
        elif isinstance(fields[key], list):
            fields[key].append(value)
        else:
            fields[key] = [fields[key], value]

    def value(el, is_record):
        fields = {}
        for k, v in el.attrib.items():
            add(fields, prefix + local(k), v)
        children = [c for c in el if isinstance(c.tag, str)]
        text = (el.text or "") + "".join(c.tail or "" for c in el)
        if not fields and not children and not is_record:
            return text if text else None
        for c in children:
            name = local(c.tag)
            if name in lists and name not in fields:
                fields[name] = [value(c, False)]
            else:
                add(fields, name, value(c, False))
        if fields or children:
            text = text.strip()
        if text:
            add(fields, text_key, text)
        return fields

    def matches(el, step):
        return step == "*" or local(el.tag) == step

    level = [root] if matches(root, steps[0]) else []
    for step in steps[1:]:
        level = [c for el in level for c in el if isinstance(c.tag, str) and matches(c, step)]
    return [value(el, True) for el in level]


# Where the documents of YAML fixtures beyond PyYAML are written by hand.
YAML_12_EXPECTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yaml-1.2")


def read_yaml(path, opts):
    """Each document a mapping (a record) or a sequence of them, after
    following path=a.b; PyYAML's safe loader, with these rules:

    - plain scalars are resolved by the YAML 1.2 core schema (its regular
      expressions, below), as Rota does, not by PyYAML's YAML 1.1 ones
      (`yes` and `12:30` are text, `0o17` is 15, a date is text);
    - the non-specific tag `!` makes a scalar text (YAML 1.2; PyYAML
      resolves it as if untagged);
    - a value with an application's own tag (`!Ref x`) is the value;
    - Rota's documented rules for what JSON lacks: `!!binary` is hex text,
      `!!set` a mapping of its members to null, NaN and infinities null,
      and a key that is not text is named by its text (`null`, `true`, `12`);
    - a fixture of YAML 1.2 syntax that PyYAML (a YAML 1.1 parser) cannot
      read or reads wrongly has its documents written by hand, from the
      YAML 1.2 specification, as a stream of JSON values (one per document,
      as yaml-test-suite's in.json) in tests/crosscheck/yaml-1.2/NAME.json,
      which is read instead."""
    import base64
    import re

    import yaml

    steps = [k.strip() for k in opts["path"].split(".")] if opts.get("path") else []
    expected = os.path.join(YAML_12_EXPECTED, os.path.basename(path) + ".json")
    if os.path.exists(expected):
        with open(expected, encoding="utf-8") as f:
            text, docs, at = f.read(), [], 0
        decoder = json.JSONDecoder()
        while text[at:].strip():
            at += len(text[at:]) - len(text[at:].lstrip())
            doc, at = decoder.raw_decode(text, at)
            docs.append(doc)
    else:
        class Loader(yaml.SafeLoader):
            """The safe loader with YAML 1.2 core schema resolution."""

            def compose_scalar_node(self, anchor):
                event = self.peek_event()
                if event.tag == "!":
                    event.tag = "tag:yaml.org,2002:str"
                return super().compose_scalar_node(anchor)

        Loader.yaml_implicit_resolvers = {}
        core = [
            ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
            ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
            ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
            ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
                      r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", list("-+0123456789.")),
        ]
        for name, pattern, first in core:
            Loader.add_implicit_resolver(f"tag:yaml.org,2002:{name}",
                                         re.compile(f"^(?:{pattern})$"), first)

        def integer(loader, node):
            v = loader.construct_scalar(node)
            if v.startswith(("0o", "0x")):
                return int(v[2:], 8 if v[1] == "o" else 16)
            return int(v)

        def real(loader, node):
            v = loader.construct_scalar(node)
            if v.lower().lstrip("+-") in (".inf", ".nan"):
                return None
            return float(v)

        def untagged(loader, _suffix, node):
            if isinstance(node, yaml.MappingNode):
                return loader.construct_mapping(node, deep=True)
            if isinstance(node, yaml.SequenceNode):
                return loader.construct_sequence(node, deep=True)
            return loader.construct_scalar(node)

        Loader.add_constructor("tag:yaml.org,2002:int", integer)
        Loader.add_constructor("tag:yaml.org,2002:float", real)
        Loader.add_constructor("tag:yaml.org,2002:binary", lambda loader, node: base64.b64decode(
            "".join(loader.construct_scalar(node).split())).hex())
        Loader.add_constructor("tag:yaml.org,2002:set", lambda loader, node: {
            k: None for k in loader.construct_mapping(node, deep=True)})
        Loader.add_multi_constructor("!", untagged)
        with open(path, encoding="utf-8-sig") as f:
            docs = list(yaml.load_all(f, Loader=Loader))

    def named(v):
        """Keys as field names."""
        if isinstance(v, dict):
            return {json.dumps(k) if not isinstance(k, str) else k: named(x) for k, x in v.items()}
        if isinstance(v, list):
            return [named(x) for x in v]
        return v

    rows = []
    for doc in docs:
        for key in steps:
            doc = doc[key]
        if doc is None:
            continue
        rows += named(doc) if isinstance(doc, list) else [named(doc)]
    return rows


def read_toml(path, opts):
    """The array of tables (or table) at path=a.b, else the whole file as
    one record; Python's tomllib. Datetimes with an offset and times of day
    become text as TOML writes them, as Rota gives them."""
    import tomllib

    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        return []
    doc = tomllib.loads(data.decode("utf-8-sig"))
    if opts.get("path"):
        for key in opts["path"].split("."):
            doc = doc[key.strip()]

    def texted(v):
        if isinstance(v, datetime.datetime) and v.tzinfo is not None:
            return v.isoformat().replace("+00:00", "Z")
        if isinstance(v, datetime.time):
            return v.isoformat()
        if isinstance(v, list):
            return [texted(x) for x in v]
        if isinstance(v, dict):
            return {k: texted(x) for k, x in v.items()}
        return v

    if doc == {} and not opts.get("path"):
        # A file with no keys (only comments) holds no record.
        return []
    return [texted(r) for r in (doc if isinstance(doc, list) else [doc])]


def read_parquet(path, opts):
    import pyarrow.parquet as pq

    columns = opts.get("columns")
    columns = [c.strip() for c in columns.split(",")] if columns else None
    # INT96 timestamps as microseconds, as Rota reads them: nanoseconds
    # cannot hold dates past 2262.
    rows = arrow_rows(pq.read_table(path, columns=columns,
                                    coerce_int96_timestamp_unit="us"))

    # Rota writes binary values as hex text.
    def hexed(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, list):
            return [hexed(x) for x in v]
        if isinstance(v, dict):
            return {k: hexed(x) for k, x in v.items()}
        return v

    return [hexed(r) for r in rows]


READERS = {
    "csv": lambda p, o: read_delimited(p, o, ","),
    "tsv": lambda p, o: read_delimited(p, o, "\t"),
    "ndjson": read_ndjson,
    "json": read_json,
    "arrow": read_arrow,
    "parquet": read_parquet,
    "msgpack": read_msgpack,
    "avro": read_avro,
    "xlsx": read_xlsx,
    "xls": read_xls,
    "ods": read_ods,
    "raw": read_raw,
    "xml": read_xml,
    "yaml": read_yaml,
    "toml": read_toml,
}


def normalise(v):
    """One representation per value, whichever reader produced it."""
    if v is None or v == "":
        # CSV readers cannot tell an empty field from a missing one.
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) > 2**53:
        # Integers a float would round are compared exactly.
        return v
    if isinstance(v, (int, float, decimal.Decimal)):
        f = float(v)
        return None if math.isnan(f) else round(f, 9)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        # Durations are seconds.
        return round(v.total_seconds(), 3)
    if isinstance(v, str):
        t = v.strip()
        if t in ("true", "false"):
            return t == "true"
        if t.lstrip("-").isdigit() and abs(int(t)) > 2**53:
            return int(t)
        try:
            return round(float(t), 9)
        except ValueError:
            pass
        # Arrow's JSON writes timestamps as 2026-01-02T03:04:05Z, or
        # without the zone when they have none.
        if "T" in t:
            try:
                return datetime.datetime.fromisoformat(t.removesuffix("Z")).isoformat()
            except ValueError:
                pass
        return v
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, dict):
        # A field a record lacks is null in a table with a column for it.
        return {k: n for k, n in ((k, normalise(x)) for k, x in v.items()) if n is not None}
    return v


def rows_by_rota(rota, path, fmt, opts, work):
    store = os.path.join(work, "crosscheck.db")
    cmd = [rota, "--store", store, "ingest", path, "--spec", "crosscheck", "--format", fmt,
           "--payload", "ndjson", "--batch-rows", "1000000", "--json", "--quiet"]
    for k, v in opts.items():
        if k == "infer_records":
            cmd += ["--infer-rows", v]
        elif k == "schema":
            cmd += ["--schema", v]
        else:
            cmd += ["--format-opt", f"{k}={v}"]
    summary = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    listed = subprocess.run([rota, "--store", store, "tasks", "list", summary["job_id"], "--json"],
                            check=True, capture_output=True, text=True).stdout
    rows = []
    for line in listed.splitlines():
        task = json.loads(line)
        payload = subprocess.run([rota, "--store", store, "tasks", "payload", str(task["id"])],
                                 check=True, capture_output=True).stdout
        rows += [json.loads(l) for l in payload.decode("utf-8").splitlines() if l.strip()]
    return rows


def decompress(path):
    """The bytes of a compressed fixture, decompressed by Python's readers."""
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(f"{path}: not compressed data")


def compressed_fixtures(root):
    """(path, inner format, decompressed copy) of each compressed fixture."""
    folder = os.path.join(root, "compressed")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        stem = name
        for suffix in (".gz", ".gzip", ".zst", ".zstd", ".bz2", ".bzip2", ".xz"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        yield path, stem.rsplit(".", 1)[1], stem


def options_of(path):
    opts = {}
    if os.path.exists(path + ".opts"):
        with open(path + ".opts") as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    opts[k] = v
    return opts


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rota = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures")
    failures, checked = [], 0
    with tempfile.TemporaryDirectory() as work:
        for fmt, reader in READERS.items():
            folder = os.path.join(root, fmt)
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if not os.path.isfile(path) or name.endswith(".opts"):
                    continue
                opts = options_of(path)
                try:
                    want = [normalise(r) for r in reader(path, opts)]
                    got = [normalise(r) for r in rows_by_rota(rota, path, fmt, opts, work)]
                except subprocess.CalledProcessError as e:
                    failures.append(f"{fmt}/{name}: rota failed: {e.stderr}")
                    continue
                checked += 1
                if len(want) != len(got):
                    failures.append(f"{fmt}/{name}: {len(want)} rows by the reader, {len(got)} by rota")
                    continue
                for i, (w, g) in enumerate(zip(want, got)):
                    if w != g:
                        failures.append(f"{fmt}/{name}: row {i + 1} differs:\n  reader {w}\n  rota   {g}")
                        break
        for path, fmt, stem in compressed_fixtures(root):
            plain = os.path.join(work, "plain-" + stem)
            with open(plain, "wb") as f:
                f.write(decompress(path))
            try:
                want = [normalise(r) for r in READERS[fmt](plain, {})]
                got = [normalise(r) for r in rows_by_rota(rota, path, fmt, {}, work)]
            except subprocess.CalledProcessError as e:
                failures.append(f"compressed/{os.path.basename(path)}: rota failed: {e.stderr}")
                continue
            checked += 1
            if want != got:
                failures.append(f"compressed/{os.path.basename(path)}: rows differ from the "
                                f"decompressed file read by the {fmt} reader")
    for f in failures:
        print(f)
    print(f"{checked} fixtures checked, {len(failures)} mismatches")
    sys.exit(1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
