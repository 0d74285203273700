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
pub mod compression;
pub mod csv;
pub mod encoding;
pub mod json;
pub mod msgpack;
mod options;
pub mod parquet;
pub mod schema;
mod spool;
mod text;
pub mod toml;
mod via_json;
pub mod xml;
pub mod yaml;

pub use arrow::ArrowFormat;
pub use compression::{Compression, Decompressing, Decompressor, Limits};
pub use csv::{CsvFormat, TsvFormat};
pub use encoding::{Transcoding, text_encoding};
pub use json::{JsonFormat, NdjsonFormat};
pub use msgpack::MsgpackFormat;
pub use parquet::ParquetFormat;
pub use schema::parse_schema;
pub use toml::TomlFormat;
pub use xml::XmlFormat;
pub use yaml::YamlFormat;

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
        Arc::new(XmlFormat),
        Arc::new(YamlFormat),
        Arc::new(TomlFormat),
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
