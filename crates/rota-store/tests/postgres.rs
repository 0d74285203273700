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

/// A node waiting for work wakes when another node makes tasks claimable,
/// long before its wait runs out: the wake-up is a notification, not a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_node_wakes_when_another_node_adds_work() {
    use rota_core::JobStart;
    use std::time::{Duration, Instant};

    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let nodes = PgHarness.nodes(clock, 2).await;
    let queues = vec!["wake".to_owned()];
    // The first wait starts the listener; it wakes as soon as it listens.
    nodes[0]
        .wait_for_work(&queues, Duration::from_secs(5))
        .await;
    for round in 0..3 {
        let waiting = {
            let node = Arc::clone(&nodes[0]);
            let queues = queues.clone();
            tokio::spawn(async move {
                node.wait_for_work(&queues, Duration::from_secs(30)).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let added = Instant::now();
        nodes[1]
            .create_job_with(
                new_job(None, "wake"),
                JobStart {
                    tasks: json_tasks(1),
                    ..JobStart::default()
                },
            )
            .await
            .expect("create a job through node 1");
        let woke = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .unwrap_or_else(|_| panic!("round {round}: node 0 slept through node 1's work"))
            .expect("waiter panicked");
        let after = woke.saturating_duration_since(added);
        assert!(
            after < Duration::from_secs(10),
            "round {round}: node 0 woke {after:?} after the work was added, not on its notification"
        );
    }
}

/// A password in the store URL appears in no error, whether the URL does
/// not parse or the server cannot be reached.
#[tokio::test]
async fn store_errors_never_show_the_password() {
    for url in [
        "postgres://rota:s3cret-pw@127.0.0.1:1/test?connect_timeout=2",
        "postgres://rota:s3cret-pw@127.0.0.1:notaport/test",
        "postgres://rota@127.0.0.1:1/test?password=s3cret-pw&connect_timeout=2",
        "postgres://rota:s3cret-pw@127.0.0.1/test?pool_size=0",
        "postgres://rota:s3cret-pw@127.0.0.1/test?nonsense=s3cret-pw",
        "postgres://rota:s3cret-pw@127.0.0.1:1/test?sslmode=require&connect_timeout=2",
        "postgres://rota:s3cret-pw@127.0.0.1/test?sslmode=verify&sslrootcert=s3cret-pw",
    ] {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let Err(err) = PgStore::connect(url, clock).await else {
            panic!("{url} opened a store");
        };
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "{url}: {text}");
    }
}

/// `sslmode` and `sslrootcert` mean what they mean to libpq: TLS is used
/// when offered (`prefer`, the default), insisted on (`require`), and the
/// server's certificate checked against the roots (`verify-ca`) and for the
/// host's name (`verify-full`); a certificate that fails the check fails
/// the connection, saying why.
///
/// The test server must offer TLS with a certificate for `localhost`, given
/// by `ROTA_TEST_POSTGRES_CA` (default: Debian's snakeoil certificate, which
/// Debian's PostgreSQL serves out of the box).
#[tokio::test]
async fn tls_follows_sslmode_and_checks_the_certificate() {
    sweep().await;
    let ca = std::env::var("ROTA_TEST_POSTGRES_CA")
        .unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".to_owned());
    assert!(
        std::path::Path::new(&ca).exists(),
        "{ca} is missing: set ROTA_TEST_POSTGRES_CA to the test server's certificate"
    );
    let base = base_url();
    assert!(
        base.contains("@127.0.0.1"),
        "the TLS test connects to the test server as 127.0.0.1 and as localhost: {base}"
    );
    let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let localhost = base.replace("@127.0.0.1", "@localhost");
    let cases: [(&str, String, Option<bool>); 8] = [
        ("disable", with(&base, "sslmode=disable"), Some(false)),
        ("the default", base.clone(), Some(true)),
        ("require", with(&base, "sslmode=require"), Some(true)),
        (
            "verify-ca",
            with(&base, &format!("sslmode=verify-ca&sslrootcert={ca}")),
            Some(true),
        ),
        (
            "verify-full",
            with(&localhost, &format!("sslmode=verify-full&sslrootcert={ca}")),
            Some(true),
        ),
        (
            "verify-full for another name",
            with(&base, &format!("sslmode=verify-full&sslrootcert={ca}")),
            None,
        ),
        (
            "sslrootcert=system",
            with(&base, "sslmode=verify-ca&sslrootcert=system"),
            None,
        ),
        (
            "require with other roots",
            with(
                &base,
                "sslmode=require&sslrootcert=/etc/ssl/certs/ca-certificates.crt",
            ),
            None,
        ),
    ];
    for (i, (what, url, encrypted)) in cases.into_iter().enumerate() {
        let app = format!("rota_tls_{:08x}_{i}", rand_u32());
        let url = with(
            &url,
            &format!(
                "schema={}&pool_size=1&application_name={app}&connect_timeout=5",
                rota_store::unique_schema("rota_test")
            ),
        );
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let opened = PgStore::connect(&url, clock).await;
        match (encrypted, opened) {
            (Some(want), Ok(store)) => {
                // A call leaves its connection idle in the store's pool.
                store.list_specs().await.expect("list specs");
                let ssl: Option<bool> = admin
                    .query_one(
                        "SELECT bool_or(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a
                         USING (pid) WHERE a.application_name = $1",
                        &[&app],
                    )
                    .await
                    .expect("pg_stat_ssl")
                    .get(0);
                assert_eq!(
                    ssl,
                    Some(want),
                    "{what}: encrypted {ssl:?} (the test server must offer TLS)"
                );
                drop(store);
            }
            (Some(_), Err(e)) => panic!("{what}: {e}"),
            (None, Ok(_)) => panic!("{what}: connected with a certificate it should refuse"),
            (None, Err(e)) => {
                let text = e.to_string();
                eprintln!("{what}: {text}");
                assert!(
                    text.contains("certificate") || text.contains("sslrootcert"),
                    "{what}: {text}"
                );
            }
        }
    }
    for (url, says) in [
        ("sslmode=sometimes", "sslmode must be"),
        ("sslcert=client.pem", "client certificates"),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent.pem",
            "/nonexistent.pem",
        ),
    ] {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let Err(e) = PgStore::connect(&with(&base, url), clock).await else {
            panic!("{url} opened a store");
        };
        assert!(
            matches!(e, rota_core::StoreError::Invalid { .. }) && e.to_string().contains(says),
            "{url}: {e}"
        );
    }
}

