//! The tracker platform's Rust SDK: tracking links, postback and pixel URLs ([`links`]), a batch client with
//! retries and idempotency ([`Client`]), webhook signature checks ([`webhook`]), and the platform API
//! ([`api::ApiClient`], generated from its OpenAPI document).
//!
//! The link formats are the protocol crate's own (`tracker-protocol`, the code the edge Worker and the core node
//! verify links with), so a link built here is a link the platform accepts.
//!
//! ```
//! use tracker_sdk::links::{Key, LinkOptions, click_url};
//!
//! let key = Key::new("acme", "k1").with_secret("s3cret");
//! let options = LinkOptions::new().param("campaign", "spring").ext("gclid").expires_at(1_893_456_000);
//! let url = click_url("https://track.example.com", &key, "https://shop.example/landing", &options)?;
//! assert!(url.starts_with("https://track.example.com/t?v=2&k=acme.k1&url=https%3A%2F%2Fshop.example%2Flanding"));
//! # Ok::<(), tracker_sdk::Error>(())
//! ```

/// The Rust snippets of the onboarding guide compile (as doctests).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/onboarding.md")]
mod onboarding_guide {}

pub mod api;
mod client;
pub mod links;
pub mod webhook;

pub use client::{BatchAnswer, Client, ClientOptions, Rejected, TrackEvent};

/// Why something was refused, by the SDK or by the platform.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input the platform would refuse (a reserved or repeated param, a bad key prefix, ...).
    #[error("{0}")]
    Invalid(#[from] tracker_protocol::ProtocolError),
    /// The platform refused the request.
    #[error("{status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// The platform could not be reached, or answered in a way that is not the platform's.
    #[error("{0}")]
    Network(String),
    /// The client is closed, or its queue is full (the event was not queued).
    #[error("the event was not queued: {0}")]
    NotQueued(&'static str),
}

impl Error {
    /// A refusal from the platform's `{"error": {"code", "message"}}`, or from the text of whatever answered.
    pub(crate) fn from_answer(status: u16, text: &str) -> Self {
        let problem = serde_json::from_str::<serde_json::Value>(text).ok();
        let field = |name: &str| problem.as_ref()?.get("error")?.get(name)?.as_str().map(str::to_owned);
        Error::Refused {
            status,
            code: field("code").unwrap_or_else(|| format!("http_{status}")),
            message: field("message").unwrap_or_else(|| text.chars().take(500).collect()),
        }
    }

    /// The platform's error code (`reserved_param`, `quota_exceeded`, ...), where there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Invalid(e) => Some(e.code()),
            Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}
