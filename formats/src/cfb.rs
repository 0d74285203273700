//! A structural check of an XLS workbook before a reader loads it: the OLE
//! compound file around it must be sound — the header's counts fit the file,
//! no chain of the sector or mini-sector tables loops (a reader following a
//! looping chain collects sectors until memory runs out) — and each sheet of
//! the BIFF workbook stream inside must start inside the stream and span no
//! more cells than the budget (a reader lays every sheet out as a grid from
//! its first to its last cell, so two far-apart cells would ask for billions
//! of cells of memory).

use rota_core::source::ReadAt;

/// Marks the end of a chain; larger values mark free or special sectors.
const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
const MAX_REGULAR: u32 = 0xFFFF_FFFA;

/// DIFAT entries in the header.
const HEADER_DIFAT: usize = 109;

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Checks the workbook behind `input`, whose sheets may span at most
/// `max_cells` cells each; the error says what is wrong.
pub(crate) fn check(input: &dyn ReadAt, max_cells: u64) -> Result<(), String> {
    let file = open(input)?;
    let workbook = file
        .stream(input, "Workbook")
        .or_else(|| file.stream(input, "Book"))
        .ok_or("the file holds no workbook stream")??;
    check_sheets(&workbook, max_cells)
}

/// The parts of a compound file needed to read its streams.
struct Compound {
    header: [u8; 512],
    sector: usize,
    sectors: u64,
    fat: Vec<u32>,
    mini: Vec<u32>,
}

fn open(input: &dyn ReadAt) -> Result<Compound, String> {
    let size = input.size();
    let mut header = [0u8; 512];
    input
        .read_exact_at(0, &mut header)
        .map_err(|_| "shorter than a compound file header".to_owned())?;
    if header[..8] != [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1] {
        return Err("not an OLE compound file (its magic number is missing)".into());
    }
    let shift = u16::from_le_bytes([header[0x1E], header[0x1F]]);
    if shift != 9 && shift != 12 {
        return Err(format!("sector size 2^{shift} is neither 512 nor 4096"));
    }
    let sector = 1usize << shift;
    let sectors = size.saturating_sub(sector as u64) / sector as u64 + 1;
    let read_sector = |id: u32| -> Result<Vec<u8>, String> {
        if u64::from(id) >= sectors {
            return Err(format!("sector {id} lies past the end of the file"));
        }
        let mut buf = vec![0u8; sector];
        let at = (u64::from(id) + 1) * sector as u64;
        input
            .read_exact_at(at, &mut buf)
            .map_err(|_| format!("sector {id} is cut short"))?;
        Ok(buf)
    };
    let fat_sectors = u32_at(&header, 0x2C) as usize;
    let difat_sectors = u32_at(&header, 0x48) as usize;
    if fat_sectors as u64 > sectors || difat_sectors as u64 > sectors {
        return Err("the header declares more sectors than the file holds".into());
    }
    // The sectors of the allocation table: 109 in the header, the rest in a
    // chain of DIFAT sectors.
    let mut fat_ids: Vec<u32> = (0..HEADER_DIFAT)
        .map(|i| u32_at(&header, 0x4C + 4 * i))
        .filter(|&id| id <= MAX_REGULAR)
        .collect();
    let mut next = u32_at(&header, 0x44);
    for _ in 0..difat_sectors {
        if next > MAX_REGULAR {
            break;
        }
        let s = read_sector(next)?;
        let per = sector / 4 - 1;
        fat_ids.extend(
            (0..per)
                .map(|i| u32_at(&s, 4 * i))
                .filter(|&id| id <= MAX_REGULAR),
        );
        next = u32_at(&s, 4 * per);
    }
    fat_ids.truncate(fat_sectors);
    let mut fat = Vec::with_capacity(fat_ids.len() * sector / 4);
    for id in fat_ids {
        let s = read_sector(id)?;
        fat.extend((0..sector / 4).map(|i| u32_at(&s, 4 * i)));
    }
    no_loops(&fat, "sector")?;
    // The mini-sector table lives in a chain of regular sectors.
    let mut mini = Vec::new();
    let mut id = u32_at(&header, 0x3C);
    let mut steps = 0usize;
    while id <= MAX_REGULAR {
        let s = read_sector(id)?;
        mini.extend((0..sector / 4).map(|i| u32_at(&s, 4 * i)));
        id = fat.get(id as usize).copied().unwrap_or(END_OF_CHAIN);
        steps += 1;
        if steps > fat.len() {
            return Err("the mini-sector table's chain loops".into());
        }
    }
    no_loops(&mini, "mini-sector")?;
    Ok(Compound {
        header,
        sector,
        sectors,
        fat,
        mini,
    })
}

