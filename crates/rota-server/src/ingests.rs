//! The batch ingests the server runs for jobs of `POST /schedule`, and their
//! resumption after a crash.
//!
//! A batch job is created held, in one store transaction with its *plan*:
//! the batch request, with its source redacted, and a claim on its ingest
//! for this server (its holder id, random per process) that the running
//! ingest renews. Every server on the store looks for held, pending jobs
//! whose claim ran out (their server died, or stopped before the ingest
//! ended) and runs their ingest again under its own claim; the ingest skips
//! the files and tasks the interrupted one made, so no row is lost or
//! doubled. The store hands each such job to one server at a time.
//!
//! Secrets are never stored: a source whose URL carries a password or a
//! query string (a signed URL) is planned without them, and a job that must
//! resume from such a plan is failed, saying to schedule it again. Source
//! credentials from the server's own settings are taken afresh.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rota_core::{IngestClaim, JobId, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::State;
use crate::routes::BatchRequest;

/// How long a server's claim on an ingest lasts unless renewed: after a
/// crash, the ingest resumes (on a restarted server, or another one on the
/// store) this long after its last renewal at most, plus [`SCAN_EVERY`].
pub(crate) const LEASE: Duration = Duration::from_secs(15);

/// How often a running ingest renews its claim.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// How often a server looks for ingests to resume, and for ingests other
/// servers run to read some of their files.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Ingests one server resumes at once, at most.
const RESUME_AT_ONCE: usize = 4;

/// What a batch job's plan holds: the request, without secrets.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    /// The batch request; its source is redacted.
    batch: BatchRequest,
    /// Whether redacting the source took a secret out of it (then the
    /// ingest cannot run again from the plan).
    #[serde(default)]
    secret_dropped: bool,
}

/// The ingests this server runs, and the name it claims them under.
pub(crate) struct Ingests {
    holder: String,
    running: Mutex<HashSet<JobId>>,
    resumed: Mutex<usize>,
}

impl Default for Ingests {
    fn default() -> Self {
        Self {
            holder: format!("server-{}", uuid::Uuid::now_v7().simple()),
            running: Mutex::default(),
            resumed: Mutex::default(),
        }
    }
}

impl Ingests {
    /// The name this server claims ingests under.
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<JobId>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn resumed(&self) -> std::sync::MutexGuard<'_, usize> {
        self.resumed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The plan stored with a batch job: `batch` with its source redacted.
pub(crate) fn plan(batch: &BatchRequest) -> Value {
    let source = rota_sources::redact(&batch.source);
    let secret_dropped = source != batch.source;
    let plan = Plan {
        batch: BatchRequest {
            source,
            ..batch.clone()
        },
        secret_dropped,
    };
    serde_json::to_value(plan).unwrap_or(Value::Null)
}

/// Runs the ingest of a job this server just created (and holds the claim
/// on), in the background.
pub(crate) fn spawn(state: &State, ingest: rota_ingest::IngestRequest, job: JobId) {
    let state = state.clone();
    tokio::spawn(async move { run(&state, ingest, job).await });
}

/// Runs an ingest, once it has a turn among the batch ingests running at
/// once, while renewing its claim; stops it when the claim is lost
/// (another server took the job) or the job no longer waits for it
/// (cancelled). The outcome is logged and on the job.
///
/// A job waiting for its turn stays held and its claim is not renewed, so
/// the waiting costs the store nothing; should the claim run out meanwhile,
/// another server on the store may take the ingest, and this one then
/// finds its claim taken and leaves it. Uploads are bounded by their own
/// quotas instead of turns.
async fn run(state: &State, ingest: rota_ingest::IngestRequest, job: JobId) {
    if !state.ingests.running().insert(job) {
        return; // already running here
    }
    let turn = state.ingest_turns.acquire().await;
    let renewed = || state.store.renew_ingest(job, state.ingests.holder(), LEASE);
    match renewed().await {
        Ok(true) => {
            let renew = async {
                let mut tick = tokio::time::interval(RENEW_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match renewed().await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(job = %job, error = %e, "cannot renew the claim on an ingest; will retry");
                        }
                    }
                }
            };
            tokio::select! {
                // A store error part way leaves the job held: its claim runs
                // out unrenewed, and the ingest is run again (by this server
                // or another) where it stopped.
                _ = crate::routes::run_ingest(state, ingest, job) => {}
                () = renew => {
                    tracing::warn!(job = %job, "the job no longer waits for this ingest (cancelled, or resumed by another server); stopped it");
                }
            }
        }
        Ok(false) => {
            tracing::info!(job = %job, "the job no longer waits for this ingest (cancelled, or taken by another server while it waited for a turn)");
        }
        Err(e) => {
            // The claim runs out, and the ingest is resumed (here or on
            // another server) once the store answers.
            tracing::warn!(job = %job, error = %e, "cannot claim an ingest; it will be resumed");
        }
    }
    drop(turn);
    state.ingests.running().remove(&job);
}

