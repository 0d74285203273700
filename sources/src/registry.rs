//! What sources keep between requests, owned by whoever runs them (a server,
//! or one `rota ingest` run) instead of living in process-wide statics:
//! SFTP sessions, FTP connection pools, object-store clients and FTPS TLS
//! configurations ([`Connections`]), and the passwords given in the URLs of
//! one ingest ([`Credentials`]).
//!
//! Every cache is bounded ([`ConnectionLimits::max_entries`] per kind, the
//! least recently used going first) and drops what nobody used for
//! [`ConnectionLimits::idle`]. Entries are keyed by a SHA-256 digest of
//! everything that decides whom a connection is authenticated as (server,
//! user, password, key, settings), so a request without the same
//! credentials can never be handed a connection made with them, and no
//! password is kept as a key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rota_core::SourceError;
use sha2::Digest;

use crate::redact;

/// How long a cached connection (or client) may stay unused before it is
/// closed, unless configured otherwise.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// Cached connections of one kind (SFTP sessions, FTP servers, object
/// stores, TLS configurations) at most, unless configured otherwise.
pub const DEFAULT_MAX_ENTRIES: usize = 64;

/// Bounds on what a [`Connections`] registry keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Entries unused for this long are dropped (their connections closed).
    pub idle: Duration,
    /// Entries of one kind at most; past it the least recently used is
    /// dropped (a connection still in use stays open for its user, but is
    /// no longer shared).
    pub max_entries: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            idle: DEFAULT_IDLE,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The connections sources keep between requests, shared by every clone:
/// a server holds one for all its ingests, `rota ingest` one per run. Two
/// registries are equal when they are the same one.
#[derive(Clone, Default)]
pub struct Connections(Arc<Registry>);

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("limits", &self.0.limits)
            .field("entries", &self.len())
            .finish()
    }
}

impl PartialEq for Connections {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Connections {}

impl Connections {
    /// An empty registry bounded by `limits`.
    #[must_use]
    pub fn new(limits: ConnectionLimits) -> Self {
        Self(Arc::new(Registry {
            limits,
            ..Registry::default()
        }))
    }

    /// Its bounds.
    #[must_use]
    pub fn limits(&self) -> ConnectionLimits {
        self.0.limits
    }

    /// Entries cached now, of every kind.
    #[must_use]
    pub fn len(&self) -> usize {
        let r = &self.0;
        r.sftp.len() + r.ftp.len() + r.stores.len() + r.tls.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries idle for longer than the limit now (this also
    /// happens on every use, and in the background while a Tokio runtime
    /// runs).
    pub fn sweep(&self) {
        self.0.sweep();
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.0
    }
}

/// The caches, one per kind of connection.
#[derive(Default)]
pub(crate) struct Registry {
    limits: ConnectionLimits,
    /// SFTP sessions.
    pub(crate) sftp: Cache<crate::sftp::Conn>,
    /// FTP servers: their idle connections and connection permits.
    pub(crate) ftp: Cache<crate::ftp::Server>,
    /// Object-store clients (S3 buckets, HTTP and WebDAV hosts).
    pub(crate) stores: Cache<dyn object_store::ObjectStore>,
    /// FTPS TLS configurations, by CA file.
    pub(crate) tls: Cache<suppaftp::tokio_rustls::rustls::ClientConfig>,
    /// Set once a background sweeper runs.
    sweeper: OnceLock<()>,
}

impl Registry {
    fn sweep(&self) {
        let idle = self.limits.idle;
        self.sftp.sweep(idle);
        self.ftp.sweep(idle);
        self.stores.sweep(idle);
        self.tls.sweep(idle);
    }

    /// Starts the background sweep once, on the current Tokio runtime if
    /// there is one; it ends when the registry is dropped.
    pub(crate) fn watch(self: &Arc<Self>) {
        if self.sweeper.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeper.set(()).is_err() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = (self.limits.idle / 2).max(Duration::from_millis(10));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.sweep();
            }
        });
    }
}

/// A digest of the parts that tell cached connections apart (server, user,
/// password, settings): no two different sets of credentials share a key,
/// and no password is kept in the clear as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key([u8; 32]);

impl Key {
    /// The key of `parts`, each length-prefixed so that no two lists of
    /// parts hash alike by moving a boundary.
    pub(crate) fn of(parts: &[&str]) -> Self {
        let mut hash = sha2::Sha256::new();
        for p in parts {
            hash.update((p.len() as u64).to_le_bytes());
            hash.update(p.as_bytes());
        }
        Self(hash.finalize().into())
    }
}

struct Slot<V: ?Sized> {
    value: Arc<V>,
    /// When it was last used, for the idle bound.
    used: Instant,
    /// The order of its last use, for the least-recently-used bound.
    turn: u64,
}

