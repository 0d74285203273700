//! A structural check of an XLS workbook before `calamine` loads it. It
//! walks the OLE compound file the way that reader does — the same sectors,
//! the same stream (the first entry named `Workbook`, else `Book`, in any
//! case), a short last sector read as far as it goes — so that it accepts
//! what the reader accepts, and refuses what would make the reader run away:
//! a sector chain that loops (the reader collects sectors until memory runs
//! out), an allocation table larger than the file, and sheets whose cells
//! span more than the cell budget (the reader lays every sheet of the
//! workbook out as a grid from its first to its last cell, all at once).
//!
//! A sheet's DIMENSIONS record is trusted by the reader to reserve memory
//! for that many cells; a record that declares more than the budget is not
//! refused (the cells are counted instead) but overwritten, in the bytes the
//! reader is given, with a one-cell range: see [`Check::patches`].

use std::sync::Arc;

use rota_core::source::ReadAt;

/// Marks the end of a chain; larger values mark free or special sectors.
const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
/// Ids from here on are not sectors.
const RESERVED: u32 = 0xFFFF_FFFA;
/// DIFAT entries below this name sectors of the allocation table.
const DIFSECT: u32 = 0xFFFF_FFFC;
/// Streams shorter than this live in mini sectors (as the reader has it).
const MINI_CUTOFF: usize = 4096;
const MINI_SECTOR: usize = 64;

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Why a workbook is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The file is not a sound compound file or workbook; says what.
    Unreadable(String),
    /// The workbook is encrypted with a password.
    Encrypted,
    /// The sheets span more cells than the budget: the sheet that brings
    /// them past it (by name), and how.
    TooLarge(String, String),
}

/// What the check found: bytes to overwrite before the reader sees them.
#[derive(Debug, Default)]
pub(crate) struct Check {
    /// `(file offset, bytes)` to put in place of the file's own.
    pub(crate) patches: Vec<(u64, Vec<u8>)>,
}

/// Checks the workbook behind `input`, whose sheets may span at most
/// `max_cells` cells together (the reader holds them all at once).
pub(crate) fn check(input: &dyn ReadAt, max_cells: u64) -> Result<Check, Problem> {
    let file = Compound::open(input).map_err(Problem::Unreadable)?;
    if file.find("EncryptedPackage").is_some() {
        return Err(Problem::Encrypted);
    }
    let stream = match file.stream(input, "Workbook") {
        Some(Ok(s)) => Ok(s),
        // The reader tries `Book` when `Workbook` is missing or unreadable.
        other => match (file.stream(input, "Book"), other) {
            (Some(s), _) => s,
            (None, Some(e)) => e,
            (None, None) => Err("the file holds no workbook stream".to_owned()),
        },
    }
    .map_err(Problem::Unreadable)?;
    let mut check = Check::default();
    check_sheets(&stream, max_cells, &mut check)?;
    Ok(check)
}

/// Random access to `input` with the check's patches applied.
#[derive(Debug)]
pub(crate) struct Patched {
    input: Arc<dyn ReadAt>,
    patches: Vec<(u64, Vec<u8>)>,
}

impl Patched {
    pub(crate) fn new(input: Arc<dyn ReadAt>, patches: Vec<(u64, Vec<u8>)>) -> Self {
        Self { input, patches }
    }
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.input.size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.input.read_exact_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let p = at + i as u64;
                if (offset..end).contains(&p) {
                    buf[usize::try_from(p - offset).unwrap_or(0)] = *b;
                }
            }
        }
        Ok(())
    }
}

/// A stream's bytes, and where each run of them lies in the file.
struct Stream {
    bytes: Vec<u8>,
    /// `(file offset, length)` of each run, in stream order.
    runs: Vec<(u64, usize)>,
}

