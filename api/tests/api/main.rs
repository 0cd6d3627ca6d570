//! The API's integration tests: the real server on port 0, over HTTP, on a real SQLite file
//! and — when `REVIEWS_TEST_DATABASE_URL` is set — on a fresh PostgreSQL database per test.

mod aggregates;
mod bad_input;
mod config;
mod conformance;
mod connections;
mod faults;
mod fuzz;
mod helpers;
mod import;
mod metrics_labels;
mod openapi;
mod raw;
mod sample;
