//! The one error type of the protocol: every rejection has a stable machine code, an HTTP status that the
//! Worker and the core node both answer with, and a sentence for humans.

/// Why the protocol rejected an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    // Event validation.
    #[error("event_type must be 1 to {max} characters from [A-Za-z0-9_.:-]")]
    InvalidEventType { max: usize },
    #[error("an event may carry at most {max} params")]
    TooManyParams { max: usize },
    #[error("param key {key:?} must be 1 to {max} characters from [A-Za-z0-9_.:-]")]
    InvalidParamKey { key: String, max: usize },
    #[error("param {key:?} has a value longer than {max} bytes")]
    ParamValueTooLong { key: String, max: usize },
    #[error("param {key:?} must be a string, number or boolean")]
    InvalidParamValue { key: String },
    #[error("raw_payload is larger than {max} bytes")]
    RawPayloadTooLarge { max: usize },
    #[error("field {field} is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("the event is larger than {max} bytes in total")]
    EventTooLarge { max: usize },
    #[error("event_id must be a UUID in its hyphenated form (UUIDv7 recommended) and not the nil UUID")]
    InvalidEventId,
    #[error("timestamp must be milliseconds since the Unix epoch, after 2000-01-01")]
    InvalidTimestamp,
    #[error("timestamp is more than {skew_ms} ms in the future")]
    TimestampInFuture { skew_ms: i64 },
    #[error("key_prefix must be 2 to 32 characters from [a-z0-9]")]
    InvalidKeyPrefix,
    #[error("event body is not valid: {reason}")]
    InvalidEventBody { reason: String },

    // Links.
    #[error("the link has none of the parameters of a tracking link (url and sig, d, or v=2)")]
    MissingLinkParams,
    #[error("parameter {name:?} appears more than once")]
    DuplicateParam { name: String },
    #[error("parameter {name:?} is reserved by the link format and cannot be used as a param")]
    ReservedParam { name: String },
    #[error("link version {version:?} is not supported (use 2, or the unversioned v1 format)")]
    UnsupportedLinkVersion { version: String },
    #[error("the signature is malformed: {reason}")]
    MalformedSignature { reason: &'static str },
    #[error("the signature does not match the link")]
    InvalidSignature,
    #[error("no tenant with key prefix {key_prefix:?}")]
    UnknownTenant { key_prefix: String },
    #[error("the link names key id {kid:?}, which this tenant does not have or has retired")]
    UnknownKeyId { kid: String },
    #[error("this link uses the global {what}, which this server is not configured with")]
    GlobalKeyNotConfigured { what: &'static str },
    #[error("v1-format {format} links are not accepted by this server (see URL_MODE)")]
    LinkFormatDisabled { format: &'static str },
    #[error("the link expired")]
    LinkExpired,
    #[error("exp must be a Unix time in seconds")]
    InvalidExpiry,
    #[error("parameter {name:?} is not covered by the signature and not listed in ext")]
    UnsignedParam { name: String },
    #[error("the encrypted link is malformed: {reason}")]
    MalformedCiphertext { reason: &'static str },
    #[error("the encrypted link could not be decrypted with the tenant's keys")]
    DecryptionFailed,
    #[error("short link id must look like tu_<uuid>")]
    InvalidShortLinkId,

    // Service (endpoint) rules.
    #[error("no such short link for this tenant")]
    UnknownShortLink,
    #[error("tenant {key_prefix:?} is suspended")]
    TenantSuspended { key_prefix: String },
    #[error("key_prefix (or a token, or a v2 signature) is required")]
    MissingKeyPrefix,
    #[error("key_prefix does not match the token's tenant")]
    TenantMismatch,
    #[error("the beacon body is not valid: {reason}")]
    InvalidBeacon { reason: String },
    #[error("{reason}")]
    Unauthorized { reason: &'static str },
    #[error("the batch is not valid: {reason}")]
    InvalidBatch { reason: String },
    #[error("the batch has no events")]
    EmptyBatch,
    #[error("a batch may hold at most {max} events, this one has at least {got}")]
    BatchTooLarge { max: usize, got: usize },
    #[error("the body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("every event in the batch was rejected")]
    NoValidEvents,
    #[error("Idempotency-Key must be 1 to 128 characters from [A-Za-z0-9_.:-]")]
    InvalidIdempotencyKey,
    #[error("{what} is unavailable right now")]
    Unavailable { what: &'static str },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "the monthly allowance of {allowance} events is used up; ingestion resumes in {retry_after_secs} s (next month)"
    )]
    QuotaExceeded { allowance: u64, retry_after_secs: u64 },

    // Destinations.
    #[error("destination is longer than {max} bytes")]
    DestinationTooLong { max: usize },
    #[error("destination must be an absolute http or https URL")]
    DestinationSchemeNotAllowed,
    #[error("destination is not a valid URL: {reason}")]
    InvalidDestination { reason: &'static str },

    // Wire format.
    #[error("the log record is malformed: {reason}")]
    MalformedRecord { reason: &'static str },
}

/// The window a monthly allowance's `RateLimit-Policy` names (30 days; the block itself ends with the calendar
/// month, which `Retry-After` and `RateLimit`'s `t` give exactly).
pub const MONTH_WINDOW_SECS: u64 = 30 * 86_400;

impl ProtocolError {
    /// A stable machine-readable code (snake_case), also used as a metric label.
    pub fn code(&self) -> &'static str {
        use ProtocolError::*;
        match self {
            InvalidEventType { .. } => "invalid_event_type",
            TooManyParams { .. } => "too_many_params",
            InvalidParamKey { .. } => "invalid_param_key",
            ParamValueTooLong { .. } => "param_value_too_long",
            InvalidParamValue { .. } => "invalid_param_value",
            RawPayloadTooLarge { .. } => "raw_payload_too_large",
            FieldTooLong { .. } => "field_too_long",
            EventTooLarge { .. } => "event_too_large",
            InvalidEventId => "invalid_event_id",
            InvalidTimestamp => "invalid_timestamp",
            TimestampInFuture { .. } => "timestamp_in_future",
            InvalidKeyPrefix => "invalid_key_prefix",
            InvalidEventBody { .. } => "invalid_event_body",
            MissingLinkParams => "missing_link_params",
            DuplicateParam { .. } => "duplicate_param",
            ReservedParam { .. } => "reserved_param",
            UnsupportedLinkVersion { .. } => "unsupported_link_version",
            MalformedSignature { .. } => "malformed_signature",
            InvalidSignature => "invalid_signature",
            UnknownTenant { .. } => "unknown_tenant",
            UnknownKeyId { .. } => "unknown_key_id",
            GlobalKeyNotConfigured { .. } => "global_key_not_configured",
            LinkFormatDisabled { .. } => "link_format_disabled",
            LinkExpired => "link_expired",
            InvalidExpiry => "invalid_expiry",
            UnsignedParam { .. } => "unsigned_param",
            MalformedCiphertext { .. } => "malformed_ciphertext",
            DecryptionFailed => "decryption_failed",
            InvalidShortLinkId => "invalid_short_link_id",
            UnknownShortLink => "unknown_short_link",
            TenantSuspended { .. } => "tenant_suspended",
            MissingKeyPrefix => "missing_key_prefix",
            TenantMismatch => "tenant_mismatch",
            InvalidBeacon { .. } => "invalid_beacon",
            Unauthorized { .. } => "unauthorized",
            InvalidBatch { .. } => "invalid_batch",
            EmptyBatch => "empty_batch",
            BatchTooLarge { .. } => "batch_too_large",
            BodyTooLarge { .. } => "body_too_large",
            NoValidEvents => "no_valid_events",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            Unavailable { .. } => "unavailable",
            RateLimited { .. } => "rate_limited",
            QuotaExceeded { .. } => "quota_exceeded",
            DestinationTooLong { .. } => "destination_too_long",
            DestinationSchemeNotAllowed => "destination_scheme_not_allowed",
            InvalidDestination { .. } => "invalid_destination",
            MalformedRecord { .. } => "malformed_record",
        }
    }

    /// Headers both the Worker and the core node add to the answer: `Retry-After` on `429`, and for an allowance
    /// used up the `RateLimit-Policy` and `RateLimit` of draft-ietf-httpapi-ratelimit-headers (policy `"events"`,
    /// a month's window, nothing remaining until the month ends).
    pub fn retry_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ProtocolError::RateLimited { retry_after_secs } => vec![("retry-after", retry_after_secs.to_string())],
            ProtocolError::QuotaExceeded { allowance, retry_after_secs } => vec![
                ("retry-after", retry_after_secs.to_string()),
                ("ratelimit-policy", format!("\"events\";q={allowance};w={MONTH_WINDOW_SECS}")),
                ("ratelimit", format!("\"events\";r=0;t={retry_after_secs}")),
            ],
            ProtocolError::Unavailable { .. } => vec![("retry-after", "1".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The HTTP status both the Worker and the core node answer with.
    pub fn http_status(&self) -> u16 {
        use ProtocolError::*;
        match self {
            InvalidSignature
            | UnknownKeyId { .. }
            | GlobalKeyNotConfigured { .. }
            | UnsignedParam { .. }
            | DecryptionFailed
            | TenantSuspended { .. }
            | TenantMismatch => 403,
            Unauthorized { .. } => 401,
            UnknownTenant { .. } | UnknownShortLink => 404,
            LinkExpired => 410,
            EventTooLarge { .. } | RawPayloadTooLarge { .. } | BatchTooLarge { .. } | BodyTooLarge { .. } => 413,
            NoValidEvents => 422,
            Unavailable { .. } => 503,
            RateLimited { .. } | QuotaExceeded { .. } => 429,
            MalformedRecord { .. } => 500,
            _ => 400,
        }
    }
}
