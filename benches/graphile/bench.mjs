// graphile-worker's claim+complete throughput on the database the queue
// benchmark runs Rota's stores on: N no-op jobs are added (untimed), then
// run() with a no-op task is timed until every job is done.
//
// Usage:
//   node benches/graphile/bench.mjs [--database URL] [--jobs N]
//       [--concurrency K] [--local-queue S] [--batch-delay MS] [--schema NAME]
//
//   --database     PostgreSQL URL (default postgres://postgres@127.0.0.1:5432/test)
//   --jobs         jobs to add and run (default 200000)
//   --concurrency  jobs run at once (graphile's `concurrency`, default 8)
//   --local-queue  jobs one fetch locks and hands out locally (`localQueue.size`,
//                  default 512; -1 turns the local queue off)
//   --batch-delay  `completeJobBatchDelay` and `failJobBatchDelay` in ms
//                  (default 0: completions made together are written together;
//                  -1 turns batching off)
//   --schema       graphile-worker's schema (default graphile_worker); it is
//                  dropped before the run and after it
//
// The batching options are those graphile-worker's performance page runs its
// own figures with (a local queue of about 500, batch delays of 0). The last
// line printed is a JSON object with the figures.

import { EventEmitter } from "node:events";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const CHUNK = 1000;

function parseArgs(argv) {
  const out = {
    database: "postgres://postgres@127.0.0.1:5432/test",
    jobs: 200000,
    concurrency: 8,
    localQueue: 512,
    batchDelay: 0,
    schema: "graphile_worker",
  };
  const names = {
    "--database": ["database", String],
    "--jobs": ["jobs", Number],
    "--concurrency": ["concurrency", Number],
    "--local-queue": ["localQueue", Number],
    "--batch-delay": ["batchDelay", Number],
    "--schema": ["schema", String],
  };
  for (let i = 0; i < argv.length; i++) {
    const known = names[argv[i]];
    if (!known || i + 1 >= argv.length) {
      console.error(`unknown or incomplete argument: ${argv[i]}`);
      process.exit(2);
    }
    const [key, parse] = known;
    out[key] = parse(argv[++i]);
    if (typeof out[key] === "number" && !Number.isFinite(out[key])) {
      console.error(`${argv[i - 1]} needs a number`);
      process.exit(2);
    }
  }
  if (!/^[a-z_][a-z0-9_]*$/.test(out.schema)) {
    console.error("--schema must be a plain lower-case identifier");
    process.exit(2);
  }
  return out;
}

// Warnings and errors only: graphile-worker logs every completed job at info.
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    console.error(`graphile-worker ${level}: ${message}`);
  }
});

async function dropSchema(utils, schema) {
  await utils.withPgClient((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
}

async function remaining(utils, schema) {
  const { rows } = await utils.withPgClient((client) =>
    client.query(`SELECT count(*)::int AS n FROM ${schema}._private_jobs`),
  );
  return rows[0].n;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const shared = {
    connectionString: a.database,
    schema: a.schema,
    logger: quiet,
  };
  const utils = await makeWorkerUtils(shared);
  try {
    await dropSchema(utils, a.schema);
    await utils.migrate();

    const addStart = process.hrtime.bigint();
    for (let done = 0; done < a.jobs; done += CHUNK) {
      const n = Math.min(CHUNK, a.jobs - done);
      const specs = Array.from({ length: n }, (_, i) => ({
        identifier: "noop",
        payload: { n: done + i },
      }));
      await utils.addJobs(specs);
    }
    const addSecs = Number(process.hrtime.bigint() - addStart) / 1e9;
    const queued = await remaining(utils, a.schema);
    if (queued !== a.jobs) {
      throw new Error(`added ${a.jobs} jobs but ${queued} are queued`);
    }

    const events = new EventEmitter();
    let succeeded = 0;
    let failed = 0;
    let allDone;
    const finished = new Promise((resolve) => {
      allDone = resolve;
    });
    events.on("job:success", () => {
      succeeded += 1;
      if (succeeded + failed === a.jobs) allDone();
    });
    events.on("job:failed", () => {
      failed += 1;
      if (succeeded + failed === a.jobs) allDone();
    });

    const start = process.hrtime.bigint();
    const runner = await run({
      ...shared,
      events,
      concurrency: a.concurrency,
      maxPoolSize: Math.max(10, a.concurrency + 2),
      noHandleSignals: true,
      pollInterval: 1000,
      taskList: { noop: async () => {} },
      preset: {
        worker: {
          localQueue: { size: a.localQueue },
          completeJobBatchDelay: a.batchDelay,
          failJobBatchDelay: a.batchDelay,
        },
      },
    });
    await finished;
    // Batched completions are written after the jobs' events: the run ends
    // when the database holds no job.
    let left = await remaining(utils, a.schema);
    while (left > 0) {
      await new Promise((r) => setTimeout(r, 5));
      left = await remaining(utils, a.schema);
    }
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    await runner.stop();

    const rate = a.jobs / secs;
    console.log(
      `graphile-worker: ${a.jobs} jobs in ${secs.toFixed(2)}s, ${Math.round(rate)} jobs/s ` +
        `(concurrency ${a.concurrency}, localQueue ${a.localQueue}, batch delay ${a.batchDelay} ms); ` +
        `${succeeded} succeeded, ${failed} failed`,
    );
    console.log(
      `graphile-worker addJobs (${CHUNK} a call, untimed in the run): ${Math.round(a.jobs / addSecs)} jobs/s`,
    );
    console.log(
      JSON.stringify({
        system: "graphile-worker",
        jobs: a.jobs,
        seconds: secs,
        jobs_per_sec: rate,
        add_jobs_per_sec: a.jobs / addSecs,
        succeeded,
        failed,
        concurrency: a.concurrency,
        local_queue: a.localQueue,
        batch_delay_ms: a.batchDelay,
      }),
    );
    if (succeeded !== a.jobs) {
      process.exitCode = 1;
    }
  } finally {
    await dropSchema(utils, a.schema);
    await utils.release();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
