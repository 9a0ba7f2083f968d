//! Configuration: environment variables (the replaced system's names where they exist) over an optional TOML file
//! whose keys are the same names in lower case. Every value is checked at start-up; a bad one stops the node with a
//! sentence that names the variable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest as _;
use tracker_protocol::settings::{Section, SettingError, Settings, Unit, var};
use tracker_protocol::{Limits, Secret, V1Mode, parse_encryption_key};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml { path: String, source: Box<toml::de::Error> },
}

/// Where client IPs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustProxy {
    /// The TCP peer address (direct exposure).
    None,
    /// The first address of `X-Forwarded-For` (behind a load balancer you run).
    XForwardedFor,
    /// `CF-Connecting-IP` (behind Cloudflare).
    Cloudflare,
}

/// The node's configuration, one typed section per declared [`Section`] (the variables, their defaults and
/// meanings are declared beside each loader below; [`SECTIONS`] lists them in the README's order).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the embedded logs and the default databases live (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// [`HTTP`]: the listener, the platform API's admin credential, live streams, where consumers run.
    pub node: NodeSettings,
    /// [`LINKS`]: link secrets and formats, event limits, lookup caching.
    pub links: LinkSettings,
    /// [`EDGE`]: batches and lookups from the edge Worker.
    pub edge: EdgeIntake,
    /// [`LOG`]: the event log (embedded, or Apache Iggy).
    pub log: LogSettings,
    /// [`STORE`]: the metadata and hot-tier databases.
    pub store: StoreSettings,
    /// The consumers' sections ([`tracker_consumers::SETTINGS`], webhooks, [`tracker_archive::SETTINGS`]), with
    /// the plans and the edge to purge.
    pub consumers: tracker_consumers::Settings,
    /// Lets the API's webhook test deliveries reach private, loopback and link-local addresses
    /// (`WEBHOOK_ALLOW_PRIVATE`, local development and tests only; the consumers apply it themselves).
    pub webhook_allow_private: bool,
    /// [`QUERY`]: where `/api/query` finds the warm and cold tiers.
    pub query: QuerySettings,
}

/// Custom plans from the config file's `[plans.<name>]` tables and then `PLANS` (a JSON object of the same
/// shape; its plans win by name), over the built-in ones.
fn plans(file: Option<toml::Value>, env: Option<&str>) -> Result<tracker_store::Plans, ConfigError> {
    let mut custom: BTreeMap<String, tracker_store::Plan> = match file {
        None => BTreeMap::new(),
        Some(v) => {
            v.try_into().map_err(|e: toml::de::Error| invalid("PLANS", format!("[plans] in the config file: {e}")))?
        }
    };
    if let Some(json) = env {
        let more: BTreeMap<String, tracker_store::Plan> =
            serde_json::from_str(json).map_err(|e| invalid("PLANS", format!("not a JSON object of plans: {e}")))?;
        custom.extend(more);
    }
    tracker_store::Plans::with(custom).map_err(|e| invalid("PLANS", e))
}

/// The node's own variables, by section. With the archive's and the consumers' ([`SECTIONS`]), this is the one
/// declaration of every default: the loader reads defaults from it, `tracker-core config` prints it, and the
/// README's configuration tables are rendered from it (a test keeps them equal). Each section's typed settings
/// stand right before its declaration.
///
/// [`HTTP`]: the node as a process.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub host: IpAddr,
    pub port: u16,
    /// Base URL printed in links by the CLI.
    pub public_url: String,
    pub max_body_bytes: usize,
    /// Requests a node works on at once; more are answered `503` at once (`MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// How long a request head may take to arrive whole (`HEADER_TIMEOUT_SECS`; also how long a keep-alive
    /// connection may stay idle).
    pub header_timeout: Duration,
    /// How long a request body may take (`BODY_TIMEOUT_SECS`, `BODY_IDLE_TIMEOUT_SECS`).
    pub body_timeouts: crate::http::BodyTimeouts,
    /// Platform API requests per minute from one address, counted before authentication.
    pub api_ip_rpm: u32,
    pub trust_proxy: TrustProxy,
    /// SHA-256 of the platform admin credential (`ADMIN_TOKEN`, or `ADMIN_TOKEN_SHA256` to keep only the hash in
    /// the configuration); `None` turns the admin routes off.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Platform API requests per minute for the admin credential.
    pub admin_api_rpm: u32,
    /// SHA-256 of `METRICS_TOKEN`: the bearer credential `/metrics` and `/health/broker` take from other machines.
    pub metrics_token_sha256: Option<[u8; 32]>,
    /// Run the stream consumers inside the node (`CONSUMERS=in-process`, the default) rather than as processes
    /// of their own (`off`, with `tracker-consumer`).
    pub consumers_in_process: bool,
    /// Where `tracker-consumer` serves its metrics and health (`CONSUMER_LISTEN`; `None`: nowhere).
    pub consumer_listen: Option<std::net::SocketAddr>,
    /// Comment lines sent on idle live streams (`/sse/events`).
    pub sse_keepalive: Duration,
    /// Batches of events a live stream may fall behind before it is told it lagged.
    pub sse_backlog: usize,
    /// Live streams a node serves at once (`SSE_MAX_STREAMS`), and of one tenant (`SSE_MAX_STREAMS_PER_TENANT`).
    pub sse_max_streams: usize,
    pub sse_max_streams_per_tenant: usize,
}

