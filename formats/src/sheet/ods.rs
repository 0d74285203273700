//! A pass over an ODS workbook's `content.xml` before `calamine` loads it,
//! counting what that reader would hold: it loads every sheet at once, each
//! first as the cells of its row elements (a cell repeated N times is N
//! cells, up to 16384 in a row), then as a grid from the first to the last
//! non-empty cell with repeated rows written out; and it writes out `<text:s
//! text:c="N"/>` as N spaces. A few bytes of XML can ask for gigabytes of
//! either, so the sheets together are held to the cell budget, and the
//! spaces to the part size limit, before the reader starts.

use std::io::{BufReader, Read, Seek};

use quick_xml::events::{BytesStart, Event};

/// The reader's caps: rows of a sheet, and cells of a row element.
const MAX_ROWS: u64 = 1_048_576;
const MAX_COLUMNS: u64 = 16_384;

/// What the pass refuses.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Problem {
    /// Too much: the part of the workbook (`sheet 'Data'`), and how.
    TooLarge(String, String),
    /// The content is not readable XML; says why.
    Unreadable(String),
}

/// Counts of one sheet.
#[derive(Default)]
struct Sheet {
    name: String,
    /// Cells of its row elements, as the reader stores them.
    cells: u64,
    /// Rows so far, repeats included (capped as the reader caps them).
    rows: u64,
    /// First and last non-empty row (in rows so far, repeats included:
    /// start of the first, end of the last) and column.
    first_row: Option<u64>,
    last_row: u64,
    first_col: u64,
    last_col: u64,
}

/// The row element being read.
#[derive(Default)]
struct Row {
    repeats: u64,
    /// Cells stored so far, and empty ones waiting for a value after them.
    stored: u64,
    pending: u64,
    first_col: Option<u64>,
    last_col: u64,
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| a.value.into_owned())
}

fn count(e: &BytesStart<'_>, key: &str) -> u64 {
    attr(e, key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
}

/// Whether the reader takes the cell `e` for one with a value (or formula).
fn has_value(e: &BytesStart<'_>) -> bool {
    e.attributes().flatten().any(|a| match a.key.as_ref() {
        "office:value"
        | "office:string-value"
        | "office:date-value"
        | "office:time-value"
        | "office:boolean-value" => true,
        "office:value-type" => a.value.as_ref() == "string",
        "table:formula" => !a.value.is_empty(),
        _ => false,
    })
}

/// Checks `content.xml` of the zipped workbook `zip`: the sheets together
/// may hold and span at most `max_cells` cells, and its spaces written
/// out come to at most `max_spaces` bytes.
pub(super) fn check<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    max_cells: u64,
    max_spaces: u64,
) -> Result<(), Problem> {
    let Ok(part) = zip.by_name("content.xml") else {
        return Ok(()); // the reader says what is missing
    };
    let mut xml = quick_xml::Reader::from_reader(BufReader::new(part));
    xml.config_mut().check_end_names = false;
    let mut buf = Vec::new();
    let mut sheet: Option<Sheet> = None;
    let mut row: Option<Row> = None;
    // Depth inside a cell's content, which the reader skips but for text.
    let mut in_cell = 0usize;
    let (mut total, mut spaces) = (0u64, 0u64);
    loop {
        buf.clear();
        let event = xml
            .read_event_into(&mut buf)
            .map_err(|e| Problem::Unreadable(format!("content.xml is not well-formed XML: {e}")))?;
        let (start, end) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(_) => (None, true),
            Event::Eof => break,
            _ => continue,
        };
        if let Some(e) = start {
            let name = e.name();
            let name = name.as_ref();
            if in_cell > 0 {
                in_cell += 1;
                if name == "text:s" {
                    spaces = spaces.saturating_add(count(e, "text:c"));
                    if spaces > max_spaces {
                        return Err(Problem::TooLarge(
                            "part content.xml".into(),
                            format!(
                                "its repeated spaces (<text:s text:c=\"N\"/>) come to more \
                                 than {} MiB of text, which the reader would write out",
                                max_spaces >> 20
                            ),
                        ));
                    }
                }
            } else if let Some(r) = row.as_mut()
                && (name == "table:table-cell" || name == "table:covered-table-cell")
            {
                let repeats = count(e, "table:number-columns-repeated");
                r.stored += r.pending.min(MAX_COLUMNS.saturating_sub(r.stored));
                r.pending = 0;
                let repeats = repeats.min(MAX_COLUMNS.saturating_sub(r.stored));
                if has_value(e) {
                    if repeats > 0 {
                        r.first_col.get_or_insert(r.stored);
                        r.last_col = r.stored + repeats - 1;
                    }
                    r.stored += repeats;
                } else {
                    r.pending = repeats;
                }
                in_cell = 1;
            } else if let Some(s) = sheet.as_ref()
                && row.is_none()
                && name == "table:table-row"
            {
                let repeats = count(e, "table:number-rows-repeated");
                row = Some(Row {
                    repeats: repeats.min(MAX_ROWS.saturating_sub(s.rows)),
                    ..Row::default()
                });
            } else if sheet.is_none() && name == "table:table" {
                sheet = Some(Sheet {
                    name: attr(e, "table:name").unwrap_or_default(),
                    first_col: u64::MAX,
                    ..Sheet::default()
                });
            }
        }
        if !end {
            continue;
        }
        // The end of the element just opened (if empty) or of an open one.
        if in_cell > 0 {
            in_cell -= 1;
            continue;
        }
        let name = match &event {
            Event::End(e) => e.name().as_ref().to_owned(),
            Event::Empty(e) => e.name().as_ref().to_owned(),
            _ => continue,
        };
        if name == "table:table-row"
            && let (Some(r), Some(s)) = (row.take(), sheet.as_mut())
        {
            s.cells += r.stored;
            if let Some(first) = r.first_col {
                s.first_row.get_or_insert(s.rows);
                s.last_row = s.rows + r.repeats.max(1) - 1;
                s.first_col = s.first_col.min(first);
                s.last_col = s.last_col.max(r.last_col);
            }
            s.rows += r.repeats;
            if total.saturating_add(s.cells) > max_cells {
                return Err(too_large(s, s.cells, max_cells, "holds at least"));
            }
        } else if name == "table:table"
            && let Some(s) = sheet.take()
        {
            let grid = s.first_row.map_or(0, |first| {
                (s.last_row + 1 - first).saturating_mul(s.last_col + 1 - s.first_col)
            });
            total = total.saturating_add(s.cells).saturating_add(grid);
            if total > max_cells {
                return Err(too_large(&s, grid, max_cells, "spans"));
            }
        }
    }
    Ok(())
}