struct Slots<V: ?Sized> {
    by_key: HashMap<Key, Slot<V>>,
    /// Uses so far: the next use's turn.
    turns: u64,
}

impl<V: ?Sized> Slots<V> {
    fn turn(&mut self) -> u64 {
        self.turns += 1;
        self.turns
    }

    /// Drops the entries nobody holds that were last used `idle` ago or
    /// more; an entry still held counts as used now.
    fn drop_idle(&mut self, idle: Duration) {
        let now = Instant::now();
        self.by_key.retain(|_, s| {
            if Arc::strong_count(&s.value) > 1 {
                s.used = now;
                return true;
            }
            now.duration_since(s.used) < idle
        });
    }
}

/// One kind of cached connection: bounded, least recently used first out,
/// idle entries dropped.
pub(crate) struct Cache<V: ?Sized> {
    slots: Mutex<Slots<V>>,
}

impl<V: ?Sized> Default for Cache<V> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(Slots {
                by_key: HashMap::new(),
                turns: 0,
            }),
        }
    }
}

impl<V: ?Sized> Cache<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<V>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// The entry under `key`, marked used, if it is cached and `alive`
    /// says it still works (else it is dropped).
    pub(crate) fn get(&self, key: &Key, alive: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        let mut slots = self.lock();
        let turn = slots.turn();
        let slot = slots.by_key.get_mut(key)?;
        if !alive(&slot.value) {
            slots.by_key.remove(key);
            return None;
        }
        slot.used = Instant::now();
        slot.turn = turn;
        Some(slot.value.clone())
    }

    /// Caches `value` under `key`, dropping idle entries and, past the
    /// bound, the least recently used ones.
    pub(crate) fn put(&self, registry: &Registry, key: Key, value: Arc<V>) {
        Self::insert(&mut self.lock(), registry.limits, key, value);
    }

    fn insert(slots: &mut Slots<V>, limits: ConnectionLimits, key: Key, value: Arc<V>) {
        slots.drop_idle(limits.idle);
        while slots.by_key.len() >= limits.max_entries.max(1) && !slots.by_key.contains_key(&key) {
            let Some(oldest) = slots
                .by_key
                .iter()
                .min_by_key(|(_, s)| s.turn)
                .map(|(k, _)| *k)
            else {
                break;
            };
            slots.by_key.remove(&oldest);
        }
        let turn = slots.turn();
        slots.by_key.insert(
            key,
            Slot {
                value,
                used: Instant::now(),
                turn,
            },
        );
    }

    /// The entry under `key`, built by `build` (which must not block for
    /// long: the kind's cache waits on it) and cached when missing.
    pub(crate) fn get_or_build(
        &self,
        registry: &Registry,
        key: Key,
        build: impl FnOnce() -> Result<Arc<V>, SourceError>,
    ) -> Result<Arc<V>, SourceError> {
        let mut slots = self.lock();
        let turn = slots.turn();
        if let Some(slot) = slots.by_key.get_mut(&key) {
            slot.used = Instant::now();
            slot.turn = turn;
            return Ok(slot.value.clone());
        }
        let value = build()?;
        Self::insert(&mut slots, registry.limits, key, value.clone());
        Ok(value)
    }

    fn sweep(&self, idle: Duration) {
        self.lock().drop_idle(idle);
    }
}

/// The passwords given in the URLs of one ingest, by server and user, so
/// that the entries its listing found (whose locations show the password as
/// `***`) can be opened by the same ingest. They live in memory only, for
/// as long as the ingest holds them: never shared with another ingest,
/// never stored. The default set is inactive: it remembers nothing, and a
/// `***` password is refused.
#[derive(Clone, Default)]
pub struct Credentials(Option<Arc<Mutex<Passwords>>>);

/// Passwords by server and user.
type Passwords = HashMap<(String, String), String>;

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Credentials(one ingest)",
            None => "Credentials(none)",
        })
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Credentials {}

impl Credentials {
    /// A new, empty set for one ingest.
    #[must_use]
    pub fn for_ingest() -> Self {
        Self(Some(Arc::default()))
    }

    /// The password of `user` (decoded) at `server` for `location`: the
    /// URL's own `given` (decoded), remembered for this ingest; or, when
    /// the URL shows it as `***` (`hidden`), the one this ingest was given.
    ///
    /// # Errors
    /// When the URL shows `***` and this ingest was given no password for
    /// that server and user.
    pub(crate) fn password(
        &self,
        location: &str,
        server: &str,
        user: &str,
        given: &str,
        hidden: bool,
    ) -> Result<String, SourceError> {
        let key = (server.to_owned(), user.to_owned());
        if hidden {
            let known = self.0.as_ref().and_then(|m| {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&key)
                    .cloned()
            });
            return known.ok_or_else(|| SourceError::InvalidLocation {
                location: redact(location),
                reason: format!(
                    "the password of '{user}' is not known here: give it in the URL (a password \
                     given with one job is never used for another)"
                ),
            });
        }
        if let Some(m) = &self.0 {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, given.to_owned());
        }
        Ok(given.to_owned())
    }
}

