//! End-to-end tests: the real `rota` binary against a real SQLite store file
//! (and PostgreSQL, for several nodes),
//! with real worker processes (killed, stopped and resumed by signal).

mod crosscheck;
mod files;
mod ingest;
mod nodes;
mod openapi;
mod remote;
mod security;
mod serve;
mod serve_crash;
mod support;
mod upload;
mod worker;
mod ws;