impl Stream {
    /// The file offset of stream byte `at`.
    fn file_offset(&self, mut at: usize) -> Option<u64> {
        for &(offset, len) in &self.runs {
            if at < len {
                return Some(offset + at as u64);
            }
            at -= len;
        }
        None
    }
}

/// A directory entry: its name, first sector and length.
struct Entry {
    name: String,
    start: u32,
    len: u64,
}

/// The parts of a compound file needed to read its streams.
struct Compound {
    sector: usize,
    size: u64,
    fat: Vec<u32>,
    mini_fat: Vec<u32>,
    /// The mini stream (the root entry's), where short streams live.
    mini: Option<Stream>,
    entries: Vec<Entry>,
}

impl Compound {
    fn open(input: &dyn ReadAt) -> Result<Self, String> {
        let size = input.size();
        let mut header = [0u8; 512];
        input
            .read_exact_at(0, &mut header)
            .map_err(|_| "the file is shorter than a compound file header".to_owned())?;
        if header[..8] != [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1] {
            return Err("it is not an OLE compound file (its magic number is missing)".into());
        }
        let sector = match u16_at(&header, 0x1E) {
            9 => 512,
            12 => 4096,
            shift => return Err(format!("its sector size 2^{shift} is neither 512 nor 4096")),
        };
        if u16_at(&header, 0x20) != 6 {
            return Err("its mini sectors are not 64 bytes".into());
        }
        if size < sector as u64 {
            return Err("the file is shorter than its header sector".into());
        }
        let mut file = Self {
            sector,
            size,
            fat: Vec::new(),
            mini_fat: Vec::new(),
            mini: None,
            entries: Vec::new(),
        };
        let max_sectors = size / sector as u64 + 1;
        // The sectors of the allocation table: 109 in the header, the rest
        // in a chain of DIFAT sectors, each ending with the next one's id.
        let mut fat_ids: Vec<u32> = (0..109).map(|i| u32_at(&header, 0x4C + 4 * i)).collect();
        let mut next = u32_at(&header, 0x44);
        let mut steps = 0u64;
        while next < RESERVED {
            steps += 1;
            if steps > max_sectors {
                return Err("the chain of its allocation table's sectors loops".into());
            }
            let mut s = Vec::new();
            file.read_sector(input, next, &mut s)?;
            let mut ids: Vec<u32> = s.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
            next = ids.pop().unwrap_or(END_OF_CHAIN);
            fat_ids.extend(ids);
        }
        fat_ids.retain(|&id| id < DIFSECT);
        if fat_ids.len() as u64 > max_sectors {
            return Err("its allocation table is larger than the file".into());
        }
        let mut fat = Vec::new();
        for id in fat_ids {
            file.read_sector(input, id, &mut fat)?;
        }
        file.fat = fat.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
        let dir = file.chain(input, u32_at(&header, 0x30), u64::MAX, "directory")?;
        file.entries = dir
            .bytes
            .chunks_exact(128)
            .map(|e| {
                let units: Vec<u16> = e[..64]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                Entry {
                    name: String::from_utf16_lossy(&units),
                    start: u32_at(e, 116),
                    len: if sector == 512 {
                        u64::from(u32_at(e, 120))
                    } else {
                        u64::from(u32_at(e, 120)) | u64::from(u32_at(e, 124)) << 32
                    },
                }
            })
            .collect();
        let Some(root) = file.entries.first() else {
            return Err("its directory is empty".into());
        };
        if u32_at(&header, 0x40) > 0 {
            let (start, len) = (root.start, root.len);
            file.mini = Some(file.chain(input, start, len, "mini stream")?);
            let mini_fat_len = u64::from(u32_at(&header, 0x40)) * sector as u64;
            let table = file.chain(input, u32_at(&header, 0x3C), mini_fat_len, "mini table")?;
            file.mini_fat = table.bytes.chunks_exact(4).map(|c| u32_at(c, 0)).collect();
        }
        Ok(file)
    }