pub const HTTP: Section = Section {
    title: "Node and HTTP",
    variables: &[
        var("CONFIG_FILE", "", "optional TOML file with the same keys in lower case; the environment wins"),
        var("HOST", "127.0.0.1", "bind address (`0.0.0.0` to accept remote traffic: `SECRETS_KEY` is then required)"),
        var("PORT", "3030", "HTTP port"),
        var("PUBLIC_URL", "=http://HOST:PORT", "base URL the CLI prints links with"),
        var("DATA_DIR", "data", "directory of the embedded logs and the default databases and archive"),
        var(
            "RUST_LOG",
            "",
            "log filter (tracing's EnvFilter); unset: our own lines from info up, dependencies' warnings",
        ),
        var(
            "MAX_BODY_BYTES",
            "33554432",
            "largest request body (the edge's batches); `/batch` and `/ingest` read no more than their events can fill",
        ),
        var(
            "MAX_IN_FLIGHT",
            "2048",
            "requests the node works on at once; more are answered `503 overloaded` with `Retry-After` at once",
        ),
        var(
            "HEADER_TIMEOUT_SECS",
            "10",
            "a request head must arrive whole within this (else the connection closes); also the keep-alive idle limit",
        ),
        var("BODY_TIMEOUT_SECS", "60", "a request's body must arrive whole within this (else `408 request_timeout`)"),
        var("BODY_IDLE_TIMEOUT_SECS", "10", "longest wait for the next piece of a request's body (else `408`)"),
        var(
            "API_IP_REQUESTS_PER_MINUTE",
            "3000",
            "platform API requests from one address (an IPv6 /64) at a node, counted before authentication",
        ),
        var(
            "CONSUMERS",
            "in-process",
            "run the stream consumers in the node (`in-process`) or not (`off`: run `tracker-consumer`)",
        ),
        var(
            "CONSUMER_LISTEN",
            "127.0.0.1:9464",
            "where `tracker-consumer` serves `GET /metrics`, `/health` and `/health/broker` (`off`: nowhere)",
        ),
        var(
            "TRUST_PROXY",
            "none",
            "client IP source: `none`, `x-forwarded-for` (its last entry: the one your proxy appended) or `cloudflare`",
        ),
        var(
            "ADMIN_TOKEN",
            "",
            "platform admin credential for `/api/tenants` (at least 32 characters; empty = admin API off)",
        ),
        var(
            "ADMIN_TOKEN_SHA256",
            "",
            "instead of `ADMIN_TOKEN`: its SHA-256 in hex, so the configuration holds no secret",
        ),
        var("ADMIN_API_REQUESTS_PER_MINUTE", "600", "platform API rate limit of the admin credential"),
        var(
            "METRICS_TOKEN",
            "",
            "bearer token for `/metrics` and `/health/broker` (at least 32 characters; without it, or the admin token, \
             they answer only this machine)",
        ),
        var(
            "PLANS",
            "",
            "custom plans as a JSON object (`{\"starter\": {\"monthly_events\": ...}}`), over `[plans.<name>]` in the \
             config file and the built-in ones (see Plans and usage)",
        ),
        var("SSE_KEEPALIVE_SECS", "15", "comment lines sent on idle live streams (`/sse/events`)"),
        var(
            "SSE_BACKLOG",
            "256",
            "batches of events a live stream may fall behind before it is told it lagged and skips ahead",
        ),
        var("SSE_MAX_STREAMS", "10000", "live streams a node serves at once (more: `503` with `Retry-After`)"),
        var("SSE_MAX_STREAMS_PER_TENANT", "100", "live streams of one tenant at a node (more: `429 too_many_streams`)"),
    ],
};

/// [`LINKS`]: what links are signed and sealed with, and what events may hold.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub hmac_secret: Option<Secret<String>>,
    pub encryption_key: Option<Secret<[u8; 32]>>,
    /// Seals tenant link secrets at rest in the metadata store.
    pub secrets_key: Option<Secret<[u8; 32]>>,
    /// Keys that open sealed secrets but never seal (`SECRETS_KEY_PREVIOUS`, while rotating).
    pub secrets_key_previous: Vec<Secret<[u8; 32]>>,
    pub url_mode: V1Mode,
    pub max_batch_size: usize,
    pub limits: Limits,
    /// How long tenant keys, short links and tokens are cached before the store is asked again.
    pub cache_ttl: Duration,
}

pub const LINKS: Section = Section {
    title: "Links and events",
    variables: &[
        var("HMAC_SECRET", "", "global secret for v1 links signed without a key prefix (text, used as given)"),
        var(
            "ENCRYPTION_KEY",
            "",
            "global AES-256 key for v1 encrypted links: 64 hex characters, or 32 characters used as bytes",
        ),
        var(
            "SECRETS_KEY",
            "",
            "64 hex characters: seals link and webhook secrets at rest, each bound to its row (AES-256-GCM); required \
             off loopback; keep it out of backups",
        ),
        var(
            "SECRETS_KEY_PREVIOUS",
            "",
            "while rotating `SECRETS_KEY`: other keys (comma-separated, 64 hex characters each) that open sealed \
             secrets but never seal; `tracker-core secrets reseal` moves what they sealed to `SECRETS_KEY`",
        ),
        var("URL_MODE", "signed", "v1 click formats accepted: `signed`, `encrypted` or `any` (v2 links always)"),
        var("MAX_BATCH_SIZE", "10000", "most events in one `/batch` request"),
        var("MAX_CLOCK_SKEW_SECS", "300", "client timestamps further in the future are refused"),
        var("HISTORICAL_AFTER_HOURS", "168", "client timestamps older than this mark events historical"),
        var("CACHE_TTL_SECS", "5", "how long tenant keys, short links and tokens are cached (revocation bound)"),
    ],
};

