#!/usr/bin/env python3
"""Writes the benchmark data set's rows in the other formats Rota reads, for
benches/ingest.py.

Usage:
  pip install numpy polars pyarrow xlsxwriter python-calamine fastavro msgpack lxml pyyaml
  python3 ../shared/bench/gen_dataset.py --rows 1000000 --no-xlsx --out ./bench-data
  python3 benches/convert.py ./bench-data/data_1m.parquet [--out DIR] [--only avro,xml,...]

From data_1m.parquet (the shared generator's 12 columns) it writes, beside it
or into --out:
  data_1m.avro      Avro object container file, deflate blocks of about 64 KiB;
                    created_at a timestamp-micros long, description and
                    quantity unions with null
  data_1m.arrow     Arrow IPC file, uncompressed, record batches of 65 536 rows
  data_1m.arrows    Arrow IPC stream, the same batches
  data_1m.msgpack   MessagePack, a stream of maps (nil for nulls)
  data_1m.xml       <rows><row><id>1</id>…</row>…</rows>, one child element per
                    field (a null field is left out)
  data_1m.json      one top-level JSON array of objects
  data_200k.yaml    the first 200 000 rows as a stream of YAML documents, each
                    a sequence of 10 000 mappings (Rota reads YAML a document
                    at a time, and a document may be at most 64 MiB);
                    created_at a YAML timestamp. Fewer rows because PyYAML,
                    even with libyaml (CSafeLoader), reads about 4 000 rows/s:
                    1M rows would take minutes per run
  data_200k.toml    an array of tables [[rows]], the first 200 000 rows only:
                    Rota reads TOML whole and at most 64 MiB of it; created_at a
                    TOML local date-time, a null field left out
  data_200k.ods     an ODS spreadsheet of the first 200 000 rows (header row,
                    then one row per record; created_at a date cell, nulls
                    empty cells), written directly as its zip parts
  data_65k.xls      an XLS sheet of the first 65 535 rows (the BIFF8 limit is
                    65 536 rows); only when the xlwt package is installed
                    (pip install xlwt), else skipped with a note

Timestamps (second precision) are "YYYY-MM-DD HH:MM:SS" text, as in the
generator's CSV and NDJSON, wherever the format has no type of its own for
them (MessagePack, XML, JSON). The output depends only on the input: no
clocks, no random sync markers, no dictionary-order surprises.
"""
import argparse
import io
import json
import os
import re
import sys
import time
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ["id", "user_id", "amount", "score", "created_at", "country", "status",
           "name", "email", "description", "quantity", "is_active"]

# Rows read from the Parquet file at a time.
CHUNK = 100_000


def batches(path, limit=None):
    """The input's rows as lists of dicts (created_at a naive datetime), at
    most `limit` rows in all."""
    left = limit
    for b in pq.ParquetFile(path).iter_batches(batch_size=CHUNK, columns=COLUMNS):
        if left is not None:
            if left <= 0:
                return
            b = b.slice(0, left)
            left -= b.num_rows
        yield b.to_pylist()


def text_time(dt):
    """The generator's text form of a timestamp: YYYY-MM-DD HH:MM:SS."""
    return dt.isoformat(sep=" ")


def write_avro(src, dst):
    import fastavro

    schema = fastavro.parse_schema({
        "type": "record", "name": "row", "namespace": "rota.bench",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "user_id", "type": "long"},
            {"name": "amount", "type": "double"},
            {"name": "score", "type": "double"},
            {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "country", "type": "string"},
            {"name": "status", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "email", "type": "string"},
            {"name": "description", "type": ["null", "string"]},
            {"name": "quantity", "type": ["null", "int"]},
            {"name": "is_active", "type": "boolean"},
        ],
    })

    def records():
        # created_at as its microseconds since the epoch: exact, and free of
        # any time-zone reading of naive datetimes.
        for b in pq.ParquetFile(src).iter_batches(batch_size=CHUNK, columns=COLUMNS):
            micros = b.column("created_at").cast(pa.int64())
            b = b.set_column(4, "created_at", micros)
            yield from b.to_pylist()

    with open(dst, "wb") as f:
        fastavro.writer(f, schema, records(), codec="deflate", sync_interval=64 * 1024,
                        sync_marker=b"rota-bench-sync!")


