//! Runs the conformance suite against PostgreSQL over a real connection, each
//! store in a schema of its own, and the scenarios of several nodes on one
//! database.
//!
//! The server is `ROTA_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). It must be reachable: these
//! tests fail, they never skip.

use std::sync::Arc;

use async_trait::async_trait;
use rota_core::{ManualClock, Store};
use rota_store::PgStore;
use rota_store::conformance::{Harness, NodeHarness};

/// The database the tests use.
fn base_url() -> String {
    std::env::var("ROTA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Makes each store in a fresh schema; `nodes` opens several stores on one.
struct PgHarness;

impl PgHarness {
    fn url(schema: &str) -> String {
        let base = base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={schema}&pool_size=8")
    }

    async fn open(url: &str, clock: Arc<ManualClock>) -> Arc<dyn Store> {
        Arc::new(PgStore::connect(url, clock).await.unwrap_or_else(|e| {
            panic!(
                "cannot open the PostgreSQL test store (is PostgreSQL running at {}?): {e}",
                base_url()
            )
        }))
    }
}

/// Drops the schemas of earlier test processes that have ended, once per
/// process, so the test database does not grow run after run.
async fn sweep() {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable: {e}", base_url()));
            tokio::spawn(connection);
            let rows = client
                .query(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rota\\_test\\_%'",
                    &[],
                )
                .await
                .expect("list test schemas");
            for row in rows {
                let name: String = row.get(0);
                let pid = name.split('_').nth(2).unwrap_or_default();
                if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
                    // Another test process may be dropping it too.
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            }
        })
        .await;
}

#[async_trait]
impl Harness for PgHarness {
    async fn fresh(&self, clock: Arc<ManualClock>) -> Arc<dyn Store> {
        sweep().await;
        let schema = rota_store::unique_schema("rota_test");
        Self::open(&Self::url(&schema), clock).await
    }
}

#[async_trait]
impl NodeHarness for PgHarness {
    async fn nodes(&self, clock: Arc<ManualClock>, n: usize) -> Vec<Arc<dyn Store>> {
        sweep().await;
        let url = Self::url(&rota_store::unique_schema("rota_test"));
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Self::open(&url, Arc::clone(&clock)).await);
        }
        nodes
    }
}

rota_store::conformance_tests!(PgHarness);
rota_store::conformance_node_tests!(PgHarness);