/// [`EDGE`]: the edge Worker's signed batches and lookups (`EDGE_URLS`, where purges go, is the consumers').
#[derive(Debug, Clone)]
pub struct EdgeIntake {
    pub secrets: Secret<Vec<Vec<u8>>>,
    /// Accepted clock difference of a signed request.
    pub replay_window: Duration,
}

pub const EDGE: Section = Section {
    title: "Edge intake",
    variables: &[
        var(
            "EDGE_SHARED_SECRETS",
            "",
            "comma-separated secrets the edge signs forwarded batches with (empty = intake off)",
        ),
        var("EDGE_REPLAY_WINDOW_SECS", "300", "accepted clock difference for signed edge batches"),
        var(
            "EDGE_URLS",
            "",
            "the edge Worker's URLs, comma-separated: the core pushes signed purges there when a tenant reaches its \
             cap and when its own API changes a record the edge caches",
        ),
    ],
};

/// [`LOG`]: the event log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub partitions: u32,
    pub commit_window: Duration,
    pub queue_capacity: usize,
    pub retention_age: Option<Duration>,
    pub retention_bytes: Option<u64>,
    /// Apache Iggy as the event log (with a local spool), instead of the embedded log.
    pub iggy: Option<IggySettings>,
}

/// The Iggy connection (`IGGY_URL` and friends).
#[derive(Debug, Clone)]
pub struct IggySettings {
    /// Connection string with transport, address, credentials and TLS.
    pub url: Secret<String>,
    pub stream: String,
    /// A send slower than this goes to the local spool instead.
    pub send_timeout: Duration,
    /// How long a send waits for others to join its batch.
    pub linger: Duration,
}

pub const LOG: Section = Section {
    title: "Event log",
    variables: &[
        var(
            "LOG_PARTITIONS",
            "24",
            "partitions of the event log (fixed when the log is created); `IGGY_PARTITIONS` is read too",
        ),
        var("IGGY_PARTITIONS", "", "the replaced system's name for `LOG_PARTITIONS` (which wins)"),
        var("LOG_COMMIT_WINDOW_MS", "5", "longest time a redirect's or pixel's event waits for its fsync"),
        var("LOG_QUEUE_CAPACITY", "4096", "appends waiting for the log writer before producers wait (never dropped)"),
        var("LOG_RETENTION_HOURS", "168", "delete log record sets older than this (0 = keep forever)"),
        var("LOG_RETENTION_BYTES", "0", "delete the oldest record sets while the log is larger (0 = no limit)"),
        var(
            "IGGY_URL",
            "",
            "Apache Iggy connection string (`iggy://user:secret@host:8090`, `iggy+quic://…`, `?tls=true`); empty = \
             embedded log",
        ),
        var("IGGY_STREAM", "tracker", "Iggy stream holding the `events` and `filtered` topics"),
        var("IGGY_LINGER_MS", "2", "an Iggy send waits this long for other events to join its batch"),
        var(
            "IGGY_SEND_TIMEOUT_MS",
            "2000",
            "an Iggy send slower than this is written to the local spool (`DATA_DIR/spool`)",
        ),
    ],
};

/// [`STORE`]: the databases.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The libSQL metadata database: a file (default), a remote server, or an embedded replica of one.
    pub database: tracker_store::Location,
    /// The hot tier's database (the stats and filter consumers write it, `/api/events*` reads it).
    pub hot_database: tracker_store::Location,
}

pub const STORE: Section = Section {
    title: "Databases",
    variables: &[
        var(
            "DATABASE_URL",
            "=DATA_DIR/tracker.db",
            "libSQL metadata database: a file path (`file:` URL), or a remote server (`libsql://`, `https://`; Turso)",
        ),
        var("LIBSQL_AUTH_TOKEN", "", "auth token of a remote `DATABASE_URL` (a Turso database token)"),
        var(
            "LIBSQL_REPLICA_PATH",
            "",
            "with a remote `DATABASE_URL`: keep an embedded replica in this file (reads are local, writes go to the \
             primary)",
        ),
        var("LIBSQL_SYNC_INTERVAL_SECS", "5", "how often an embedded replica pulls changes from the primary"),
        var("HOT_DATABASE_URL", "=DATA_DIR/hot.db", "libSQL database of the hot tier: a file path, or a remote server"),
        var("HOT_LIBSQL_AUTH_TOKEN", "", "auth token of a remote `HOT_DATABASE_URL`"),
    ],
};

/// The query functions (`QUERY_URL` and friends).
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// The query functions' base URL (a Lambda function URL); `None` answers in-process over `ARCHIVE_URL`.
    pub url: Option<String>,
    /// The secret requests to `url` are signed with.
    pub secret: Option<Secret<Vec<u8>>>,
    /// Longest a warm or cold query may run.
    pub timeout: Duration,
}

pub const QUERY: Section = Section {
    title: "Queries",
    variables: &[
        var(
            "QUERY_URL",
            "",
            "the query functions (a Lambda function URL, or `tracker-query-lambda`); unset: in-process over \
             `ARCHIVE_URL`",
        ),
        var("QUERY_SECRET", "", "secret `/api/query` signs its requests to `QUERY_URL` with (at least 16 bytes)"),
        var("QUERY_TIMEOUT_SECS", "25", "longest a warm or cold query may run"),
    ],
};

/// Every section the node, `tracker-consumer` and the archive read, in the README's order.
pub const SECTIONS: &[Section] = &[
    HTTP,
    LINKS,
    EDGE,
    LOG,
    STORE,
    tracker_consumers::SETTINGS,
    tracker_consumers::webhooks::SETTINGS,
    tracker_archive::SETTINGS,
    QUERY,
];