    /// Appends sector `id` to `into`, as far as the file goes; returns the
    /// sector's file offset and how many bytes it had.
    fn read_sector(
        &self,
        input: &dyn ReadAt,
        id: u32,
        into: &mut Vec<u8>,
    ) -> Result<(u64, usize), String> {
        let offset = (u64::from(id) + 1) * self.sector as u64;
        if offset >= self.size {
            return Err(format!("sector {id} lies past the end of the file"));
        }
        // A short last sector is read as far as it goes.
        let len = (self.size - offset).min(self.sector as u64) as usize;
        let at = into.len();
        into.resize(at + len, 0);
        input
            .read_exact_at(offset, &mut into[at..])
            .map_err(|e| format!("sector {id} cannot be read: {e}"))?;
        Ok((offset, len))
    }

    /// The chain of regular sectors from `start`, up to `len` bytes.
    fn chain(
        &self,
        input: &dyn ReadAt,
        start: u32,
        len: u64,
        what: &str,
    ) -> Result<Stream, String> {
        let mut out = Stream {
            bytes: Vec::new(),
            runs: Vec::new(),
        };
        let mut seen = vec![false; self.fat.len()];
        let mut id = start;
        while id != END_OF_CHAIN && (out.bytes.len() as u64) < len {
            let (offset, mut got) = self.read_sector(input, id, &mut out.bytes)?;
            let over = (out.bytes.len() as u64).saturating_sub(len);
            if over > 0 {
                got -= usize::try_from(over).unwrap_or(got);
                out.bytes
                    .truncate(out.bytes.len() - usize::try_from(over).unwrap_or(0));
            }
            out.runs.push((offset, got));
            let Some(next) = self.fat.get(id as usize) else {
                return Err(format!("the {what}'s chain leaves the allocation table"));
            };
            if std::mem::replace(&mut seen[id as usize], true) {
                return Err(format!(
                    "the {what}'s sector chain loops back to sector {id}"
                ));
            }
            id = *next;
        }
        Ok(out)
    }

    /// The first directory entry called `name`, in any case, as the reader
    /// finds it.
    fn find(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
    }

    /// The stream called `name`, if there is one.
    fn stream(&self, input: &dyn ReadAt, name: &str) -> Option<Result<Stream, String>> {
        let entry = self.find(name)?;
        if entry.len >= MINI_CUTOFF as u64 {
            return Some(self.chain(input, entry.start, entry.len, "workbook stream"));
        }
        let Some(mini) = &self.mini else {
            return Some(Err("a short stream has no mini stream to live in".into()));
        };
        let mut out = Stream {
            bytes: Vec::new(),
            runs: Vec::new(),
        };
        let mut seen = vec![false; self.mini_fat.len()];
        let mut id = entry.start;
        let len = usize::try_from(entry.len).unwrap_or(MINI_CUTOFF);
        while id != END_OF_CHAIN && out.bytes.len() < len {
            let at = id as usize * MINI_SECTOR;
            let Some(piece) = mini.bytes.get(at..(at + MINI_SECTOR).min(mini.bytes.len())) else {
                return Some(Err(format!(
                    "mini sector {id} lies outside the mini stream"
                )));
            };
            let take = piece.len().min(len - out.bytes.len());
            out.bytes.extend_from_slice(&piece[..take]);
            // A mini sector lies within one regular sector of the mini stream.
            if let Some(offset) = mini.file_offset(at) {
                out.runs.push((offset, take));
            }
            let Some(next) = self.mini_fat.get(id as usize) else {
                return Some(Err(
                    "the workbook stream's chain leaves the mini table".into()
                ));
            };
            if std::mem::replace(&mut seen[id as usize], true) {
                return Some(Err(format!(
                    "the workbook stream's mini sector chain loops back to mini sector {id}"
                )));
            }
            id = *next;
        }
        Some(Ok(out))
    }
}