def arrow_table(src):
    table = pq.read_table(src, columns=COLUMNS)
    # Plain (32-bit offset) strings, as most IPC writers make them.
    fields = [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
              for f in table.schema]
    return table.cast(pa.schema(fields))


def write_arrow_file(src, dst):
    table = arrow_table(src)
    with pa.OSFile(dst, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=65_536):
            w.write_batch(b)


def write_arrow_stream(src, dst):
    table = arrow_table(src)
    with pa.OSFile(dst, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=65_536):
            w.write_batch(b)


def write_msgpack(src, dst):
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)
    with open(dst, "wb") as f:
        for rows in batches(src):
            out = bytearray()
            for r in rows:
                r["created_at"] = text_time(r["created_at"])
                out += packer.pack(r)
            f.write(out)


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return xml_escape(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return text_time(v)


def write_xml(src, dst):
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<rows>\n')
        for rows in batches(src):
            parts = []
            for r in rows:
                parts.append("<row>")
                for k in COLUMNS:
                    v = r[k]
                    if v is not None:
                        parts.append(f"<{k}>{xml_value(v)}</{k}>")
                parts.append("</row>\n")
            f.write("".join(parts))
        f.write("</rows>\n")


def write_json(src, dst):
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        f.write("[\n")
        first = True
        for rows in batches(src):
            parts = []
            for r in rows:
                r["created_at"] = text_time(r["created_at"])
                parts.append(("" if first else ",\n") + dump(r))
                first = False
            f.write("".join(parts))
        f.write("\n]\n")


def write_yaml(src, dst, rows_wanted, per_document=10_000):
    import yaml

    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        for rows in batches(src, rows_wanted):
            docs = [rows[i:i + per_document] for i in range(0, len(rows), per_document)]
            yaml.dump_all(docs, f, Dumper=yaml.CSafeDumper, sort_keys=False,
                          allow_unicode=True, default_flow_style=False, explicit_start=True,
                          width=1 << 16)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # A JSON string is a TOML basic string (same escapes); DEL must be escaped too.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (int, float)):
        return repr(v)
    return v.isoformat(sep="T")


# Rota reads a TOML file whole, and at most its record size limit of it.
TOML_LIMIT = 64 << 20


def write_toml(src, dst, rows_wanted):
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        f.write("# The benchmark data set, one [[rows]] table per record.\n")
        for rows in batches(src, rows_wanted):
            parts = []
            for r in rows:
                parts.append("\n[[rows]]\n")
                for k in COLUMNS:
                    v = r[k]
                    if v is not None:
                        parts.append(f"{k} = {toml_value(v)}\n")
            f.write("".join(parts))
    size = os.path.getsize(dst)
    if size > TOML_LIMIT:
        sys.exit(f"{dst}: {size} bytes, more than Rota reads of a TOML file ({TOML_LIMIT}); "
                 "use fewer rows")


ODS_MIMETYPE = "application/vnd.oasis.opendocument.spreadsheet"
ODS_MANIFEST = f"""<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
 <manifest:file-entry manifest:full-path="/" manifest:version="1.2" manifest:media-type="{ODS_MIMETYPE}"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>
"""
ODS_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" \
xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" \
xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">
<office:body><office:spreadsheet><table:table table:name="data">
"""
ODS_TAIL = "</table:table></office:spreadsheet></office:body></office:document-content>\n"
SPACES = re.compile("  +")


def ods_text(s):
    """Cell text as paragraphs, runs of spaces kept with <text:s/>."""
    def para(p):
        p = xml_escape(p)
        p = SPACES.sub(lambda m: f' <text:s text:c="{len(m.group()) - 1}"/>', p)
        return f"<text:p>{p}</text:p>"
    return "".join(para(p) for p in s.split("\n"))


def ods_cell(v):
    if v is None:
        return "<table:table-cell/>"
    if isinstance(v, bool):
        t = "true" if v else "false"
        return (f'<table:table-cell office:value-type="boolean" office:boolean-value="{t}">'
                f"<text:p>{t.upper()}</text:p></table:table-cell>")
    if isinstance(v, (int, float)):
        return (f'<table:table-cell office:value-type="float" office:value="{v!r}">'
                f"<text:p>{v!r}</text:p></table:table-cell>")
    if isinstance(v, str):
        return f'<table:table-cell office:value-type="string">{ods_text(v)}</table:table-cell>'
    return (f'<table:table-cell office:value-type="date" office:date-value="{v.isoformat()}">'
            f"<text:p>{text_time(v)}</text:p></table:table-cell>")


def write_ods(src, dst, rows_wanted):
    # A fixed timestamp on every part keeps the file byte-for-byte the same.
    stamp = (2024, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(dst, "w") as z:
        # The mimetype comes first, stored uncompressed, as the format requires.
        z.writestr(zipfile.ZipInfo("mimetype", stamp), ODS_MIMETYPE, zipfile.ZIP_STORED)
        z.writestr(zipfile.ZipInfo("META-INF/manifest.xml", stamp), ODS_MANIFEST,
                   zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("content.xml", stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as f:
            f.write(ODS_HEAD)
            f.write("<table:table-row>" + "".join(ods_cell(k) for k in COLUMNS)
                    + "</table:table-row>\n")
            for rows in batches(src, rows_wanted):
                f.write("".join("<table:table-row>" + "".join(ods_cell(r[k]) for k in COLUMNS)
                                + "</table:table-row>\n" for r in rows))
            f.write(ODS_TAIL)


def write_xls(src, dst, rows_wanted):
    import xlwt

    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("data")
    when = xlwt.easyxf(num_format_str="yyyy-mm-dd hh:mm:ss")
    for c, k in enumerate(COLUMNS):
        sheet.write(0, c, k)
    n = 1
    for rows in batches(src, rows_wanted):
        for r in rows:
            for c, k in enumerate(COLUMNS):
                v = r[k]
                if v is None:
                    continue
                if k == "created_at":
                    sheet.write(n, c, v, when)
                else:
                    sheet.write(n, c, v)
            n += 1
        sheet.flush_row_data()
    book.save(dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parquet", help="the generator's data_1m.parquet")
    ap.add_argument("--out", help="output directory (default: the input's)")
    ap.add_argument("--only", help="comma-separated subset of: "
                    "avro,arrow,arrows,msgpack,xml,json,yaml,toml,ods,xls")
    a = ap.parse_args()
    out = a.out or os.path.dirname(os.path.abspath(a.parquet))
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)  # noqa: E731
    jobs = {
        "avro": (p("data_1m.avro"), lambda d: write_avro(a.parquet, d)),
        "arrow": (p("data_1m.arrow"), lambda d: write_arrow_file(a.parquet, d)),
        "arrows": (p("data_1m.arrows"), lambda d: write_arrow_stream(a.parquet, d)),
        "msgpack": (p("data_1m.msgpack"), lambda d: write_msgpack(a.parquet, d)),
        "xml": (p("data_1m.xml"), lambda d: write_xml(a.parquet, d)),
        "json": (p("data_1m.json"), lambda d: write_json(a.parquet, d)),
        "yaml": (p("data_200k.yaml"), lambda d: write_yaml(a.parquet, d, 200_000)),
        "toml": (p("data_200k.toml"), lambda d: write_toml(a.parquet, d, 200_000)),
        "ods": (p("data_200k.ods"), lambda d: write_ods(a.parquet, d, 200_000)),
        "xls": (p("data_65k.xls"), lambda d: write_xls(a.parquet, d, 65_535)),
    }
    only = a.only.split(",") if a.only else list(jobs)
    unknown = [k for k in only if k not in jobs]
    if unknown:
        sys.exit(f"unknown format(s): {', '.join(unknown)}")
    total = pq.ParquetFile(a.parquet).metadata.num_rows
    if total != 1_000_000:
        print(f"note: {a.parquet} has {total} rows; the names say 1m regardless", file=sys.stderr)
    for kind in only:
        dst, write = jobs[kind]
        if kind == "xls":
            try:
                import xlwt  # noqa: F401
            except ImportError:
                print(f"{dst}: skipped (pip install xlwt to write XLS)", flush=True)
                continue
        started = time.time()
        write(dst)
        print(f"{dst}: {os.path.getsize(dst) / 1e6:.1f} MB in {time.time() - started:.1f}s",
              flush=True)


if __name__ == "__main__":
    main()