/// Looks for ingests to resume, at once and then every [`SCAN_EVERY`],
/// until the server stops.
pub(crate) fn spawn_resumer(state: State) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCAN_EVERY);
        loop {
            tick.tick().await;
            if *state.stopping.borrow() {
                return;
            }
            let room = RESUME_AT_ONCE.saturating_sub(*state.ingests.resumed());
            if room == 0 {
                continue;
            }
            let limit = u32::try_from(room).unwrap_or(u32::MAX);
            let claims = match state
                .store
                .claim_ingests(state.ingests.holder(), limit, LEASE)
                .await
            {
                Ok(claims) => claims,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for ingests to resume; will retry");
                    continue;
                }
            };
            let room = room.saturating_sub(claims.len());
            for claim in claims {
                if state.ingests.running().contains(&claim.job.id) {
                    continue; // ours, running; its renewal came late
                }
                *state.ingests.resumed() += 1;
                let state = state.clone();
                tokio::spawn(async move {
                    resume(&state, claim).await;
                    let mut resumed = state.ingests.resumed();
                    *resumed = resumed.saturating_sub(1);
                });
            }
            if room == 0 {
                continue;
            }
            // Ingests other nodes run: this one reads some of their files.
            let running = match state
                .store
                .running_ingests(u32::try_from(room).unwrap_or(u32::MAX))
                .await
            {
                Ok(running) => running,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for ingests to help with; will retry");
                    continue;
                }
            };
            for claim in running {
                if state.ingests.running().contains(&claim.job.id) {
                    continue;
                }
                *state.ingests.resumed() += 1;
                let state = state.clone();
                tokio::spawn(async move {
                    help(&state, claim).await;
                    let mut resumed = state.ingests.resumed();
                    *resumed = resumed.saturating_sub(1);
                });
            }
        }
    });
}

/// Runs again the ingest of a held job whose claim this server took, or
/// fails the job saying why it cannot be.
async fn resume(state: &State, claim: IngestClaim) {
    let id = claim.job.id;
    match from_plan(state, claim) {
        Ok(ingest) => {
            tracing::info!(job = %id, "resuming the interrupted batch ingest of a held job");
            run(state, ingest, id).await;
        }
        Err(why) => {
            let error = format!(
                "the batch ingest was interrupted (the server stopped) and cannot resume: {why}; \
                 schedule the job again"
            );
            tracing::warn!(job = %id, error = %error, "cannot resume a batch ingest");
            if let Err(e) = state.store.fail_job(id, error, None).await {
                tracing::error!(job = %id, error = %e, "could not mark the job failed");
            }
            state.work.notify_waiters();
        }
    }
}

/// Reads files of a held job whose ingest another node runs, beside it:
/// each file is read by the node that claims it first, and the last node to
/// see every file done releases the job (see `IngestRequest::node`). A job
/// whose plan cannot be run here is left to the node that runs it.
async fn help(state: &State, claim: IngestClaim) {
    let id = claim.job.id;
    let Ok(ingest) = from_plan(state, claim) else {
        return;
    };
    if !state.ingests.running().insert(id) {
        return; // already running here
    }
    let turn = state.ingest_turns.acquire().await;
    tracing::info!(job = %id, "helping read the files of a batch job another node ingests");
    let _ = crate::routes::run_ingest(state, ingest, id).await;
    drop(turn);
    state.ingests.running().remove(&id);
}

/// The ingest of a held job, from the plan stored with it, or why it
/// cannot run again.
fn from_plan(state: &State, claim: IngestClaim) -> Result<rota_ingest::IngestRequest, String> {
    let job = claim.job;
    (|| -> Result<rota_ingest::IngestRequest, String> {
        let plan: Plan = serde_json::from_value(claim.plan)
            .map_err(|e| format!("its ingest plan is unreadable ({e})"))?;
        if plan.secret_dropped {
            return Err(
                "its source URL carried a secret (a password or a query string), which is never stored"
                    .to_owned(),
            );
        }
        state
            .config
            .allow
            .check(&plan.batch.source)
            .map_err(|e| e.message)?;
        let key = job
            .key
            .clone()
            .ok_or_else(|| "the job has no key".to_owned())?;
        let new_job = NewJob {
            key: Some(key),
            spec: job.spec.clone(),
            queue: job.queue.clone(),
            params: job.params.clone(),
            retry: job.retry,
            hold: true,
            ingest: None,
            timing: job.timing,
        };
        crate::routes::ingest_request(state, &plan.batch, new_job).map_err(|e| e.message)
    })()
}