/// Connections the server ends (an administrator's `pg_terminate_backend`,
/// a failover) are replaced: the store keeps working, and what the calls
/// that lost their connection reported as transient can be done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_replaced() {
    use rota_core::{ClaimRequest, JobStart};
    use std::time::Duration;

    let app = format!("rota_kill_{:08x}", rand_u32());
    let url = format!(
        "{}&application_name={app}",
        PgHarness::url(&rota_store::unique_schema("rota_test"))
    );
    sweep().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let store = PgHarness::open(&url, clock).await;
    let (admin, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let mut done = 0;
    for round in 0..5 {
        let (job, _) = store
            .create_job_with(
                new_job(Some(format!("round-{round}")), "kill"),
                JobStart {
                    tasks: json_tasks(20),
                    ..JobStart::default()
                },
            )
            .await
            .expect("create");
        let killed: i64 = admin
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1) t",
                &[&app],
            )
            .await
            .expect("terminate")
            .get(0);
        assert!(
            killed > 0,
            "round {round}: the store had no connection to end"
        );
        // Calls may fail as transient while the pool notices; bounded.
        let mut claimed = Vec::new();
        for _ in 0..50 {
            match store
                .claim(ClaimRequest {
                    queues: vec!["kill".into()],
                    worker: "w".into(),
                    limit: 100,
                    lease: Duration::from_secs(30),
                    specs: Vec::new(),
                    inline_max: None,
                })
                .await
            {
                Ok(leases) => {
                    claimed = leases;
                    break;
                }
                Err(e) => {
                    assert!(e.is_retryable(), "round {round}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        assert_eq!(claimed.len(), 20, "round {round}");
        let reports = claimed
            .iter()
            .map(|l| rota_core::Report {
                lease: l.lease,
                outcome: rota_core::Outcome::Success(b"ok".to_vec()),
            })
            .collect();
        store.report(reports).await.expect("report");
        let job = store.get_job(job.id).await.expect("get").expect("job");
        assert_eq!(job.counts.succeeded, 20, "round {round}");
        done += 20;
    }
    assert_eq!(done, 100);
}

/// `url` with the query parameters `params` added.
fn with(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id()
}

/// A released job on `queue`, with default retries.
fn new_job(key: Option<String>, queue: &str) -> rota_core::NewJob {
    rota_core::NewJob {
        key,
        spec: queue.into(),
        queue: queue.into(),
        params: serde_json::json!({}),
        retry: rota_core::RetryPolicy::default(),
        hold: false,
        ingest: None,
        timing: rota_core::Timing::default(),
    }
}

/// `n` one-row JSON tasks keyed `000`, `001`, ….
fn json_tasks(n: usize) -> Vec<rota_core::NewTask> {
    (0..n)
        .map(|i| rota_core::NewTask {
            key: format!("{i:03}"),
            payload: b"{}".to_vec(),
            encoding: rota_core::PayloadEncoding::Json,
            rows: 1,
        })
        .collect()
}
