//! Just enough of Thrift's compact protocol to read what Parquet declares
//! before the parquet crate acts on it: the sizes in a page header (checked
//! before a page is decompressed) and whether a footer says its columns are
//! encrypted. Anything it cannot read is left to the parquet crate to refuse.

/// Structs nested deeper than this are not followed.
const MAX_DEPTH: u32 = 16;

/// What a page header declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageHeader {
    /// The page type: 0 data, 1 index, 2 dictionary, 3 data (v2).
    pub(crate) kind: i32,
    /// Bytes once decompressed, header excluded.
    pub(crate) uncompressed: i32,
    /// Bytes as stored, header excluded.
    pub(crate) compressed: i32,
    /// Values (nulls and levels of empty lists included) in a data page;
    /// 0 in other pages.
    pub(crate) values: i32,
}

/// An index page, which readers skip.
pub(crate) const INDEX_PAGE: i32 = 1;

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Short {
    /// The bytes end inside the header: read more and try again.
    More,
    /// Not a header this reader understands.
    Invalid,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.buf.get(self.at).ok_or(Short::More)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), Short> {
        let end = self.at.checked_add(n).ok_or(Short::Invalid)?;
        if end > self.buf.len() {
            return Err(Short::More);
        }
        self.at = end;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, Short> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Short::Invalid)
    }

    fn zigzag(&mut self) -> Result<i64, Short> {
        let v = self.varint()?;
        #[allow(clippy::cast_possible_wrap)]
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> Result<i32, Short> {
        i32::try_from(self.zigzag()?).map_err(|_| Short::Invalid)
    }

    /// The next field header of a struct: `None` at its end, else the
    /// field's id and type.
    fn field(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, Short> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let kind = b & 0x0F;
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| Short::Invalid)?
        } else {
            last.checked_add(delta).ok_or(Short::Invalid)?
        };
        *last = id;
        Ok(Some((id, kind)))
    }

    /// Skips a value of compact type `kind`.
    fn skip_value(&mut self, kind: u8, depth: u32) -> Result<(), Short> {
        if depth > MAX_DEPTH {
            return Err(Short::Invalid);
        }
        match kind {
            1 | 2 => Ok(()),                    // booleans live in the field header
            3 => self.skip(1),                  // byte
            4..=6 => self.varint().map(|_| ()), // i16, i32, i64
            7 => self.skip(8),                  // double
            8 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Short::Invalid)?;
                self.skip(n)
            }
            9 | 10 => {
                let head = self.byte()?;
                let elem = head & 0x0F;
                let mut n = u64::from(head >> 4);
                if n == 15 {
                    n = self.varint()?;
                }
                for _ in 0..n {
                    if elem == 1 || elem == 2 {
                        self.skip(1)?; // a boolean element is a byte of its own
                    } else {
                        self.skip_value(elem, depth + 1)?;
                    }
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                for _ in 0..n {
                    self.skip_value(kinds >> 4, depth + 1)?;
                    self.skip_value(kinds & 0x0F, depth + 1)?;
                }
                Ok(())
            }
            12 => self.skip_struct(depth + 1),
            13 => self.skip(16), // uuid
            _ => Err(Short::Invalid),
        }
    }

    fn skip_struct(&mut self, depth: u32) -> Result<(), Short> {
        let mut last = 0;
        while let Some((_, kind)) = self.field(&mut last)? {
            self.skip_value(kind, depth)?;
        }
        Ok(())
    }
}

/// Reads the page header at the start of `buf`: what it declares and its
/// length in bytes.
pub(crate) fn page_header(buf: &[u8]) -> Result<(PageHeader, usize), Short> {
    let mut r = Reader { buf, at: 0 };
    let mut header = PageHeader::default();
    let mut seen = 0u8;
    let mut last = 0;
    while let Some((id, kind)) = r.field(&mut last)? {
        match (id, kind) {
            (1, 5) => {
                header.kind = r.i32()?;
                seen |= 1;
            }
            (2, 5) => {
                header.uncompressed = r.i32()?;
                seen |= 2;
            }
            (3, 5) => {
                header.compressed = r.i32()?;
                seen |= 4;
            }
            // The data page header (v1 or v2): its first field is the
            // number of values.
            (5 | 8, 12) => {
                let mut inner = 0;
                while let Some((id, kind)) = r.field(&mut inner)? {
                    match (id, kind) {
                        (1, 5) => header.values = r.i32()?,
                        _ => r.skip_value(kind, 2)?,
                    }
                }
            }
            _ => r.skip_value(kind, 1)?,
        }
    }
    if seen != 7 {
        return Err(Short::Invalid);
    }
    Ok((header, r.at))
}

/// Whether a footer (the bytes of its `FileMetaData`) declares an
/// encryption algorithm, as files with a plaintext footer and encrypted
/// columns do; `None` when it cannot be read.
pub(crate) fn footer_declares_encryption(footer: &[u8]) -> Option<bool> {
    let mut r = Reader { buf: footer, at: 0 };
    let mut last = 0;
    while let Some((id, kind)) = r.field(&mut last).ok()? {
        if id == 8 && kind == 12 {
            return Some(true);
        }
        r.skip_value(kind, 1).ok()?;
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data page header as parquet writers lay it out: type, sizes, crc,
    /// then the data page header struct.
    const HEADER: &[u8] = &[
        0x15, 0x00, // 1: type = 0 (data page)
        0x15, 0xC8, 0x01, // 2: uncompressed = 100
        0x15, 0x50, // 3: compressed = 40
        0x2C, // 5: data_page_header {
        0x15, 0x14, // 1: num_values = 10
        0x15, 0x00, 0x15, 0x06, 0x15, 0x06, // encodings
        0x00, // }
        0x00, // end
    ];

    #[test]
    fn reads_the_sizes_of_a_page_header() {
        let (h, len) = page_header(HEADER).expect("header");
        assert_eq!(
            h,
            PageHeader {
                kind: 0,
                uncompressed: 100,
                compressed: 40,
                values: 10,
            }
        );
        assert_eq!(len, HEADER.len());
    }

    #[test]
    fn asks_for_more_bytes_when_cut_short() {
        for cut in 0..HEADER.len() {
            assert_eq!(
                page_header(&HEADER[..cut]),
                Err(Short::More),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refuses_a_header_without_its_sizes() {
        assert_eq!(page_header(&[0x15, 0x00, 0x00]), Err(Short::Invalid));
        assert_eq!(page_header(&[0x1F, 0x00]), Err(Short::Invalid));
    }

    #[test]
    fn tells_an_encrypted_footer_apart() {
        // 1: version = 1, then 8: encryption_algorithm { 1: AES_GCM_V1 {} }
        let encrypted = [0x15, 0x02, 0x7C, 0x1C, 0x00, 0x00, 0x00];
        assert_eq!(footer_declares_encryption(&encrypted), Some(true));
        assert_eq!(footer_declares_encryption(&[0x15, 0x02, 0x00]), Some(false));
        assert_eq!(footer_declares_encryption(&[0x15]), None);
    }
}