impl Compound {
    fn read_sector(&self, input: &dyn ReadAt, id: u32, into: &mut Vec<u8>) -> Result<(), String> {
        if u64::from(id) >= self.sectors {
            return Err(format!("sector {id} lies past the end of the file"));
        }
        let at = into.len();
        into.resize(at + self.sector, 0);
        input
            .read_exact_at((u64::from(id) + 1) * self.sector as u64, &mut into[at..])
            .map_err(|_| format!("sector {id} is cut short"))
    }

    /// The bytes of the chain of regular sectors from `start`.
    fn chain(&self, input: &dyn ReadAt, start: u32, limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut id = start;
        while id <= MAX_REGULAR && out.len() < limit {
            self.read_sector(input, id, &mut out)?;
            id = self.fat.get(id as usize).copied().unwrap_or(END_OF_CHAIN);
        }
        Ok(out)
    }

    /// The stream named `name` in the root storage, if there is one.
    fn stream(&self, input: &dyn ReadAt, name: &str) -> Option<Result<Vec<u8>, String>> {
        let dir = match self.chain(input, u32_at(&self.header, 0x30), usize::MAX) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let entries: Vec<&[u8]> = dir.chunks_exact(128).collect();
        let root = entries.first()?;
        let wanted: Vec<u16> = name.encode_utf16().collect();
        let entry = entries.iter().find(|e| {
            let len = usize::from(u16::from_le_bytes([e[64], e[65]])).min(64);
            let units: Vec<u16> = e[..len.saturating_sub(2)]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            e[66] == 2 && units == wanted
        })?;
        let start = u32_at(entry, 116);
        let size = u32_at(entry, 120) as usize;
        let cutoff = u32_at(&self.header, 0x38) as usize;
        let result = if size >= cutoff {
            self.chain(input, start, size)
        } else {
            // Small streams live in 64-byte mini sectors inside the root's stream.
            let shift = u16::from_le_bytes([self.header[0x20], self.header[0x21]]);
            let mini = 1usize << shift.min(12);
            self.chain(input, u32_at(root, 116), usize::MAX)
                .and_then(|container| {
                    let mut out = Vec::new();
                    let mut id = start;
                    while id <= MAX_REGULAR && out.len() < size {
                        let at = id as usize * mini;
                        let piece = container.get(at..at + mini).ok_or_else(|| {
                            format!("mini sector {id} lies outside its container")
                        })?;
                        out.extend_from_slice(piece);
                        id = self.mini.get(id as usize).copied().unwrap_or(END_OF_CHAIN);
                    }
                    Ok(out)
                })
        };
        Some(result.and_then(|mut bytes| {
            if bytes.len() < size {
                return Err(format!("the {name} stream is cut short"));
            }
            bytes.truncate(size);
            Ok(bytes)
        }))
    }
}

