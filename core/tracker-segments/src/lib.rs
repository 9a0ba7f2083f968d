//! # Columnar segments of recent events
//!
//! The hot tier keeps a node's recent events as immutable segments: each an Arrow IPC file (zstd-compressed
//! columns) of one consumer batch, or of several merged, sorted by tenant, then time, then position (`seq`). A
//! segment never changes: it is written whole, merged into a larger one, and deleted whole when its events are past
//! the hot retention.
//!
//! - [`build`] turns events (each with its position) into a segment's bytes, and says per tenant which rows, times
//!   and arrival times it holds, with a [`Bloom`] filter of its param values and links.
//! - [`Segment`] reads one: a tenant's rows in a time range by binary search, and each row's columns, or the
//!   whole [`tracker_protocol::Event`] back.
//!
//! Where segments are kept (the manifest, in the same transaction as the counts and the consumer's position) is the
//! store's business (`tracker-store`'s hot tier); this crate has no I/O.

mod bloom;
mod build;
mod segment;

pub use bloom::{Bloom, Key};
pub use build::{Built, TenantPart, build};
pub use segment::Segment;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment encoding: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("segment column {0} is missing or of another type")]
    Column(&'static str),
    #[error("segment holds {0} record batches, not one")]
    Batches(usize),
}

pub type Result<T, E = SegmentError> = std::result::Result<T, E>;
