//! A small pool of PostgreSQL connections, each with its prepared statements.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rota_core::StoreError;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Pg;

/// One connection and the statements prepared on it, by their text.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Prepares `sql` on `client` once per connection; later calls reuse it.
pub(super) async fn prepare(
    client: &impl tokio_postgres::GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, StoreError> {
    if let Some(stmt) = statements.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = client.prepare(sql).await.pg()?;
    statements.insert(sql, stmt.clone());
    Ok(stmt)
}

impl Conn {
    /// The connection's client and its statement cache, borrowed apart so a
    /// transaction on the one can prepare into the other.
    pub(super) fn split(&mut self) -> (&mut Client, &mut HashMap<&'static str, Statement>) {
        (&mut self.client, &mut self.statements)
    }
}

/// At most `size` connections to one database, opened when first needed
/// and kept while they work; a connection that broke is dropped and the next
/// caller opens a new one.
pub(super) struct Pool {
    config: Config,
    /// TLS, as the URL's `sslmode` asks.
    tls: MakeRustlsConnect,
    /// `SET search_path` to this schema on every connection, when given.
    schema: Option<String>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped, unless it
/// broke.
pub(super) struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

impl Pool {
    pub(super) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        schema: Option<String>,
        size: usize,
    ) -> Self {
        Self {
            config,
            tls,
            schema,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// The schema every connection works in, when the URL named one.
    pub(super) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// A working connection: an idle one, or a new one.
    pub(super) async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let idle = loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                Some(conn) if conn.client.is_closed() => {}
                other => break other,
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    /// A new connection (its I/O runs on its own task).
    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| StoreError::Transient(Box::new(super::PgError(e))))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // next call on the client then fails and the pool drops it.
            let _ = connection.await;
        });
        if let Some(schema) = &self.schema {
            client
                .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
                .await
                .pg()?;
        }
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }
}

/// `name` as an SQL identifier, quoted.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
