//! End-to-end suite: the real `vllm-batch` binary over HTTP, a real SQLite file, and the
//! simulated upstream (`upstream-sim`) on a real socket. Nothing is mocked.

mod support;

mod auth;
mod batches;
mod cli;
mod concurrency;
mod crash;
mod endpoints;
mod files;
mod hardening;
mod hostile;
mod idempotency;
mod lifecycle;
mod load;
mod monitoring;
mod observability;
mod openapi;
mod outages;
mod results;
mod retry;
mod s3;
mod scaleout;
mod schema_fuzz;
mod sdk;
mod sharing;
mod validation;
mod web;
mod webhooks;
mod worker;
