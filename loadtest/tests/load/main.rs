//! Integration tests of the load tester: every test starts real servers on 127.0.0.1, port 0,
//! and drives the library in-process (`execute`) or the whole command (`run`). Loads are a few
//! hundred requests per second for a second or two, and rate checks are generous: the machine
//! is shared with other builds.

mod helpers;

mod command;
mod edge;
mod errors;
mod omission;
mod rate;
mod requests;
mod scenarios;
mod schema;