fn too_large(s: &Sheet, cells: u64, max_cells: u64, verb: &str) -> Problem {
    Problem::TooLarge(
        format!("sheet '{}'", s.name),
        format!(
            "the sheet {verb} {cells} cells (repeated rows and cells counted each time), which \
             brings the workbook's sheets to more than max_cells ({max_cells}); an ODS workbook \
             is loaded whole, every sheet at once: raise max_cells to read it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn ods(content: &str) -> zip::ZipArchive<Cursor<Vec<u8>>> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("content.xml", zip::write::SimpleFileOptions::default())
            .expect("start");
        w.write_all(content.as_bytes()).expect("write");
        zip::ZipArchive::new(w.finish().expect("finish")).expect("zip")
    }

    fn table(rows: &str) -> String {
        format!(
            "<office:document-content><table:table table:name=\"S\">{rows}</table:table></office:document-content>"
        )
    }

    const CELL: &str = "<table:table-cell office:value-type=\"float\" office:value=\"1\"/>";

    #[test]
    fn ordinary_sheets_pass() {
        let rows = format!("<table:table-row>{CELL}{CELL}</table:table-row>").repeat(3);
        assert_eq!(check(&mut ods(&table(&rows)), 100, 1 << 20), Ok(()));
    }

    #[test]
    fn repeated_cells_count_each_time() {
        let rows = "<table:table-row><table:table-cell office:value-type=\"float\" \
                    office:value=\"1\" table:number-columns-repeated=\"16384\"/></table:table-row>"
            .repeat(10);
        let err = check(&mut ods(&table(&rows)), 100_000, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Problem::TooLarge(p, m) if p == "sheet 'S'" && m.contains("holds at least"))
        );
        assert_eq!(check(&mut ods(&table(&rows)), 400_000, 1 << 20), Ok(()));
    }

    #[test]
    fn far_apart_cells_span_a_grid_and_styled_empty_cells_do_not() {
        let rows = format!(
            "<table:table-row>{CELL}</table:table-row>\
             <table:table-row table:number-rows-repeated=\"1000000\">\
             <table:table-cell table:style-name=\"ce1\" table:number-columns-repeated=\"16000\"/>\
             </table:table-row>\
             <table:table-row><table:table-cell table:number-columns-repeated=\"99\"/>{CELL}</table:table-row>"
        );
        let err = check(&mut ods(&table(&rows)), 1_000_000, 1 << 20).unwrap_err();
        assert!(matches!(err, Problem::TooLarge(_, m) if m.contains("spans 100000200 cells")));
        let rows = format!(
            "<table:table-row>{CELL}</table:table-row>\
             <table:table-row table:number-rows-repeated=\"1000000\">\
             <table:table-cell table:number-columns-repeated=\"16000\"/></table:table-row>"
        );
        assert_eq!(check(&mut ods(&table(&rows)), 1000, 1 << 20), Ok(()));
    }

    #[test]
    fn repeated_spaces_are_held_to_the_limit() {
        let rows = "<table:table-row><table:table-cell office:value-type=\"string\">\
                    <text:p>a<text:s text:c=\"4000000000\"/>b</text:p></table:table-cell>\
                    </table:table-row>";
        let err = check(&mut ods(&table(rows)), 100, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Problem::TooLarge(p, m) if p == "part content.xml" && m.contains("repeated spaces"))
        );
    }
}
