//! # The edge Worker
//!
//! Rust compiled to WASM on Cloudflare Workers. It answers the tracking endpoints at the location nearest to the
//! user with the same `tracker_protocol::service` code as the core node (one implementation of verification,
//! validation and redirects), looks tenants, short links and tokens up in Workers KV (filled from the core's signed
//! lookup API on a miss, and cached in the isolate), and forwards events through a Cloudflare Queue to the core
//! fleet's signed, idempotent intake. It also serves the platform API under `/api`, forwarding each request to the
//! core's internal API signed with the service credential (`api`).
//!
//! `#[event]` handlers only dispatch (`runtime`, wasm32 only); the modules below are plain Rust that also builds
//! and is tested natively.

pub mod api;
pub mod cache;
pub mod config;
pub mod dlq;
pub mod limiter;
pub mod pack;
#[cfg(target_arch = "wasm32")]
mod runtime;
pub mod v1;
