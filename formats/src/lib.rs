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
pub mod drive;
pub mod encoding;
mod infer;
pub mod json;
pub mod msgpack;
mod options;
pub mod parquet;
pub mod plain;
pub mod raw;
pub mod schema;
pub mod sheet;
pub mod split;
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
pub use infer::JSON_EXTENSION;
pub use json::{JsonFormat, NdjsonFormat};
pub use msgpack::MsgpackFormat;
pub use parquet::ParquetFormat;
pub use raw::RawFormat;
pub use schema::parse_schema;
pub use sheet::{OdsFormat, XlsFormat, XlsxFormat};
pub use toml::TomlFormat;
pub use xml::XmlFormat;
pub use yaml::YamlFormat;

thread_local! {
    /// Whether this thread is inside [`guard`], whose panics are answered
    /// with an error and must not also be printed.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once, a panic hook that stays silent for panics [`guard`]
/// catches and hands every other panic to the hook that was there before.
fn quiet_guarded_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                before(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error message: some reader libraries
/// panic on malformed input they should refuse, and a decoder must answer
/// bad input with an error (and print nothing of the panic).
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_guarded_panics();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|panic| {
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

/// `format`'s decoder for one input, its batches made plain
/// ([`plain::Plain`]): what the ingest pipeline decodes with.
///
/// # Errors
/// When the options are invalid for this format.
pub fn decoder(
    format: &dyn Format,
    options: &rota_core::format::DecodeOptions,
) -> Result<Box<dyn rota_core::format::Decoder>, rota_core::DecodeError> {
    Ok(Box::new(plain::Plain::new(
        format.decoder(options)?,
        &options.location,
        options.on_error,
    )))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::guard;

    #[test]
    fn a_guarded_panic_is_an_error_and_prints_nothing() {
        static PRINTED: AtomicUsize = AtomicUsize::new(0);
        std::panic::set_hook(Box::new(|_| {
            PRINTED.fetch_add(1, Ordering::SeqCst);
        }));
        let caught = guard(|| -> u8 { panic!("a reader library gave up") });
        assert_eq!(caught, Err("a reader library gave up".to_owned()));
        assert_eq!(guard(|| 7), Ok(7));
        assert_eq!(
            PRINTED.load(Ordering::SeqCst),
            0,
            "the guarded panic was printed"
        );
        // A panic outside the guard still reaches the hook that was there.
        let outside = std::panic::catch_unwind(|| panic!("not guarded"));
        assert!(outside.is_err());
        assert_eq!(PRINTED.load(Ordering::SeqCst), 1);
    }
}
