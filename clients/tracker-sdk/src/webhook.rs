//! Webhook deliveries are signed `Tracker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t "." body)>`,
//! with several `v1=` entries while a secret rotates. Verify the raw body bytes, before parsing them.
//!
//! ```
//! use tracker_sdk::webhook::{sign, verify};
//!
//! let body = br#"{"event_type":"purchase"}"#;
//! let header = sign("whsec_x", 1_700_000_000, body).unwrap();
//! assert!(verify("whsec_x", &header, body, 1_700_000_010, 300).is_ok());
//! assert!(verify("whsec_x", &header, b"{}", 1_700_000_010, 300).is_err());
//! ```

pub use tracker_protocol::webhook::{DELIVERY_ID_HEADER, EVENT_HEADER, SIGNATURE_HEADER, VerifyError, sign, verify};
