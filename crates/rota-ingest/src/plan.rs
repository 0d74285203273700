//! A dry run: what an ingest would do, from the listing and a sample of each
//! file, without writing anything.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;

use rota_core::format::{Decoded, Decoder};
use rota_formats::drive::{DriveError, Until, end, feed};

use crate::error::IngestError;
use crate::open::open_file;
use crate::pipeline::{IngestRequest, check_and_list};

/// Bytes of each file read to sample it (compressed bytes, for compressed
/// files); a smaller file is read whole and its counts are exact.
pub const PROBE_BYTES: u64 = 8 << 20;

/// One column of a planned file's schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedColumn {
    /// Its name.
    pub name: String,
    /// Its Arrow type, as Arrow prints it.
    pub r#type: String,
}

/// What an ingest would do with one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilePlan {
    /// The file.
    pub location: String,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
    /// The format it would be decoded as.
    pub format: String,
    /// The compression found, if any.
    pub compression: Option<String>,
    /// The schema its records would have (empty when the sample showed none).
    pub schema: Vec<PlannedColumn>,
    /// Records in the file: counted when `exact`, else estimated from the
    /// sample's records per byte.
    pub rows: u64,
    /// Whether `rows` was counted (the whole file was read, or the format
    /// records the count) rather than estimated.
    pub exact: bool,
    /// Tasks it would make, by `--batch-rows` (`--batch-bytes` may cut more).
    pub tasks: u64,
}

/// What an ingest would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Per file, in listing order.
    pub files: Vec<FilePlan>,
    /// Records over all files (some estimated).
    pub rows: u64,
    /// Tasks over all files (some estimated).
    pub tasks: u64,
}

/// Plans `req`: lists its files and samples each, writing nothing.
///
/// # Errors
/// What [`crate::ingest`] would fail on before or while reading the first
/// [`PROBE_BYTES`] of a file: an invalid request, a missing path, a file of
/// unknown format, a decode error in the sample.
pub async fn plan(req: &IngestRequest) -> Result<Plan, IngestError> {
    // The passwords of this plan's URLs are its own.
    let req = &IngestRequest {
        sources: req.sources.for_ingest(),
        ..req.clone()
    };
    let (explicit, mut listing, first) = check_and_list(req).await?;
    let mut files = Vec::new();
    let mut next = Some(first);
    while let Some(entry) = next.take() {
        let opened = open_file(req, &entry, explicit.as_ref()).await?;
        let format = Arc::clone(&opened.format);
        let compression = opened.compression;
        let in_place_bytes = opened.in_place_bytes;
        let mut decoder: Box<dyn Decoder> = match compression {
            Some(c) => Box::new(rota_formats::Decompressing::new(
                opened.decoder,
                &entry.location,
                Some(c),
                req.decompression,
            )),
            None => opened.decoder,
        };
        // The sample: the first PROBE_BYTES read (all of a smaller file).
        let mut sample = Vec::new();
        let mut consumed = opened.head.len() as u64;
        if !opened.head.is_empty() {
            sample.push(opened.head);
        }
        let mut whole = true;
        if let Some(mut stream) = opened.stream {
            while consumed < PROBE_BYTES {
                match stream.next_chunk().await? {
                    Some(bytes) => {
                        consumed += bytes.len() as u64;
                        sample.push(bytes);
                    }
                    None => break,
                }
            }
            whole = consumed < PROBE_BYTES || stream.next_chunk().await?.is_none();
        }
        let mut rows = 0u64;
        let mut count = |d: Decoded| {
            if let Decoded::Batch(b) = d {
                rows += b.num_rows() as u64;
            }
            true
        };
        let input = sample.into_iter().map(Ok::<_, Infallible>);
        feed(decoder.as_mut(), input, &mut count).map_err(|e| match e {
            DriveError::Decode(e) => IngestError::from(e),
            DriveError::Input(never) => match never {},
        })?;
        let total = if whole {
            // Formats that record their row count need not be read out.
            end(decoder.as_mut(), Until::Counted, &mut count)?;
            Some(decoder.total_rows().unwrap_or(rows))
        } else {
            None
        };
        let size = entry.size.or(Some(in_place_bytes).filter(|&n| n > 0));
        let estimate = match (total, size) {
            (Some(n), _) => n,
            (None, Some(size)) if consumed > 0 => {
                let per_byte = rows as f64 / consumed as f64;
                (per_byte * size as f64).round() as u64
            }
            (None, _) => rows,
        };
        let tasks = req
            .batch
            .max_rows
            .map_or(u64::from(estimate > 0), |per| estimate.div_ceil(per.max(1)));
        let schema = decoder
            .schema()
            .map(|s| {
                s.fields()
                    .iter()
                    .map(|f| PlannedColumn {
                        name: f.name().clone(),
                        r#type: f.data_type().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.push(FilePlan {
            location: entry.location.clone(),
            size,
            format: format.name().to_owned(),
            compression: compression.map(|c| c.name().to_owned()),
            schema,
            rows: estimate,
            exact: total.is_some(),
            tasks,
        });
        next = listing.next_entry().await?;
    }
    Ok(Plan {
        rows: files.iter().map(|f| f.rows).sum(),
        tasks: files.iter().map(|f| f.tasks).sum(),
        files,
    })
}