/// What a source holds while it serves one ingest (or one caller): the
/// registry of connections it may reuse, and the passwords of the ingest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) connections: Connections,
    pub(crate) credentials: Credentials,
}

impl Held {
    /// A fresh registry and a fresh set of passwords, for a source made on
    /// its own (its listings' entries can be opened by it).
    pub(crate) fn own() -> Self {
        Self {
            connections: Connections::default(),
            credentials: Credentials::for_ingest(),
        }
    }

    /// The registry, its background sweep started.
    pub(crate) fn registry(&self) -> &Registry {
        self.connections.0.watch();
        self.connections.registry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(idle: Duration, max_entries: usize) -> Connections {
        Connections::new(ConnectionLimits { idle, max_entries })
    }

    #[test]
    fn the_cache_is_bounded_dropping_the_least_recently_used() {
        let conns = registry(Duration::from_secs(3600), 3);
        let r = conns.registry();
        let cache: Cache<str> = Cache::default();
        for i in 0..100 {
            let key = Key::of(&["user", &format!("password-{i}")]);
            cache.put(r, key, Arc::from(format!("session {i}").as_str()));
            assert!(cache.len() <= 3, "bounded at {i}: {}", cache.len());
        }
        // The most recent three stay.
        for i in 97..100 {
            let key = Key::of(&["user", &format!("password-{i}")]);
            assert!(cache.get(&key, |_| true).is_some(), "{i} kept");
        }
        assert!(
            cache
                .get(&Key::of(&["user", "password-0"]), |_| true)
                .is_none()
        );
        // A dead entry is dropped when asked for.
        let key = Key::of(&["user", "password-99"]);
        assert!(cache.get(&key, |_| false).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn idle_entries_are_dropped_and_held_ones_kept() {
        let conns = registry(Duration::from_millis(50), 10);
        let r = conns.registry();
        let held: Arc<str> = Arc::from("in use");
        let cache: Cache<str> = Cache::default();
        cache.put(r, Key::of(&["a"]), Arc::from("idle"));
        cache.put(r, Key::of(&["b"]), held.clone());
        assert_eq!(cache.len(), 2);
        std::thread::sleep(Duration::from_millis(120));
        cache.sweep(conns.limits().idle);
        assert_eq!(cache.len(), 1, "the idle entry went, the held one stayed");
        assert!(cache.get(&Key::of(&["b"]), |_| true).is_some());
        drop(held);
        std::thread::sleep(Duration::from_millis(120));
        cache.sweep(conns.limits().idle);
        assert_eq!(cache.len(), 0, "released, it goes once idle");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_background_sweep_empties_an_idle_registry() {
        let held = Held {
            connections: registry(Duration::from_millis(50), 10),
            credentials: Credentials::default(),
        };
        let r = held.registry();
        r.stores.put(
            r,
            Key::of(&["s3://b"]),
            Arc::new(object_store::memory::InMemory::new()),
        );
        assert_eq!(held.connections.len(), 1);
        // Nothing else touches the registry: only the background sweep can
        // empty it. Bounded wait.
        for _ in 0..200 {
            if held.connections.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(held.connections.is_empty(), "swept in the background");
    }

    #[test]
    fn keys_tell_credentials_apart() {
        assert_ne!(Key::of(&["u", "pw"]), Key::of(&["u", "pw2"]));
        assert_ne!(Key::of(&["u:", "pw"]), Key::of(&["u", ":pw"]));
        assert_eq!(Key::of(&["u", "pw"]), Key::of(&["u", "pw"]));
    }

    #[test]
    fn a_hidden_password_is_only_known_to_the_ingest_that_was_given_it() {
        let a = Credentials::for_ingest();
        let got = a
            .password("sftp://u:pw@h/d", "sftp://h", "u", "pw", false)
            .expect("given");
        assert_eq!(got, "pw");
        assert_eq!(
            a.password("sftp://u:***@h/d/f", "sftp://h", "u", "", true)
                .expect("remembered by the same ingest"),
            "pw"
        );
        let b = Credentials::for_ingest();
        let err = b
            .password("sftp://u:***@h/d/f", "sftp://h", "u", "", true)
            .expect_err("another ingest does not know it");
        assert!(err.to_string().contains("not known here"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        let none = Credentials::default();
        none.password("sftp://u:pw@h/d", "sftp://h", "u", "pw", false)
            .expect("given");
        assert!(
            none.password("sftp://u:***@h/d", "sftp://h", "u", "", true)
                .is_err(),
            "the inactive set remembers nothing"
        );
        assert!(
            a.password("sftp://v:***@h/d", "sftp://h", "v", "", true)
                .is_err(),
            "another user"
        );
    }
}