/// Records the reader places a cell with, its row and column first.
const CELL_RECORDS: &[u16] = &[0x0203, 0x0204, 0x00D6, 0x0205, 0x027E, 0x00FD];
const FORMULA: u16 = 0x0006;
/// The string value of the formula before it, placed at that formula's cell.
const STRING: u16 = 0x0207;
/// MULRK: a row, a first column, six bytes per cell, the last column.
const MULRK: u16 = 0x00BD;
const DIMENSIONS: u16 = 0x0200;
const BOF: u16 = 0x0809;
const EOF: u16 = 0x000A;
const BOUNDSHEET: u16 = 0x0085;
const FILEPASS: u16 = 0x002F;

/// The BIFF records of `stream` from `at`: (type, offset of the data, data).
fn records(stream: &[u8], mut at: usize) -> impl Iterator<Item = (u16, usize, &[u8])> {
    std::iter::from_fn(move || {
        let head = stream.get(at..at + 4)?;
        let kind = u16::from_le_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let data = stream.get(at + 4..at + 4 + len)?;
        let from = at + 4;
        at += 4 + len;
        Some((kind, from, data))
    })
}

/// The cells a sheet's DIMENSIONS record makes the reader reserve room for,
/// computed as it does (`None`: more than can be counted).
fn declared_cells(data: &[u8]) -> Option<u64> {
    let (rf, rl, mut cf, cl) = match data.len() {
        10 => (
            u32::from(u16_at(data, 0)),
            u32::from(u16_at(data, 2)),
            u32::from(u16_at(data, 4)),
            u32::from(u16_at(data, 6)),
        ),
        14 | 16 => (
            u32_at(data, 0),
            u32_at(data, 4),
            u32::from(u16_at(data, 8)),
            u32::from(u16_at(data, 10)),
        ),
        _ => return Some(0), // the reader refuses the record
    };
    if 0xFF < cf || cl < cf {
        cf = 0;
    }
    if rl == 0 || cl == 0 {
        return Some(1);
    }
    let rows = (rl - 1).checked_sub(rf)?.checked_add(1)?;
    let cols = (cl - 1).checked_sub(cf)?.checked_add(1)?;
    u64::from(rows).checked_mul(u64::from(cols))
}

/// The name in a BOUNDSHEET record: a byte count, then (BIFF8) a flag for
/// UTF-16 and the characters, or (BIFF5) the bytes.
fn sheet_name(data: &[u8], biff8: bool) -> Option<String> {
    let n = usize::from(*data.get(6)?);
    if !biff8 {
        let bytes = data.get(7..7 + n)?;
        return Some(bytes.iter().map(|&b| char::from(b)).collect());
    }
    let wide = data.get(7)? & 1 == 1;
    if wide {
        let units: Vec<u16> = data
            .get(8..8 + 2 * n)?
            .chunks_exact(2)
            .map(|c| u16_at(c, 0))
            .collect();
        Some(String::from_utf16_lossy(&units))
    } else {
        Some(data.get(8..8 + n)?.iter().map(|&b| char::from(b)).collect())
    }
}

