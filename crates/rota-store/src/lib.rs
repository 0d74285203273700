//! Rota's job stores: implementations of [`rota_core::Store`], the trait
//! through which the ingest pipeline, the workers and the CLI keep specs, jobs,
//! tasks and leases. The default store is embedded SQLite ([`SqliteStore`]),
//! which several processes on one machine can share through one file;
//! [`PgStore`] keeps them in PostgreSQL, which any number of nodes share.
//! [`open_store`] picks a store from a URL. [`conformance`] is the suite of
//! scenarios every store implementation runs in its tests.

pub mod conformance;
mod payload_files;
mod postgres;
mod shared;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use rota_core::{Store, StoreError, SystemClock};

pub use postgres::{
    DEFAULT_POOL_SIZE, PG_SCHEMA_VERSION, PgOptions, PgStore, PgTls, TlsMode, parse_url,
    unique_schema,
};
pub use sqlite::{
    BUSY_TIMEOUT, DEFAULT_FILE_LIMIT, DEFAULT_JOB_LIMIT, DEFAULT_TASK_LIMIT, SCHEMA_VERSION,
    SqliteStore,
};

/// The store URL used when none is given.
pub const DEFAULT_STORE_URL: &str = "./rota.db";

/// Opens the store named by `url`, on the system clock.
///
/// `postgres://…` (or `postgresql://…`) opens a [`PgStore`]: the URL's
/// parameters are the PostgreSQL client's (`application_name`,
/// `connect_timeout`, …), TLS as libpq reads it (`sslmode`, `sslrootcert`)
/// and the store's own `pool_size=N`, `schema=NAME` and `compress=lz4` (see
/// [`parse_url`]); its schema is migrated on open.
///
/// SQLite forms: `sqlite::memory:` (a private in-memory database),
/// `sqlite://PATH`, `sqlite:PATH`, or a plain file path such as `./rota.db`;
/// any of them may end in `?compress=lz4` to store text payloads compressed
/// (see [`SqliteStore::with_compression`]; `?compress=none`, the default,
/// stores them as they are).
///
/// # Errors
/// [`StoreError::Invalid`] for an unsupported scheme or an empty path; any
/// error of [`SqliteStore::open`] or [`PgStore::connect`].
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let clock = Arc::new(SystemClock);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::connect(url, clock).await?));
    }
    let (url, compress) = match url.rsplit_once('?') {
        Some((base, options)) => (base, compression(options)?),
        None => (url, false),
    };
    let path = if url == "sqlite::memory:" || url == ":memory:" {
        return Ok(Arc::new(
            SqliteStore::in_memory(clock)?.with_compression(compress),
        ));
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        path
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        path
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::Invalid {
            message: format!(
                "unsupported store scheme '{scheme}' (supported: postgres://…, \
                 sqlite::memory:, sqlite://PATH, sqlite:PATH, or a plain file path)"
            ),
        });
    } else {
        url
    };
    if path.is_empty() {
        return Err(StoreError::Invalid {
            message: format!("store url '{url}' names no database file"),
        });
    }
    Ok(Arc::new(
        SqliteStore::open(Path::new(path), clock)?.with_compression(compress),
    ))
}

/// The store URL's options (`compress=lz4` or `compress=none`): whether
/// text payloads are stored compressed.
fn compression(options: &str) -> Result<bool, StoreError> {
    let mut compress = false;
    for option in options.split('&').filter(|o| !o.is_empty()) {
        compress = match option {
            "compress=lz4" => true,
            "compress=none" => false,
            other => {
                return Err(StoreError::Invalid {
                    message: format!(
                        "unknown store option '{other}' (supported: compress=lz4, compress=none)"
                    ),
                });
            }
        };
    }
    Ok(compress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_is_invalid() {
        let Err(err) = open_store("mysql://localhost/rota").await else {
            panic!("mysql url was accepted");
        };
        let text = err.to_string();
        assert!(matches!(err, StoreError::Invalid { .. }), "{text}");
        assert!(
            text.contains("mysql") && text.contains("postgres") && text.contains("sqlite"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn store_options_choose_compression_and_unknown_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("o.db");
        for url in [
            format!("{}?compress=lz4", db.display()),
            format!("sqlite://{}?compress=none", db.display()),
            "sqlite::memory:?compress=lz4".to_owned(),
        ] {
            open_store(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(db.exists(), "the option is not part of the path");
        let Err(err) = open_store(&format!("{}?compress=zstd", db.display())).await else {
            panic!("an unknown option was accepted");
        };
        assert!(err.to_string().contains("compress=zstd"), "{err}");
    }

    #[tokio::test]
    async fn empty_path_is_invalid() {
        assert!(matches!(
            open_store("sqlite://").await,
            Err(StoreError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn url_forms_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open_store("sqlite::memory:").await.is_ok());
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        let c = dir.path().join("c.db");
        for url in [
            format!("sqlite://{}", a.display()),
            format!("sqlite:{}", b.display()),
            c.display().to_string(),
        ] {
            open_store(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(a.exists() && b.exists() && c.exists());
        // Reopening an existing database keeps its schema.
        open_store(&c.display().to_string()).await.expect("reopen");
    }
}
