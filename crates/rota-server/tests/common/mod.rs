//! What the server's tests share: a fresh store in a scratch directory,
//! served on a free loopback port.

// Each test file uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use rota_core::Store;

/// A server running in the background.
pub(crate) struct Served {
    /// Where it listens.
    pub(crate) addr: std::net::SocketAddr,
    /// `http://` and its address.
    pub(crate) url: String,
    /// The store it serves.
    pub(crate) store: Arc<dyn Store>,
    /// The scratch directory of the store (and uploads), removed on drop.
    pub(crate) dir: tempfile::TempDir,
}

/// Serves the configuration `config` makes from the scratch directory, over
/// a fresh store in it, on a free loopback port.
pub(crate) async fn serve(config: impl FnOnce(&Path) -> rota_server::Config) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rota_store::open_store(&dir.path().join("rota.db").to_string_lossy())
        .await
        .expect("store");
    let config = config(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = store.clone();
    tokio::spawn(async move {
        rota_server::serve(listener, serving, config, std::future::pending())
            .await
            .expect("serve");
    });
    Served {
        addr,
        url: format!("http://{addr}"),
        store,
        dir,
    }
}

/// The default configuration with uploads kept under `dir`, as `tune` changes it.
pub(crate) fn with_uploads(
    dir: &Path,
    tune: impl FnOnce(&mut rota_server::Config),
) -> rota_server::Config {
    let mut config = rota_server::Config {
        uploads: Some(rota_server::UploadConfig::new(dir.join("uploads"))),
        ..rota_server::Config::default()
    };
    tune(&mut config);
    config
}