/// Each sheet the workbook globals list must start inside the stream, and
/// all of them together may span at most `max_cells` cells.
fn check_sheets(stream: &Stream, max_cells: u64, check: &mut Check) -> Result<(), Problem> {
    let bytes = &stream.bytes;
    let mut sheets = Vec::new();
    let mut biff8 = true;
    for (kind, _, data) in records(bytes, 0) {
        match kind {
            EOF => break,
            BOF if sheets.is_empty() => biff8 = u16_at(data, 0) == 0x0600,
            FILEPASS if u16_at(data, 0) != 0 => return Err(Problem::Encrypted),
            BOUNDSHEET if data.len() >= 4 => {
                sheets.push((u32_at(data, 0) as usize, sheet_name(data, biff8)));
            }
            _ => {}
        }
    }
    let mut total = 0u64;
    for (n, (start, name)) in sheets.into_iter().enumerate() {
        let name = name.unwrap_or_else(|| format!("{}", n + 1));
        if start > bytes.len() {
            return Err(Problem::Unreadable(format!(
                "sheet '{name}' starts at byte {start}, past the end of the {}-byte workbook \
                 stream",
                bytes.len()
            )));
        }
        let (mut rows, mut cols) = ((u32::MAX, 0u32), (u32::MAX, 0u32));
        let mut place = |row: u32, col: u32| {
            rows = (rows.0.min(row), rows.1.max(row));
            cols = (cols.0.min(col), cols.1.max(col));
        };
        // As the reader walks a sheet: the first BOF is the sheet's own,
        // a later one opens a substream (a chart) whose records are skipped.
        let (mut seen_bof, mut depth) = (false, 0usize);
        let mut formula_at = (0u32, 0u32);
        for (kind, from, data) in records(bytes, start) {
            if depth > 0 {
                match kind {
                    BOF => depth += 1,
                    EOF => depth -= 1,
                    _ => {}
                }
                continue;
            }
            let (row, col) = (u32::from(u16_at(data, 0)), u32::from(u16_at(data, 2)));
            match kind {
                BOF if seen_bof => depth += 1,
                BOF => seen_bof = true,
                EOF => break,
                // Room for one cell instead; the cells are counted below.
                DIMENSIONS if declared_cells(data).is_none_or(|n| n > max_cells) => {
                    let width = if data.len() == 10 { 8 } else { 12 };
                    for i in 0..width {
                        if let Some(at) = stream.file_offset(from + i) {
                            check.patches.push((at, vec![0]));
                        }
                    }
                }
                k if CELL_RECORDS.contains(&k) && data.len() >= 4 => place(row, col),
                FORMULA if data.len() >= 20 => {
                    formula_at = (row, col);
                    place(row, col);
                }
                STRING => place(formula_at.0, formula_at.1),
                MULRK if data.len() >= 6 => {
                    let last = u32::from(u16_at(data, data.len() - 2));
                    let n = (data.len() - 6) / 6;
                    if n > 0 && last >= col && (last - col + 1) as usize == n {
                        place(row, col);
                        place(row, last);
                    }
                }
                _ => {}
            }
        }
        if rows.0 <= rows.1 {
            let height = u64::from(rows.1 - rows.0) + 1;
            let width = u64::from(cols.1 - cols.0) + 1;
            total = total.saturating_add(height * width);
            if total > max_cells {
                return Err(Problem::TooLarge(
                    name,
                    format!(
                        "the sheet spans {height} rows by {width} columns (from its first cell \
                         to its last), which brings the workbook's sheets to more than \
                         max_cells ({max_cells}) cells; an XLS workbook is loaded whole, every \
                         sheet at once: raise max_cells to read it"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_dimensions_are_counted_as_the_reader_counts_them() {
        let biff8 = |rf: u32, rl: u32, cf: u16, cl: u16| {
            let mut d = Vec::new();
            d.extend(rf.to_le_bytes());
            d.extend(rl.to_le_bytes());
            d.extend(cf.to_le_bytes());
            d.extend(cl.to_le_bytes());
            d.extend([0, 0]);
            d
        };
        assert_eq!(declared_cells(&biff8(0, 5, 0, 3)), Some(15));
        assert_eq!(declared_cells(&biff8(0, 0, 0, 0)), Some(1));
        // A last row before the first: the reader's subtraction overflows.
        assert_eq!(declared_cells(&biff8(10, 5, 0, 3)), None);
        assert_eq!(
            declared_cells(&biff8(0, u32::MAX, 0, 256)),
            Some(u64::from(u32::MAX - 1) * 256 + 256)
        );
        // A first column past 255 counts from column 0.
        assert_eq!(declared_cells(&biff8(0, 1, 300, 400)), Some(400));
    }
}
