//! The PostgreSQL store's schema, as numbered migrations.
//!
//! Each migration runs once, in order, in one transaction, under an advisory
//! lock, so nodes that start together do not race; `rota_migrations` records
//! what ran.

/// The migrations, by version (1-based: `MIGRATIONS[0]` is version 1).
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The advisory lock every migration runs under (`rota` + `migr` in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x726f_7461_6d69_6772;

/// Version 1: specs, jobs, the hot `tasks` table of claimable work, and what
/// lives apart from it (payloads, results, files, callbacks, counts).
///
/// `tasks` holds only what claims, leases and listings read; payloads and
/// results are written once and read by id, in their own tables, so the hot
/// table's rows stay small and its updates can stay on their page (a low
/// fill factor leaves room). No foreign key points into `tasks`: deleting
/// or updating a task never has to look elsewhere.
///
/// `job_counts` keeps a job's task counts by state as they change, written by
/// statement-level triggers on `tasks` from the rows each statement changed.
/// A statement adds its deltas to one of eight shards picked at random, so
/// concurrent claims on one job rarely wait on one counter row; readers sum
/// the shards. The trigger functions keep the search path they were made
/// with, so a statement from any session counts into this schema's table.
const V1: &str = r#"
CREATE TABLE specs (
    name TEXT COLLATE "C" PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE jobs (
    id            TEXT COLLATE "C" PRIMARY KEY,
    key           TEXT COLLATE "C" UNIQUE,
    spec          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    params        TEXT NOT NULL,
    state         TEXT NOT NULL,
    retry         TEXT NOT NULL,
    released      BOOLEAN NOT NULL,
    error         TEXT,
    ingest        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    timing        TEXT,
    ingest_plan   TEXT,
    ingest_holder TEXT,
    ingest_until  BIGINT
);
CREATE INDEX jobs_ingest_plans ON jobs (created_at, id)
    WHERE ingest_plan IS NOT NULL AND NOT released;
CREATE INDEX jobs_ended ON jobs (finished_at, id) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_open ON jobs (id) WHERE state IN ('pending', 'running');
CREATE TABLE tasks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           TEXT COLLATE "C" NOT NULL,
    key              TEXT COLLATE "C" NOT NULL,
    queue            TEXT NOT NULL,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    rows             BIGINT NOT NULL,
    payload_bytes    BIGINT NOT NULL,
    encoding         TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    timeout_ms       BIGINT,
    available_at     BIGINT,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    deadline         BIGINT,
    worker           TEXT,
    error            TEXT,
    progress         TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    UNIQUE (job_id, key)
) WITH (fillfactor = 70);
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, available_at, id)
    WHERE state IN ('queued', 'retrying');
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'running';
CREATE TABLE task_payloads (
    task_id BIGINT PRIMARY KEY,
    codec   SMALLINT NOT NULL,
    data    BYTEA NOT NULL
);
-- Payloads are compressed (or not) before they arrive.
ALTER TABLE task_payloads ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE task_results (
    task_id BIGINT PRIMARY KEY,
    result  BYTEA NOT NULL
);
CREATE TABLE job_counts (
    job_id TEXT COLLATE "C" NOT NULL,
    state  TEXT NOT NULL,
    shard  SMALLINT NOT NULL,
    queue  TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (job_id, state, shard)
);
CREATE TABLE job_files (
    job_id   TEXT COLLATE "C" NOT NULL,
    relative TEXT COLLATE "C" NOT NULL,
    location TEXT NOT NULL,
    size     BIGINT,
    etag     TEXT,
    format   TEXT NOT NULL,
    state    TEXT NOT NULL,
    bytes    BIGINT NOT NULL,
    rows     BIGINT NOT NULL,
    tasks    BIGINT NOT NULL,
    skipped  BIGINT NOT NULL,
    error    TEXT,
    PRIMARY KEY (job_id, relative)
);
CREATE TABLE callbacks (
    job_id       TEXT COLLATE "C" NOT NULL,
    idx          INTEGER NOT NULL,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    delivered    TEXT,
    delivered_at BIGINT,
    attempting   TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT,
    lease_until  BIGINT,
    last_status  INTEGER,
    last_error   TEXT,
    gave_up      TEXT,
    done         BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX callbacks_open ON callbacks (job_id) WHERE NOT done;

-- Rows inserted count up, rows deleted count down: one function, the
-- changed rows under one name in both triggers.
CREATE FUNCTION rota_count_added_or_removed() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_counts AS c (job_id, state, shard, queue, n)
    SELECT d.job_id, d.state, s.shard, d.queue,
           CASE WHEN TG_OP = 'DELETE' THEN -d.n ELSE d.n END
    FROM (SELECT job_id, state, min(queue) AS queue, count(*) AS n
          FROM changed GROUP BY job_id, state) d,
         (SELECT floor(random() * 8)::smallint AS shard) s
    ORDER BY d.job_id, d.state
    ON CONFLICT (job_id, state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE FUNCTION rota_count_updated() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_counts AS c (job_id, state, shard, queue, n)
    SELECT d.job_id, d.state, s.shard, d.queue, d.n
    FROM (SELECT job_id, state, min(queue) AS queue, sum(delta) AS n
          FROM (SELECT job_id, state, queue, 1 AS delta FROM after_rows
                UNION ALL
                SELECT job_id, state, queue, -1 AS delta FROM before_rows) x
          GROUP BY job_id, state HAVING sum(delta) <> 0) d,
         (SELECT floor(random() * 8)::smallint AS shard) s
    ORDER BY d.job_id, d.state
    ON CONFLICT (job_id, state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rota_count_added_or_removed();
CREATE TRIGGER tasks_counted_on_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rota_count_updated();
CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rota_count_added_or_removed();
"#;

/// Version 2: the holders of singleton duties, one row a duty, each hold a
/// numbered term.
const V2: &str = r#"
CREATE TABLE duties (
    name   TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    term   BIGINT NOT NULL,
    until  BIGINT NOT NULL
);
"#;

/// Version 3: the node that reads (or read) a file of an ingest, and until
/// when its claim on a file it reads lasts.
const V3: &str = r#"
ALTER TABLE job_files ADD COLUMN node TEXT, ADD COLUMN until BIGINT;
"#;
