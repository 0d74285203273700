//! Rota's formats: how bytes become records.
//!
//! Every format yields Arrow record batches through the push
//! [`Decoder`](rota_core::format::Decoder) of `rota-core`, so a local file, a
//! network stream and an upload share one path. Adding a format is one module
//! plus one line in [`builtin`], plus fixtures under `fixtures/<name>/` (a test
//! fails when a registered format has none).

use std::sync::Arc;

use rota_core::format::Format;

pub mod arrow;
pub mod avro;
mod cfb;
pub mod compression;
pub mod csv;
pub mod detect;
pub mod encoding;
pub mod json;
pub mod msgpack;
mod options;
pub mod parquet;
pub mod raw;
pub mod schema;
pub mod sheet;
mod spool;
mod text;
mod thrift;
pub mod toml;
mod via_json;
pub mod xml;
pub mod yaml;

pub use arrow::ArrowFormat;
pub use avro::AvroFormat;
pub use compression::{Compression, Decompressing, Decompressor, Limits};
pub use csv::{CsvFormat, TsvFormat};
pub use encoding::{Transcoding, text_encoding};
pub use json::{JsonFormat, NdjsonFormat};
pub use msgpack::MsgpackFormat;
pub use parquet::ParquetFormat;
pub use raw::RawFormat;
pub use schema::parse_schema;
pub use sheet::{OdsFormat, XlsFormat, XlsxFormat};
pub use toml::TomlFormat;
pub use xml::XmlFormat;
pub use yaml::YamlFormat;

/// Runs `f`, turning a panic into an error message: some reader libraries
/// panic on malformed input they should refuse, and a decoder must answer
/// bad input with an error.
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "no reason given".to_owned())
    })
}

/// Every built-in format, in the order detection tries them.
#[must_use]
pub fn builtin() -> Vec<Arc<dyn Format>> {
    vec![
        Arc::new(CsvFormat),
        Arc::new(TsvFormat),
        Arc::new(NdjsonFormat),
        Arc::new(JsonFormat),
        Arc::new(ArrowFormat),
        Arc::new(ParquetFormat),
        Arc::new(MsgpackFormat),
        Arc::new(AvroFormat),
        Arc::new(XlsxFormat),
        Arc::new(XlsFormat),
        Arc::new(OdsFormat),
        Arc::new(XmlFormat),
        Arc::new(YamlFormat),
        Arc::new(TomlFormat),
        Arc::new(RawFormat),
    ]
}

/// The format registered under `name`.
#[must_use]
pub fn by_name(name: &str) -> Option<Arc<dyn Format>> {
    builtin().into_iter().find(|f| f.name() == name)
}

/// The format a path's extension names (case-insensitive), if any, after
/// a compression suffix (`data.csv.gz` is CSV).
#[must_use]
pub fn by_extension(path: &str) -> Option<Arc<dyn Format>> {
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let file = Compression::from_suffix(file).map_or(file, |(_, stem)| stem);
    let (_, ext) = file.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    builtin()
        .into_iter()
        .find(|f| f.extensions().contains(&ext.as_str()))
}

/// Names of every built-in format.
#[must_use]
pub fn names() -> Vec<&'static str> {
    builtin().iter().map(|f| f.name()).collect()
}