/// BIFF records that place a cell: their data starts with its row and column.
const CELL_RECORDS: &[u16] = &[
    0x0006, 0x0201, 0x0203, 0x0204, 0x0205, 0x027E, 0x00FD, 0x0007, 0x0406, 0x0001, 0x0002, 0x0003,
    0x0004, 0x0005, 0x007E, 0x00D6,
];
/// MULRK and MULBLANK: a row, a first column, and the last column at the end.
const MULTI_RECORDS: &[u16] = &[0x00BD, 0x00BE];
const BOF: u16 = 0x0809;
const EOF: u16 = 0x000A;
const BOUNDSHEET: u16 = 0x0085;

/// The BIFF records of `stream` from `at`: (type, data).
fn records(stream: &[u8], mut at: usize) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let head = stream.get(at..at + 4)?;
        let kind = u16::from_le_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let data = stream.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some((kind, data))
    })
}

/// Each sheet the workbook globals list must start inside the stream and
/// span at most `max_cells` cells.
fn check_sheets(stream: &[u8], max_cells: u64) -> Result<(), String> {
    let starts: Vec<usize> = records(stream, 0)
        .take_while(|(kind, _)| *kind != EOF)
        .filter(|(kind, data)| *kind == BOUNDSHEET && data.len() >= 4)
        .map(|(_, data)| u32_at(data, 0) as usize)
        .collect();
    for (n, start) in starts.into_iter().enumerate() {
        if start >= stream.len() {
            return Err(format!(
                "sheet {} starts at byte {start}, past the end of the {}-byte workbook stream",
                n + 1,
                stream.len()
            ));
        }
        let (mut rows, mut cols) = ((u16::MAX, 0u16), (u16::MAX, 0u16));
        let mut depth = 0usize;
        for (kind, data) in records(stream, start) {
            match kind {
                BOF => depth += 1,
                EOF => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                _ if depth != 1 || data.len() < 4 => {}
                k if CELL_RECORDS.contains(&k) || MULTI_RECORDS.contains(&k) => {
                    let row = u16::from_le_bytes([data[0], data[1]]);
                    let first = u16::from_le_bytes([data[2], data[3]]);
                    let last = if MULTI_RECORDS.contains(&k) && data.len() >= 6 {
                        u16::from_le_bytes([data[data.len() - 2], data[data.len() - 1]])
                    } else {
                        first
                    };
                    rows = (rows.0.min(row), rows.1.max(row));
                    cols = (cols.0.min(first.min(last)), cols.1.max(first.max(last)));
                }
                _ => {}
            }
        }
        if rows.0 <= rows.1 {
            let height = u64::from(rows.1 - rows.0) + 1;
            let width = u64::from(cols.1 - cols.0) + 1;
            if height * width > max_cells {
                return Err(format!(
                    "sheet {} spans {height} rows by {width} columns, more than max_cells \
                     ({max_cells})",
                    n + 1
                ));
            }
        }
    }
    Ok(())
}

/// Fails when following `table` from some entry comes back to an entry of
/// the same walk.
fn no_loops(table: &[u32], what: &str) -> Result<(), String> {
    // 0: not seen; 1: on the current walk; 2: known to end.
    let mut state = vec![0u8; table.len()];
    let mut walk = Vec::new();
    for start in 0..table.len() {
        let mut at = start;
        while state[at] == 0 {
            state[at] = 1;
            walk.push(at);
            let next = table[at];
            if next > MAX_REGULAR || next as usize >= table.len() {
                break;
            }
            at = next as usize;
        }
        if state[at] == 1 && table[at] <= MAX_REGULAR && (table[at] as usize) < table.len() {
            return Err(format!("a {what} chain loops back to {what} {at}"));
        }
        for &w in &walk {
            state[w] = 2;
        }
        walk.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_found_and_ends_are_not_loops() {
        assert!(no_loops(&[1, 2, END_OF_CHAIN], "sector").is_ok());
        assert!(no_loops(&[1, 2, 0], "sector").is_err());
        assert!(no_loops(&[END_OF_CHAIN, 1], "sector").is_err());
        assert!(no_loops(&[2, 2, END_OF_CHAIN, 0xFFFF_FFFF], "sector").is_ok());
    }
}