/// A libSQL location from `var` (a file path or `file:` URL; `libsql://`, `https://` or `http://` with the token in
/// `token_var`), or `None` when unset.
fn location<F: Fn(&str) -> Option<String>>(
    src: &Settings<'_, F>,
    var: &'static str,
    token_var: &'static str,
) -> Result<Option<tracker_store::Location>, ConfigError> {
    match src.get(var) {
        None => Ok(None),
        Some(url) if ["libsql://", "https://", "http://"].iter().any(|p| url.starts_with(p)) => {
            let auth_token = src.get(token_var).unwrap_or_default();
            if auth_token.is_empty() && !url.starts_with("http://") {
                return Err(invalid(token_var, format!("is required for a remote {var}")));
            }
            Ok(Some(tracker_store::Location::Remote { url, auth_token: auth_token.into() }))
        }
        Some(url) if url.contains("://") => {
            Err(invalid(var, "must be a file path, file:, libsql://, https:// or http:// URL"))
        }
        Some(url) => Ok(Some(tracker_store::Location::File(PathBuf::from(url.strip_prefix("file:").unwrap_or(&url))))),
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

impl From<SettingError> for ConfigError {
    fn from(e: SettingError) -> Self {
        ConfigError::Invalid { name: e.name, reason: e.reason }
    }
}

impl Config {
    /// Reads the process environment (and `CONFIG_FILE` or `file`, if given).
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars().collect(), file)
    }

    /// Builds the configuration from explicit variables over an optional TOML file, with the defaults declared in
    /// [`SECTIONS`].
    pub fn from_vars(env: BTreeMap<String, String>, file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        let mut plan_table = None;
        let file =
            file.map(Path::to_path_buf).or_else(|| env.get("CONFIG_FILE").filter(|f| !f.is_empty()).map(PathBuf::from));
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
            let table: toml::Table = text
                .parse()
                .map_err(|source| ConfigError::Toml { path: path.display().to_string(), source: Box::new(source) })?;
            for (k, v) in table {
                if k == "plans" {
                    plan_table = Some(v);
                    continue;
                }
                let v = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                values.insert(k.to_ascii_uppercase(), v);
            }
        }
        values.extend(env);
        let src = Settings::new(SECTIONS, |name: &str| values.get(name).cloned());

        let host: IpAddr = src.value("HOST")?;
        let port: u16 = src.value("PORT")?;
        let data_dir = PathBuf::from(src.value::<String>("DATA_DIR")?);
        let database = match location(&src, "DATABASE_URL", "LIBSQL_AUTH_TOKEN")? {
            None => tracker_store::Location::File(data_dir.join("tracker.db")),
            Some(tracker_store::Location::Remote { url, auth_token }) => match src.get("LIBSQL_REPLICA_PATH") {
                Some(path) => tracker_store::Location::Replica {
                    path: PathBuf::from(path),
                    url,
                    auth_token,
                    sync_interval: src.duration("LIBSQL_SYNC_INTERVAL_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
                },
                None => tracker_store::Location::Remote { url, auth_token },
            },
            Some(other) => other,
        };
        let hot_database = location(&src, "HOT_DATABASE_URL", "HOT_LIBSQL_AUTH_TOKEN")?
            .unwrap_or_else(|| tracker_store::Location::File(data_dir.join("hot.db")));
        let consumers_in_process = src.choice("CONSUMERS", &["in-process", "off"])? == "in-process";
        let consumer_listen = match src.get("CONSUMER_LISTEN") {
            Some(off) if off == "off" => None,
            _ => Some(src.value("CONSUMER_LISTEN")?),
        };
        let mut consumers = tracker_consumers::Settings::from_settings(&src)?;
        // WEBHOOK_ALLOW_PRIVATE is the node's to apply (`pipeline`), with the API's test deliveries
        consumers.webhooks.allow_private = false;
        consumers.archive = tracker_archive::from_settings(&src, &data_dir)?;
        consumers.plans = plans(plan_table, src.get("PLANS").as_deref())?;
        let query = QuerySettings {
            url: match src.get("QUERY_URL") {
                None => None,
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => Some(u),
                Some(_) => return Err(invalid("QUERY_URL", "must be an http(s) URL")),
            },
            secret: match src.get("QUERY_SECRET") {
                None => None,
                Some(s) if s.len() >= 16 => Some(Secret::new(s.into_bytes())),
                Some(_) => return Err(invalid("QUERY_SECRET", "must be at least 16 bytes")),
            },
            timeout: Duration::from_secs(src.number("QUERY_TIMEOUT_SECS", 1..=900)?),
        };
        if query.url.is_some() && query.secret.is_none() {
            return Err(invalid("QUERY_SECRET", "is required with QUERY_URL"));
        }
        let public_url = src.get("PUBLIC_URL").unwrap_or_else(|| {
            let shown = if host.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { host };
            format!("http://{shown}:{port}")
        });
        let hmac_secret = src.get("HMAC_SECRET");
        let encryption_key = match src.get("ENCRYPTION_KEY") {
            None => None,
            Some(k) => Some(tracker_protocol::v1::global_encryption_key(&k).ok_or_else(|| {
                invalid("ENCRYPTION_KEY", "must be 64 hex characters, or 32 characters used as the key's bytes")
            })?),
        };
        let secrets_key = match src.get("SECRETS_KEY") {
            None => None,
            Some(k) => Some(
                parse_encryption_key(&k)
                    .ok_or_else(|| invalid("SECRETS_KEY", "must be 64 hex characters (32 bytes)"))?,
            ),
        };
        let secrets_key_previous = match src.get("SECRETS_KEY_PREVIOUS") {
            None => Vec::new(),
            Some(list) => {
                let bad =
                    || invalid("SECRETS_KEY_PREVIOUS", "must be 64 hex characters (32 bytes) per key, comma-separated");
                let keys = list
                    .split(',')
                    .map(|k| parse_encryption_key(k.trim()).ok_or_else(bad))
                    .collect::<Result<Vec<_>, _>>()?;
                if secrets_key.is_none() {
                    return Err(invalid("SECRETS_KEY_PREVIOUS", "needs SECRETS_KEY (the key that seals)"));
                }
                keys.into_iter().map(Secret::new).collect()
            }
        };
        // a node that takes remote traffic keeps link and webhook secrets sealed; in the clear only on a laptop
        if secrets_key.is_none() && !host.is_loopback() {
            return Err(invalid(
                "SECRETS_KEY",
                "is required when HOST takes remote traffic (64 hex characters: `openssl rand -hex 32`); then run \
                 `tracker-core secrets reseal` once for secrets written before",
            ));
        }
        let url_mode: V1Mode = src.value("URL_MODE")?;
        if url_mode == V1Mode::Encrypted && encryption_key.is_none() {
            return Err(invalid("ENCRYPTION_KEY", "is required when URL_MODE=encrypted"));
        }
        // the replaced system's name counts only when ours is not set
        let partitions_from = match (src.get("LOG_PARTITIONS"), src.get("IGGY_PARTITIONS")) {
            (None, Some(_)) => "IGGY_PARTITIONS",
            _ => "LOG_PARTITIONS",
        };
        let partitions = src.number(partitions_from, 1..=4096)?;
        let retention_age = src.duration("LOG_RETENTION_HOURS", Unit::Hours)?;
        let retention_bytes: u64 = src.value("LOG_RETENTION_BYTES")?;
        let log = LogSettings {
            partitions,
            commit_window: src.duration("LOG_COMMIT_WINDOW_MS", Unit::Millis)?,
            queue_capacity: src.number("LOG_QUEUE_CAPACITY", 1..=1_000_000)?,
            retention_age: (!retention_age.is_zero()).then_some(retention_age),
            retention_bytes: (retention_bytes > 0).then_some(retention_bytes),
            iggy: None,
        };
        let edge_secrets: Vec<Vec<u8>> = src
            .get("EDGE_SHARED_SECRETS")
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect())
            .unwrap_or_default();
        if edge_secrets.iter().any(|s| s.len() < 32) {
            return Err(invalid("EDGE_SHARED_SECRETS", "each secret must be at least 32 characters"));
        }
        if let Some(urls) = src.get("EDGE_URLS") {
            let urls: Vec<String> =
                urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
            if let Some(bad) = urls.iter().find(|u| !tracker_protocol::intake::is_service_url(u)) {
                return Err(invalid("EDGE_URLS", format!("{bad:?} must be an https URL (http only to this machine)")));
            }
            if edge_secrets.is_empty() {
                return Err(invalid("EDGE_URLS", "needs EDGE_SHARED_SECRETS (purges are signed with them)"));
            }
            consumers.edge = Some(tracker_consumers::EdgePush {
                urls,
                secrets: edge_secrets.clone(),
                tasks: tokio_util::task::TaskTracker::new(),
            });
        }
        let trust_proxy = match src.choice("TRUST_PROXY", &["none", "x-forwarded-for", "cloudflare"])? {
            "x-forwarded-for" => TrustProxy::XForwardedFor,
            "cloudflare" => TrustProxy::Cloudflare,
            _ => TrustProxy::None,
        };
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let limits = Limits {
            max_future_skew_ms: millis(src.duration("MAX_CLOCK_SKEW_SECS", Unit::Secs)?),
            historical_after_ms: millis(src.duration("HISTORICAL_AFTER_HOURS", Unit::Hours)?),
            ..Limits::default()
        };
        let admin_token_sha256 = match (src.get("ADMIN_TOKEN"), src.get("ADMIN_TOKEN_SHA256")) {
            (Some(_), Some(_)) => {
                return Err(invalid("ADMIN_TOKEN", "set ADMIN_TOKEN or ADMIN_TOKEN_SHA256, not both"));
            }
            (Some(t), None) if t.len() < 32 => return Err(invalid("ADMIN_TOKEN", "must be at least 32 characters")),
            (Some(t), None) => Some(<[u8; 32]>::from(sha2::Sha256::digest(t.as_bytes()))),
            (None, Some(h)) => Some(
                parse_encryption_key(&h)
                    .ok_or_else(|| invalid("ADMIN_TOKEN_SHA256", "must be 64 hex characters (a SHA-256)"))?,
            ),
            (None, None) => None,
        };
        let metrics_token_sha256 = match src.get("METRICS_TOKEN") {
            Some(t) if t.len() < 32 => return Err(invalid("METRICS_TOKEN", "must be at least 32 characters")),
            Some(t) => Some(<[u8; 32]>::from(sha2::Sha256::digest(t.as_bytes()))),
            None => None,
        };
        let iggy = match src.get("IGGY_URL") {
            None => None,
            Some(url) if !url.contains("://") || !url.contains('@') => {
                return Err(invalid(
                    "IGGY_URL",
                    "must be an Iggy connection string with credentials (iggy://user:secret@host:port)",
                ));
            }
            Some(url) => Some(IggySettings {
                url: Secret::new(url),
                stream: src.value("IGGY_STREAM")?,
                send_timeout: src.duration("IGGY_SEND_TIMEOUT_MS", Unit::Millis)?.max(Duration::from_millis(1)),
                linger: src.duration("IGGY_LINGER_MS", Unit::Millis)?,
            }),
        };
        Ok(Config {
            data_dir,
            node: NodeSettings {
                host,
                port,
                public_url,
                max_body_bytes: src.number("MAX_BODY_BYTES", 1..=1 << 30)?,
                max_in_flight: src.number("MAX_IN_FLIGHT", 1..=1_000_000)?,
                header_timeout: src.duration("HEADER_TIMEOUT_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
                body_timeouts: crate::http::BodyTimeouts {
                    total: src.duration("BODY_TIMEOUT_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
                    idle: src.duration("BODY_IDLE_TIMEOUT_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
                },
                api_ip_rpm: src.number("API_IP_REQUESTS_PER_MINUTE", 1..=1_000_000)?,
                trust_proxy,
                admin_token_sha256,
                metrics_token_sha256,
                admin_api_rpm: src.number("ADMIN_API_REQUESTS_PER_MINUTE", 1..=1_000_000)?,
                consumers_in_process,
                consumer_listen,
                sse_keepalive: src.duration("SSE_KEEPALIVE_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
                sse_backlog: src.number("SSE_BACKLOG", 1..=65_536)?,
                sse_max_streams: src.number("SSE_MAX_STREAMS", 1..=1_000_000)?,
                sse_max_streams_per_tenant: src.number("SSE_MAX_STREAMS_PER_TENANT", 1..=1_000_000)?,
            },
            links: LinkSettings {
                hmac_secret: hmac_secret.map(Secret::new),
                encryption_key: encryption_key.map(Secret::new),
                secrets_key: secrets_key.map(Secret::new),
                secrets_key_previous,
                url_mode,
                max_batch_size: src.number("MAX_BATCH_SIZE", 1..=1_000_000)?,
                limits,
                cache_ttl: src.duration("CACHE_TTL_SECS", Unit::Secs)?,
            },
            edge: EdgeIntake {
                secrets: Secret::new(edge_secrets),
                replay_window: src.duration("EDGE_REPLAY_WINDOW_SECS", Unit::Secs)?,
            },
            log: LogSettings { iggy, ..log },
            store: StoreSettings { database, hot_database },
            consumers,
            webhook_allow_private: src.flag("WEBHOOK_ALLOW_PRIVATE")?,
            query,
        })
    }

    /// The plans tenants can be on.
    pub fn plans(&self) -> &tracker_store::Plans {
        &self.consumers.plans
    }

    /// The plan of `tenant` with its own limits applied.
    pub fn plan_of(&self, tenant: &tracker_store::Tenant) -> tracker_store::Plan {
        self.plans().or_free(&tenant.plan).with_limits(&tenant.limits)
    }

    /// Test and embedding helper: the declared defaults rooted in `dir`, without an archive.
    pub fn for_dir(dir: &Path) -> Config {
        let vars = [("DATA_DIR", dir.display().to_string()), ("ARCHIVE_URL", "off".to_owned())];
        Config::from_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), None)
            .expect("the declared defaults are valid (tested by the_declared_defaults_are_the_configuration)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_node_that_takes_remote_traffic_needs_a_secrets_key() {
        let e = Config::from_vars(vars(&[("HOST", "0.0.0.0")]), None).unwrap_err().to_string();
        assert!(e.starts_with("SECRETS_KEY"), "{e}");
        let key = "5e".repeat(32);
        assert!(Config::from_vars(vars(&[("HOST", "0.0.0.0"), ("SECRETS_KEY", &key)]), None).is_ok());
        assert!(Config::from_vars(vars(&[("HOST", "127.0.0.1")]), None).is_ok(), "a laptop may keep them in the clear");
    }

    #[test]
    fn previous_secrets_keys_are_a_list_of_keys_beside_the_current_one() {
        let (key, old, older) = ("5e".repeat(32), "6f".repeat(32), "70".repeat(32));
        let list = format!("{old}, {older}");
        let cfg = Config::from_vars(vars(&[("SECRETS_KEY", &key), ("SECRETS_KEY_PREVIOUS", &list)]), None).unwrap();
        let previous: Vec<[u8; 32]> = cfg.links.secrets_key_previous.iter().map(|k| *k.expose()).collect();
        assert_eq!(previous, [[0x6f; 32], [0x70; 32]]);
        let bad = Config::from_vars(vars(&[("SECRETS_KEY", &key), ("SECRETS_KEY_PREVIOUS", "6f6f")]), None);
        assert!(bad.unwrap_err().to_string().starts_with("SECRETS_KEY_PREVIOUS"));
        let alone = Config::from_vars(vars(&[("SECRETS_KEY_PREVIOUS", &old)]), None).unwrap_err().to_string();
        assert!(alone.contains("needs SECRETS_KEY"), "{alone}");
    }

    #[test]
    fn a_configuration_printed_whole_shows_no_secret() {
        let secrets = [
            ("HMAC_SECRET", "hmac-secret-value-1"),
            ("ENCRYPTION_KEY", "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"),
            ("SECRETS_KEY", "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"),
            ("EDGE_SHARED_SECRETS", "edge-shared-secret-value-0123456789"),
            ("QUERY_SECRET", "query-secret-value-0123"),
            ("LIBSQL_AUTH_TOKEN", "libsql-token-value"),
            ("HOT_LIBSQL_AUTH_TOKEN", "hot-token-value"),
            ("ADMIN_TOKEN", "admin-token-value-0123456789abcdef"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-value"),
        ];
        let mut pairs: Vec<(&str, &str)> = secrets.to_vec();
        pairs.extend([
            ("DATABASE_URL", "libsql://db.example"),
            ("HOT_DATABASE_URL", "libsql://hot.example"),
            ("QUERY_URL", "https://query.example"),
            ("IGGY_URL", "iggy://tracker:iggy-password-value@127.0.0.1:8090"),
            ("ARCHIVE_URL", "s3://bucket/archive"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_REGION", "auto"),
        ]);
        let c = Config::from_vars(vars(&pairs), None).unwrap();
        let printed = format!("{c:?}");
        let encryption_key_bytes = format!("{:?}", [0xe1u8; 32]);
        for (name, value) in secrets.iter().chain(&[("IGGY_URL", "iggy-password-value"), ("", &encryption_key_bytes)]) {
            assert!(!printed.contains(value), "{name} printed: {printed}");
        }
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn plans_come_from_the_config_file_and_plans_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracker.toml");
        std::fs::write(
            &file,
            "port = 4000\n[plans.starter]\nmonthly_events = 5_000_000\nprice_cents = 2_900\n\
             overage_cents_per_million = 400\nquery_tiers = [\"hot\", \"warm\"]\napi_requests_per_minute = 300\n\
             [plans.free]\nmonthly_events = 10\nquery_tiers = [\"hot\"]\napi_requests_per_minute = 5\n",
        )
        .unwrap();
        let c = Config::from_vars(vars(&[]), Some(&file)).unwrap();
        assert_eq!(c.node.port, 4000);
        let starter = c.plans().get("starter").unwrap();
        assert_eq!((starter.monthly_events, starter.overage_cents_per_million), (5_000_000, Some(400)));
        assert!(c.plans().get("free").unwrap().hard_cap());
        assert_eq!(c.plans().get("free").unwrap().monthly_events, 10);
        assert_eq!(c.plans().get("pro").unwrap().api_requests_per_minute, 600, "built-in plans stay");
        let env = r#"{"starter": {"monthly_events": 7, "query_tiers": [], "api_requests_per_minute": 1}}"#;
        let c = Config::from_vars(vars(&[("PLANS", env)]), Some(&file)).unwrap();
        assert_eq!(c.plans().get("starter").unwrap().monthly_events, 7, "PLANS wins by name");
        for bad in [r#"{"x": {"monthly_events": 0, "query_tiers": [], "api_requests_per_minute": 1}}"#, "[1]", "{"] {
            let e = Config::from_vars(vars(&[("PLANS", bad)]), None).unwrap_err().to_string();
            assert!(e.starts_with("PLANS"), "{e}");
        }
    }

    #[test]
    fn edge_urls_need_a_shared_secret_to_sign_with() {
        let e = Config::from_vars(vars(&[("EDGE_URLS", "https://edge.example")]), None).unwrap_err().to_string();
        assert!(e.starts_with("EDGE_URLS"), "{e}");
        let secret = "s".repeat(32);
        let c = Config::from_vars(
            vars(&[("EDGE_URLS", "https://a.example, https://b.example"), ("EDGE_SHARED_SECRETS", &secret)]),
            None,
        )
        .unwrap();
        let edge = c.consumers.edge.unwrap();
        assert_eq!(edge.urls, ["https://a.example", "https://b.example"]);
        assert!(!format!("{edge:?}").contains(&secret), "the secret is not in debug output");
        let e = Config::from_vars(vars(&[("EDGE_URLS", "ftp://x"), ("EDGE_SHARED_SECRETS", &secret)]), None);
        assert!(e.unwrap_err().to_string().starts_with("EDGE_URLS"));
        // purges in the clear only on this machine
        let e =
            Config::from_vars(vars(&[("EDGE_URLS", "http://edge.example"), ("EDGE_SHARED_SECRETS", &secret)]), None);
        assert!(e.unwrap_err().to_string().contains("https"));
        assert!(
            Config::from_vars(vars(&[("EDGE_URLS", "http://127.0.0.1:8787"), ("EDGE_SHARED_SECRETS", &secret)]), None)
                .is_ok()
        );
    }

    #[test]
    fn the_archive_is_local_by_default_and_r2_by_its_endpoint() {
        let c = Config::from_vars(vars(&[("DATA_DIR", "/srv/tracker")]), None).unwrap();
        let a = c.consumers.archive.unwrap();
        assert_eq!(a.base.as_str(), "file:///srv/tracker/archive/");
        assert!(a.storage_options.is_empty());
        assert!(Config::from_vars(vars(&[("ARCHIVE_URL", "off")]), None).unwrap().consumers.archive.is_none());

        let r2 = [
            ("ARCHIVE_URL", "s3://events/prod"),
            ("ARCHIVE_S3_ENDPOINT", "https://acct.r2.cloudflarestorage.com"),
            ("ARCHIVE_S3_ACCESS_KEY_ID", "key-id"),
            ("ARCHIVE_S3_SECRET_ACCESS_KEY", "very-secret-value"),
        ];
        let a = Config::from_vars(vars(&r2), None).unwrap().consumers.archive.unwrap();
        assert_eq!(a.storage_options["AWS_REGION"], "auto", "R2's region when an endpoint is set");
        assert_eq!(a.storage_options["AWS_CONDITIONAL_PUT"], "etag", "commits are conditional puts");
        assert_eq!(a.storage_options["AWS_COPY_IF_NOT_EXISTS"], "header: cf-copy-destination-if-none-match: *");
        let s3 = Config::from_vars(vars(&[("ARCHIVE_URL", "s3://events/prod")]), None).unwrap();
        let s3 = s3.consumers.archive.unwrap().storage_options;
        assert_eq!(s3.get("AWS_CONDITIONAL_PUT").map(String::as_str), Some("etag"));
        assert!(!s3.contains_key("AWS_COPY_IF_NOT_EXISTS"), "Amazon S3 keeps the multipart default: {s3:?}");
        assert_eq!(a.storage_options["AWS_SECRET_ACCESS_KEY"], "very-secret-value");
        assert!(!a.storage_options.contains_key("AWS_ALLOW_HTTP"));
        assert!(!format!("{a:?}").contains("very-secret-value"), "secrets stay out of debug output");

        for (name, value) in [
            ("ARCHIVE_URL", "s3://KEY:SECRET@events/prod"),
            ("ARCHIVE_URL", "s3:///no-bucket"),
            ("ARCHIVE_URL", "https://example.com/lake"),
            ("ARCHIVE_FLUSH_EVENTS", "0"),
            ("ARCHIVE_TARGET_FILE_MB", "0"),
            ("ARCHIVE_VACUUM_RETENTION_HOURS", "0"),
            ("ARCHIVE_S3_ALLOW_HTTP", "yes"),
        ] {
            let e = Config::from_vars(vars(&[(name, value)]), None).unwrap_err().to_string();
            assert!(e.starts_with(name), "{name}={value}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn env_overrides_file_and_errors_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracker.toml");
        std::fs::write(&file, "port = 4000\nmax_batch_size = 50\nurl_mode = \"any\"\n").unwrap();
        let c = Config::from_vars(vars(&[("PORT", "5000")]), Some(&file)).unwrap();
        assert_eq!(c.node.port, 5000);
        assert_eq!(c.links.max_batch_size, 50);
        assert_eq!(c.links.url_mode, V1Mode::Any);

        let e = Config::from_vars(vars(&[("PORT", "x")]), None).unwrap_err().to_string();
        assert!(e.starts_with("PORT:"), "{e}");
        let e = Config::from_vars(vars(&[("ENCRYPTION_KEY", "abc")]), None).unwrap_err().to_string();
        assert!(e.starts_with("ENCRYPTION_KEY:"), "{e}");
        let e = Config::from_vars(vars(&[("URL_MODE", "encrypted")]), None).unwrap_err().to_string();
        assert!(e.contains("ENCRYPTION_KEY"), "{e}");
        let e = Config::from_vars(vars(&[("EDGE_SHARED_SECRETS", "short")]), None).unwrap_err().to_string();
        assert!(e.starts_with("EDGE_SHARED_SECRETS:"), "{e}");
        let c = Config::from_vars(vars(&[("IGGY_PARTITIONS", "8"), ("LOG_RETENTION_HOURS", "0")]), None).unwrap();
        assert_eq!(c.log.partitions, 8);
        assert_eq!(c.log.retention_age, None);
        let e = Config::from_vars(vars(&[("DATABASE_URL", "libsql://db.turso.io")]), None).unwrap_err().to_string();
        assert!(e.starts_with("LIBSQL_AUTH_TOKEN:"), "{e}");
        let c = Config::from_vars(
            vars(&[
                ("DATABASE_URL", "libsql://db.turso.io"),
                ("LIBSQL_AUTH_TOKEN", "t"),
                ("LIBSQL_REPLICA_PATH", "r.db"),
            ]),
            None,
        )
        .unwrap();
        assert!(matches!(c.store.database, tracker_store::Location::Replica { .. }));
        assert!(Config::from_vars(vars(&[("DATABASE_URL", "postgres://x")]), None).is_err());
        let e = Config::from_vars(vars(&[("ADMIN_TOKEN", "short")]), None).unwrap_err().to_string();
        assert!(e.starts_with("ADMIN_TOKEN:"), "{e}");
        let token = "a".repeat(32);
        let c = Config::from_vars(vars(&[("ADMIN_TOKEN", &token)]), None).unwrap();
        let hashed =
            Config::from_vars(vars(&[("ADMIN_TOKEN_SHA256", &hex::encode(c.node.admin_token_sha256.unwrap()))]), None);
        assert_eq!(hashed.unwrap().node.admin_token_sha256, c.node.admin_token_sha256);
    }
}

#[cfg(test)]
mod declared {
    use std::collections::BTreeMap;

    use super::{Config, SECTIONS};

    /// The README's configuration tables are the declaration, rendered (`tracker-core config` prints them).
    #[test]
    fn the_readme_shows_the_declared_variables() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        let tables = tracker_protocol::settings::markdown(SECTIONS);
        assert!(
            readme.contains(&tables),
            "README.md's configuration tables differ from the declaration; paste `tracker-core config`'s:\n{tables}"
        );
    }

    /// Every variable is declared once, the declared defaults make a valid configuration (the loader reads nothing
    /// undeclared: that panics in this debug build), and values that would overflow are refused by name.
    #[test]
    fn the_declared_defaults_are_the_configuration() {
        let names: Vec<&str> = SECTIONS.iter().flat_map(|s| s.variables).map(|v| v.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a variable is declared twice");
        let c = Config::from_vars(BTreeMap::new(), None).unwrap();
        assert_eq!(
            (c.node.port, c.log.partitions, c.links.max_batch_size, c.node.sse_backlog),
            (3030, 24, 10_000, 256)
        );
        assert_eq!(c.log.retention_age.map(|d| d.as_secs()), Some(168 * 3600));
        assert_eq!(c.consumers.webhooks.max_attempts, 12);
        assert!(c.consumers.archive.is_some(), "the archive is on by default");
        // overflow-checked: a number of hours or seconds that cannot be a duration is refused by name
        for name in ["LOG_RETENTION_HOURS", "CACHE_TTL_SECS", "HOT_COUNTS_RETENTION_DAYS", "WEBHOOK_RETRY_MAX_MS"] {
            let e = Config::from_vars([(name.to_owned(), u64::MAX.to_string())].into(), None).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{name}: ")), "{e}");
        }
    }
}
