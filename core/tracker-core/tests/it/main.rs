//! The core node's integration tests, as one test binary: every test binary links the whole data stack (about
//! 350 MB each in a debug build), so one binary instead of four keeps a fresh `make test` gigabytes smaller.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

mod common;

mod api;
mod consumers;
mod golden;
mod migration;
mod node;
mod spool;
mod usage;
