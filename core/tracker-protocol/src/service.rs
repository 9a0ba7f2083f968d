//! The tracking endpoints' logic, shared by the core node and the edge Worker so that both answer every request
//! the same way: verify, look up, build and validate the event, build the redirect. Transport (HTTP types,
//! where events go) stays with the caller; lookups go through [`Directory`], which the core backs with libSQL and
//! the Worker with Workers KV.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::links::{LinkFormat, LinkKind, V1Mode, parse_link, parse_query_loose};
use crate::v1;
use crate::{
    Auth, Event, EventInput, IntakeContext, KeyRef, Limits, LinkKey, ProtocolError, Uuid, build_event, build_redirect,
    is_valid_key_prefix, is_valid_name, new_event_id,
};

/// The key prefix of events that name no tenant of their own (v1 links signed with the server's global secret,
/// v1 postbacks and pixels without `key_prefix`) while the operator has assigned them no tenant. As a lookup
/// ([`Directory::tenant`]) it names the tenant the operator assigned them.
pub const GLOBAL_KEY_PREFIX: &str = "global";

/// Prefix of the platform's ingest tokens.
pub const INGEST_TOKEN_PREFIX: &str = "trk_ing_";
/// Prefix of the replaced system's ingest tokens (`pt_<key_prefix>_<secret>`), which an import keeps working.
pub const V1_INGEST_TOKEN_PREFIX: &str = "pt_";

/// Whether `token` can be an ingest token at all (ours or an imported one): anything else is refused without a
/// lookup.
pub fn is_ingest_token_shape(token: &str) -> bool {
    (token.starts_with(INGEST_TOKEN_PREFIX) || token.starts_with(V1_INGEST_TOKEN_PREFIX)) && token.len() <= 128
}

/// A tenant as the tracking endpoints need it (also the core-to-edge lookup record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub key_prefix: String,
    pub active: bool,
    /// Current key first.
    pub keys: Vec<LinkKey>,
    /// Set while a hard-capped tenant is over its monthly allowance: the ingestion API (`/batch`, `/ingest`,
    /// postbacks) answers `429` until `blocked_until`; clicks, pixels and beacons are still answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<crate::quota::QuotaState>,
    /// The origins the tenant's beacon is accepted from ([`crate::origins`]); empty: every origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beacon_origins: Vec<String>,
    /// What the tenant accepts without a credential.
    #[serde(default, skip_serializing_if = "IntakeSettings::is_default")]
    pub intake: IntakeSettings,
}

/// A tenant's own controls over events that need no credential (open postbacks, impression pixels, the beacon):
/// anyone who knows its public key prefix can send those, and each one kept is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    /// Postbacks without an ingest token or a signature are accepted (the replaced system's behaviour, and the
    /// default); `false` answers them `401 unauthorized`.
    #[serde(default = "yes")]
    pub open_postbacks: bool,
    /// Events without a credential kept per calendar month (UTC); past it the filter drops them with the reason
    /// `unauthenticated_budget` (never billed). `None`: no budget of their own (the plan's allowance applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated_monthly_events: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Default for IntakeSettings {
    fn default() -> Self {
        IntakeSettings { open_postbacks: true, unauthenticated_monthly_events: None }
    }
}

impl IntakeSettings {
    pub fn is_default(&self) -> bool {
        *self == IntakeSettings::default()
    }
}

/// A short link (also the core-to-edge lookup record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLinkRecord {
    pub tu_id: String,
    pub key_prefix: String,
    pub destination: String,
    /// ms since the epoch.
    pub expires_at: Option<i64>,
    /// Where clicks go once the link has expired (otherwise they are refused with `link_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Imported from the replaced system, whose short links redirected without a signature and with any valid
    /// one: this link keeps those rules (its clicks are always its owner's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub v1: bool,
}

/// The tenant an ingest token belongs to (also the core-to-edge lookup record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_id: String,
    pub key_prefix: String,
}

/// Where the endpoints look things up. A failing backend is [`ProtocolError::Unavailable`] (503), never a guess.
pub trait Directory {
    /// The tenant `key_prefix`; for [`GLOBAL_KEY_PREFIX`], the tenant the operator assigned events that name none.
    fn tenant(&self, key_prefix: &str) -> impl Future<Output = Result<Option<Arc<TenantRecord>>, ProtocolError>>;
    fn short_link(&self, tu_id: &str) -> impl Future<Output = Result<Option<Arc<ShortLinkRecord>>, ProtocolError>>;
    /// The tenant of a valid (unexpired, unrevoked) ingest token.
    fn token(&self, token: &str) -> impl Future<Output = Result<Option<Arc<TokenRecord>>, ProtocolError>>;
    /// Keys for v1 links signed without a prefix (`HMAC_SECRET`, `ENCRYPTION_KEY`); empty if not configured.
    fn global_keys(&self) -> &[LinkKey];
}

/// Settings the endpoints depend on.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub v1_mode: V1Mode,
    pub limits: Limits,
    pub max_batch_size: usize,
}

/// Facts about the HTTP request that become event fields (already truncated to the field limit).
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub accept_language: Option<String>,
    pub host: Option<String>,
    pub path: String,
    /// The `Origin` header: which site a beacon came from ([`crate::origins`]).
    pub origin: Option<String>,
}

impl RequestInfo {
    /// The intake context of events sent with an ingest token.
    fn token_intake<'a>(&'a self, key_prefix: &'a str, now: i64) -> IntakeContext<'a> {
        IntakeContext {
            key_prefix,
            received_at: now,
            auth: Auth::Token,
            request_path: Some(&self.path),
            request_host: self.host.as_deref(),
        }
    }

    fn event(
        &self,
        event_id: Uuid,
        event_type: String,
        now: i64,
        key_prefix: String,
        params: BTreeMap<String, String>,
        auth: Auth,
    ) -> Event {
        Event {
            event_id,
            event_type,
            timestamp: now,
            received_at: now,
            key_prefix,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            referer: self.referer.clone(),
            accept_language: self.accept_language.clone(),
            request_path: Some(self.path.clone()),
            request_host: self.host.clone(),
            params,
            raw_payload: None,
            auth,
            historical: false,
            overflow: false,
        }
    }
}

/// An active tenant, or why not.
pub async fn active_tenant<D: Directory>(dir: &D, key_prefix: &str) -> Result<Arc<TenantRecord>, ProtocolError> {
    match dir.tenant(key_prefix).await? {
        Some(t) if t.active => Ok(t),
        Some(_) => Err(ProtocolError::TenantSuspended { key_prefix: key_prefix.to_owned() }),
        None => Err(ProtocolError::UnknownTenant { key_prefix: key_prefix.to_owned() }),
    }
}

/// A verified link, and its tenant's record (none for the global key).
async fn verify<D: Directory>(
    dir: &D,
    parsed: crate::ParsedLink,
    now: i64,
) -> Result<(crate::VerifiedLink, Option<Arc<TenantRecord>>), ProtocolError> {
    match parsed.key_ref() {
        KeyRef::Unsigned => Ok((parsed.verify(&[], now)?, None)),
        KeyRef::Global => {
            let keys = dir.global_keys();
            Ok((parsed.verify(keys, now)?, None))
        }
        KeyRef::Tenant { key_prefix, .. } => {
            let tenant = active_tenant(dir, key_prefix).await?;
            Ok((parsed.verify(&tenant.keys, now)?, Some(tenant)))
        }
    }
}

/// A verified click: the event to record and where to send the browser.
#[derive(Debug, Clone)]
pub struct Click {
    pub event: Event,
    pub location: String,
}

/// The tenant that owns events naming none of their own (a v1 link signed with the global key, a v1 postback or
/// pixel without `key_prefix`): the tenant a `key_prefix` param names, if it is an active one (as the replaced
/// system attributed them), else the tenant the operator assigned, else [`GLOBAL_KEY_PREFIX`].
async fn global_owner<D: Directory>(dir: &D, named: Option<&str>) -> Result<String, ProtocolError> {
    if let Some(p) = named.filter(|p| is_valid_key_prefix(p) && *p != GLOBAL_KEY_PREFIX)
        && dir.tenant(p).await?.is_some_and(|t| t.active)
    {
        return Ok(p.to_owned());
    }
    Ok(match dir.tenant(GLOBAL_KEY_PREFIX).await? {
        Some(t) => t.key_prefix.clone(),
        None => GLOBAL_KEY_PREFIX.to_owned(),
    })
}

/// `GET /t` (no `tu_id`) and `GET /t/<tu_id>`. A link whose signature is valid always redirects: params that an
/// event cannot hold are kept raw ([`v1::fit`]), never refused.
pub async fn click<D: Directory>(
    dir: &D,
    cfg: &ServiceConfig,
    req: &RequestInfo,
    tu_id: Option<&str>,
    query: &str,
    now: i64,
    random: [u8; 10],
) -> Result<Click, ProtocolError> {
    let kind = if tu_id.is_some() { LinkKind::Short } else { LinkKind::Click };
    let parsed = parse_link(kind, tu_id, query, cfg.v1_mode)?;
    let format = parsed.format();
    let (verified, _) = verify(dir, parsed, now).await?;
    let mut params = verified.params;
    let (key_prefix, destination) = if kind == LinkKind::Short {
        let link = dir.short_link(&verified.target).await?.ok_or(ProtocolError::UnknownShortLink)?;
        // a link signed by one tenant never resolves another tenant's short link (same answer as "not found"),
        // except an imported one, which keeps the replaced system's rules; the global key vouches for any
        let allowed = match (&verified.key_prefix, format) {
            (_, LinkFormat::V1ShortUnsigned) => link.v1,
            (Some(signer), _) => *signer == link.key_prefix || link.v1,
            (None, _) => true,
        };
        if !allowed {
            return Err(if format == LinkFormat::V1ShortUnsigned {
                ProtocolError::MissingLinkParams
            } else {
                ProtocolError::UnknownShortLink
            });
        }
        params.insert("tu_id".to_owned(), verified.target.clone());
        let destination = if link.expires_at.is_some_and(|e| now >= e) {
            // an expired link with a fallback still takes the visitor somewhere (and the click is recorded)
            link.fallback.clone().ok_or(ProtocolError::LinkExpired)?
        } else {
            link.destination.clone()
        };
        (link.key_prefix.clone(), destination)
    } else {
        let owner = match verified.key_prefix {
            Some(p) => p,
            None => global_owner(dir, params.get("key_prefix").map(String::as_str)).await?,
        };
        (owner, verified.target)
    };
    // the replaced system's links name their tenant in a param too: it is the event's tenant, not a param
    if format.is_v1() && params.get("key_prefix") == Some(&key_prefix) {
        params.remove("key_prefix");
    }
    let event_id = new_event_id(now, random);
    let location = build_redirect(&destination, &event_id)?;
    let mut event = req.event(event_id, "click".into(), now, key_prefix, BTreeMap::new(), Auth::Link);
    if let Some(tu) = params.remove("tu_id") {
        event.params.insert("tu_id".to_owned(), tu);
    }
    v1::fit(&mut event, params, verified.shadowed, serde_json::Map::new(), &cfg.limits);
    event.validate(&cfg.limits)?;
    Ok(Click { event, location })
}

/// `GET /p` and `GET /i`: a v2 signature over the params, an ingest token (`token=` or a bearer header), or
/// nothing (the replaced system's open postbacks and pixels, stored with `auth = none` so later stages can tell;
/// their tenant is the `key_prefix` param, or the one the operator assigned to events that name none). Params are
/// read as that system read them (any name, the last of a repeated one) and what an event cannot hold is kept raw.
#[allow(clippy::too_many_arguments)] // every input of the endpoint, time and randomness injected
pub async fn signal<D: Directory>(
    dir: &D,
    cfg: &ServiceConfig,
    req: &RequestInfo,
    kind: LinkKind,
    query: &str,
    bearer: Option<&str>,
    now: i64,
    random: [u8; 10],
) -> Result<Event, ProtocolError> {
    let parsed = parse_link(kind, None, query, cfg.v1_mode);
    let (key_prefix, auth, tenant, mut params, shadowed) = match parsed {
        Ok(parsed) => {
            let (verified, tenant) = verify(dir, parsed, now).await?;
            (verified.key_prefix.unwrap_or_default(), Auth::Signature, tenant, verified.params, verified.shadowed)
        }
        // no v2 signature: the query's params, loosely
        Err(ProtocolError::MissingLinkParams) => {
            let (mut params, shadowed) = crate::links::last_wins(parse_query_loose(query));
            let (key_prefix, auth, tenant) =
                if let Some(token) = params.remove("token").or_else(|| bearer.map(str::to_owned)) {
                    let info = dir.token(&token).await?.ok_or(ProtocolError::Unauthorized {
                        reason: "the ingest token is invalid, expired or revoked",
                    })?;
                    if let Some(kp) = params.remove("key_prefix")
                        && kp != info.key_prefix
                    {
                        return Err(ProtocolError::TenantMismatch);
                    }
                    let tenant = active_tenant(dir, &info.key_prefix).await?;
                    (info.key_prefix.clone(), Auth::Token, tenant)
                } else {
                    let kp = match params.remove("key_prefix") {
                        Some(kp) if !is_valid_key_prefix(&kp) => return Err(ProtocolError::InvalidKeyPrefix),
                        Some(kp) => kp,
                        None => match dir.tenant(GLOBAL_KEY_PREFIX).await? {
                            Some(t) => t.key_prefix.clone(),
                            None => return Err(ProtocolError::MissingKeyPrefix),
                        },
                    };
                    let tenant = active_tenant(dir, &kp).await?;
                    if kind == LinkKind::Postback && !tenant.intake.open_postbacks {
                        return Err(ProtocolError::Unauthorized {
                            reason: "this tenant accepts postbacks only with an ingest token or a v2 signature",
                        });
                    }
                    (kp, Auth::None, tenant)
                };
            (key_prefix, auth, Some(tenant), params, shadowed)
        }
        Err(e) => return Err(e),
    };
    // a postback is the ingestion API (its sender can retry); an impression pixel is always answered
    if kind == LinkKind::Postback
        && let Some(tenant) = &tenant
    {
        check_quota(tenant, now)?;
    }
    let default_type = if kind == LinkKind::Postback { "postback" } else { "impression" };
    // an `event_type` param names the event's type; one that is not a valid type stays a param
    let event_type = match params.remove("event_type") {
        Some(t) if is_valid_name(&t, cfg.limits.max_event_type_len) => t,
        Some(t) => {
            params.insert("event_type".to_owned(), t);
            default_type.to_owned()
        }
        None => default_type.to_owned(),
    };
    let mut event = req.event(new_event_id(now, random), event_type, now, key_prefix, BTreeMap::new(), auth);
    v1::fit(&mut event, params, shadowed, serde_json::Map::new(), &cfg.limits);
    event.validate(&cfg.limits)?;
    Ok(event)
}

/// `POST /t/auto`: the browser beacon, ours and the replaced system's `t.js` alike ([`v1::Beacon`]).
pub async fn beacon<D: Directory>(
    dir: &D,
    cfg: &ServiceConfig,
    req: &RequestInfo,
    body: &[u8],
    now: i64,
    random: [u8; 10],
) -> Result<Event, ProtocolError> {
    let input = v1::Beacon::parse(body)?;
    if !is_valid_key_prefix(&input.key_prefix) {
        return Err(ProtocolError::InvalidKeyPrefix);
    }
    let tenant = active_tenant(dir, &input.key_prefix).await?;
    // read only for a tenant that lists origins: `Some(origin)` (the origin itself may be unknown) when refused
    let refused = (!tenant.beacon_origins.is_empty())
        .then(|| crate::origins::request_origin(req.origin.as_deref(), req.referer.as_deref()))
        .filter(|origin| !origin.as_deref().is_some_and(|o| crate::origins::allows(&tenant.beacon_origins, o)));
    let event_type = input.event_type.unwrap_or_else(|| "pageview".to_owned());
    let mut event =
        req.event(new_event_id(now, random), event_type, now, input.key_prefix, BTreeMap::new(), Auth::None);
    if let Some(origin) = refused {
        // from a site the tenant does not accept: answered like any other, then dropped by the filter; kept for
        // the drop ledger with its origin and none of what it carried
        let mut extra = serde_json::Map::new();
        extra.insert(crate::origins::REFUSED_ORIGIN.into(), origin.map_or(serde_json::Value::Null, Into::into));
        v1::fit(&mut event, Vec::new(), Vec::new(), extra, &cfg.limits);
    } else {
        if let Some(r) = input.referrer.filter(|r| !r.is_empty()) {
            event.referer = Some(crate::truncate_field(&r, cfg.limits.max_field_len).to_owned());
        }
        let (params, mut shadowed) = crate::links::last_wins(input.params);
        shadowed.extend(input.unreadable);
        v1::fit(&mut event, params, shadowed, serde_json::Map::new(), &cfg.limits);
    }
    event.validate(&cfg.limits)?;
    Ok(event)
}

/// One refused event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(index: usize, e: &ProtocolError) -> Self {
        Rejection { index, code: e.code(), message: e.to_string() }
    }
}

/// The events of a batch that passed, and the ones that did not.
#[derive(Debug, Clone)]
pub struct Batch {
    pub key_prefix: String,
    pub events: Vec<Event>,
    pub rejected: Vec<Rejection>,
}

/// A JSON array of items or `{"events": [...]}`, each element kept raw so that one bad element is reported with
/// its index instead of failing the whole batch. Reading stops at the element past `max`: an array of a million
/// elements never becomes a list of a million.
pub fn split_batch(body: &[u8], max: usize) -> Result<Vec<&RawValue>, ProtocolError> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Capped(max).deserialize(&mut de),
        Some(b'{') => serde::Deserializer::deserialize_map(&mut de, WrappedEvents(max)),
        _ => {
            return Err(ProtocolError::InvalidBatch {
                reason: "the body must be a JSON array of events or {\"events\": [...]}".into(),
            });
        }
    };
    let items = parsed.and_then(|items| de.end().map(|()| items)).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            ProtocolError::BatchTooLarge { max, got: max.saturating_add(1) }
        } else {
            ProtocolError::InvalidBatch { reason: e.to_string() }
        }
    })?;
    Ok(items)
}

/// How a capped read says it stopped (matched on the error's text: serde's errors carry no kinds of their own).
const TOO_MANY: &str = "more elements than the batch may hold";

/// An array of raw elements, at most `.0` of them.
struct Capped(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Capped {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Capped {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of at most {} events", self.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(self.0.min(64));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// `{"events": [...]}` (no other field), its array capped.
struct WrappedEvents(usize);

impl<'de> serde::de::Visitor<'de> for WrappedEvents {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{\"events\": [...]}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut events = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "events" {
                return Err(serde::de::Error::unknown_field(&key, &["events"]));
            }
            if events.is_some() {
                return Err(serde::de::Error::duplicate_field("events"));
            }
            events = Some(map.next_value_seed(Capped(self.0))?);
        }
        events.ok_or_else(|| serde::de::Error::missing_field("events"))
    }
}

/// The most bytes a `/batch` body may have whatever its number of events: 8 MiB (10,000 events of 800 bytes).
pub const MAX_BATCH_BODY_BYTES: usize = 8 << 20;

/// The largest `/batch` body worth reading: `max_batch_size` events of at most `max_event_bytes` each, with room
/// for the array around them, and never more than [`MAX_BATCH_BODY_BYTES`]. Larger bodies are refused whole
/// (`413`) before they are read to the end.
pub fn max_batch_body(cfg: &ServiceConfig) -> usize {
    let filled = cfg.max_batch_size.saturating_mul(cfg.limits.max_event_bytes.saturating_add(16)).saturating_add(64);
    filled.min(MAX_BATCH_BODY_BYTES)
}

/// The largest `/ingest` body worth reading: one event.
pub fn max_ingest_body(cfg: &ServiceConfig) -> usize {
    cfg.limits.max_event_bytes.saturating_add(64)
}

/// Refuses ingestion for a tenant whose monthly allowance is used up (a hard cap): `429 quota_exceeded` with the
/// time to the next month.
pub fn check_quota(tenant: &TenantRecord, now: i64) -> Result<(), ProtocolError> {
    match tenant.quota {
        Some(q) if q.blocks(now) => {
            Err(ProtocolError::QuotaExceeded { allowance: q.allowance, retry_after_secs: q.retry_after_secs(now) })
        }
        _ => Ok(()),
    }
}

/// The tenant of a bearer ingest token, if it may ingest at `now`.
async fn authenticate_ingest<D: Directory>(dir: &D, bearer: Option<&str>, now: i64) -> Result<String, ProtocolError> {
    let tenant = authenticate(dir, bearer).await?;
    check_quota(&tenant, now)?;
    Ok(tenant.key_prefix.clone())
}

/// The active tenant of a bearer ingest token.
pub async fn authenticate<D: Directory>(dir: &D, bearer: Option<&str>) -> Result<Arc<TenantRecord>, ProtocolError> {
    let token = bearer.ok_or(ProtocolError::Unauthorized {
        reason: "send Authorization: Bearer <ingest token> (a client that cannot send headers: use the base URL \
                 <host>/v1/<ingest token>)",
    })?;
    let info = dir
        .token(token)
        .await?
        .ok_or(ProtocolError::Unauthorized { reason: "the ingest token is invalid, expired or revoked" })?;
    // a suspended tenant's tokens stop with the tenant record, wherever a copy of the token is cached
    active_tenant(dir, &info.key_prefix).await
}

/// The body of each element of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// Ours: [`EventInput`], unknown fields refused.
    Ours,
    /// The replaced system's `TrackingEvent` ([`v1::batch_event`]).
    V1,
}

/// `POST /batch` (and `POST /v1/<token>/batch` with [`BatchFormat::V1`]): the tenant comes from the token, never
/// from the body. `random` feeds the ids of events sent without one.
#[allow(clippy::too_many_arguments)] // every input of the endpoint, time and randomness injected
pub async fn batch<D: Directory>(
    dir: &D,
    cfg: &ServiceConfig,
    req: &RequestInfo,
    bearer: Option<&str>,
    body: &[u8],
    format: BatchFormat,
    now: i64,
    mut random: impl FnMut() -> [u8; 10],
) -> Result<Batch, ProtocolError> {
    let key_prefix = authenticate_ingest(dir, bearer, now).await?;
    let items = split_batch(body, cfg.max_batch_size)?;
    if items.is_empty() {
        return Err(ProtocolError::EmptyBatch);
    }
    let ctx = req.token_intake(&key_prefix, now);
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        let raw = raw.get().as_bytes();
        let built = match format {
            BatchFormat::Ours => {
                EventInput::from_json(raw).and_then(|input| build_event(input, &ctx, &cfg.limits, random()))
            }
            BatchFormat::V1 => v1::batch_event(raw, &key_prefix, req, &cfg.limits, now, random()),
        };
        match built {
            Ok(event) => events.push(event),
            Err(e) => rejected.push(Rejection::new(index, &e)),
        }
    }
    Ok(Batch { key_prefix, events, rejected })
}

/// `POST /ingest`: one event, tenant from the token.
pub async fn ingest<D: Directory>(
    dir: &D,
    cfg: &ServiceConfig,
    req: &RequestInfo,
    bearer: Option<&str>,
    body: &[u8],
    now: i64,
    random: [u8; 10],
) -> Result<Event, ProtocolError> {
    let key_prefix = authenticate_ingest(dir, bearer, now).await?;
    let ctx = req.token_intake(&key_prefix, now);
    build_event(EventInput::from_json(body)?, &ctx, &cfg.limits, random)
}

/// An `Idempotency-Key` header value, checked.
pub fn idempotency_key(value: Option<&str>) -> Result<Option<String>, ProtocolError> {
    match value {
        None => Ok(None),
        Some(k) if crate::is_valid_name(k, 128) => Ok(Some(k.to_owned())),
        Some(_) => Err(ProtocolError::InvalidIdempotencyKey),
    }
}

/// A 1x1 transparent GIF, the answer of `/i`.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];
/// Headers of every redirect: never cached, and the tracking URL is not leaked onward.
pub const REDIRECT_HEADERS: [(&str, &str); 2] =
    [("cache-control", "no-store, max-age=0"), ("referrer-policy", "no-referrer")];
/// The header naming why a pixel's event was refused (the pixel itself is always answered with the image).
pub const PIXEL_REFUSED_HEADER: &str = "x-tracker-refused";
/// Headers of the pixel.
pub const PIXEL_HEADERS: [(&str, &str); 4] = [
    ("content-type", "image/gif"),
    ("cache-control", "no-store, no-cache, must-revalidate, max-age=0"),
    ("pragma", "no-cache"),
    ("expires", "0"),
];
/// Answer to the beacon's CORS preflight.
pub const BEACON_PREFLIGHT_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST, OPTIONS"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-max-age", "86400"),
];
/// Largest beacon body (`navigator.sendBeacon` payloads are small; browsers cap them at 64 KiB).
pub const MAX_BEACON_BYTES: usize = 64 * 1024;

/// The JSON body of every rejection: `{"error": {"code", "message"}}`.
pub fn error_body(e: &ProtocolError) -> String {
    serde_json::json!({ "error": { "code": e.code(), "message": e.to_string() } }).to_string()
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::*;
    use crate::{LinkKind, V2Link};

    const NOW: i64 = 1_770_704_294_008;
    const TU: &str = "tu_019c3f8d-aa19-7261-a5d6-9aa75cea309d";
    /// Expired, with a fallback destination.
    const TU_OLD: &str = "tu_019c3f8d-aa19-7261-a5d6-9aa75cea3000";
    /// Expired, no fallback.
    const TU_GONE: &str = "tu_019c3f8d-aa19-7261-a5d6-9aa75cea3001";
    /// Imported from the replaced system.
    const TU_V1: &str = "tu_019c3f8d-aa19-7261-a5d6-9aa75cea3002";

    /// An in-memory directory: one tenant `acme`, one short link, one token.
    struct Fake {
        global: Vec<LinkKey>,
        /// `acme` is over its hard cap until `NOW + 90.5 s`.
        capped: bool,
        /// The operator assigned `acme` the events that name no tenant.
        assigned: bool,
        /// The origins `acme`'s beacon is accepted from.
        origins: Vec<String>,
        /// What `acme` accepts without a credential.
        intake: IntakeSettings,
    }

    impl Directory for Fake {
        async fn tenant(&self, key_prefix: &str) -> Result<Option<Arc<TenantRecord>>, ProtocolError> {
            let found = key_prefix == "acme" || (key_prefix == GLOBAL_KEY_PREFIX && self.assigned);
            Ok(found.then(|| {
                Arc::new(TenantRecord {
                    key_prefix: "acme".into(),
                    active: true,
                    keys: vec![LinkKey {
                        kid: "k1".into(),
                        signing_secret: Some("s3cret".into()),
                        encryption_key: Some([4; 32]),
                        retires_at_ms: None,
                    }],
                    quota: self
                        .capped
                        .then_some(crate::quota::QuotaState { allowance: 100, blocked_until: NOW + 90_500 }),
                    beacon_origins: self.origins.clone(),
                    intake: self.intake,
                })
            }))
        }
        async fn short_link(&self, tu_id: &str) -> Result<Option<Arc<ShortLinkRecord>>, ProtocolError> {
            Ok([TU, TU_OLD, TU_GONE, TU_V1].contains(&tu_id).then(|| {
                Arc::new(ShortLinkRecord {
                    tu_id: tu_id.into(),
                    key_prefix: "acme".into(),
                    destination: "https://a.example/x".into(),
                    expires_at: [TU_OLD, TU_GONE].contains(&tu_id).then_some(NOW - 1),
                    fallback: (tu_id == TU_OLD).then(|| "https://a.example/over".into()),
                    v1: tu_id == TU_V1,
                })
            }))
        }
        async fn token(&self, token: &str) -> Result<Option<Arc<TokenRecord>>, ProtocolError> {
            Ok((token == "trk_ing_good")
                .then(|| Arc::new(TokenRecord { token_id: "t".into(), key_prefix: "acme".into() })))
        }
        fn global_keys(&self) -> &[LinkKey] {
            &self.global
        }
    }

    /// The fake directory never waits, so one poll finishes any service call.
    fn ready<T>(fut: impl Future<Output = T>) -> T {
        match pin!(fut).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => unreachable!("the fake directory is synchronous"),
        }
    }

    fn cfg() -> ServiceConfig {
        ServiceConfig { v1_mode: V1Mode::Any, limits: Limits::default(), max_batch_size: 50 }
    }

    #[test]
    fn a_batch_stops_being_read_past_its_limit() {
        let n = |body: &[u8], max| split_batch(body, max).map(|items| items.len());
        assert_eq!(n(b" [1, {\"a\": [2]}, \"x\"] ", 3), Ok(3));
        assert_eq!(n(br#"{"events": [1, 2]}"#, 3), Ok(2));
        assert!(matches!(n(b"[1,2,3,4]", 3), Err(ProtocolError::BatchTooLarge { max: 3, got: 4 })));
        let million = format!("[{}0]", "0,".repeat(1_000_000));
        assert!(matches!(n(million.as_bytes(), 50), Err(ProtocolError::BatchTooLarge { max: 50, .. })));
        assert!(matches!(n(br#"{"events": [1,2,3,4]}"#, 3), Err(ProtocolError::BatchTooLarge { .. })));
        for bad in [&br#"{"events": [1], "more": 1}"#[..], b"{}", b"[1] [2]", b"[1,", b"7"] {
            assert!(matches!(n(bad, 3), Err(ProtocolError::InvalidBatch { .. })), "{}", String::from_utf8_lossy(bad));
        }
        assert!(max_batch_body(&cfg()) >= 50 * Limits::default().max_event_bytes);
        let big = ServiceConfig { max_batch_size: 10_000, ..cfg() };
        assert_eq!(max_batch_body(&big), MAX_BATCH_BODY_BYTES);
    }

    #[test]
    fn a_beacon_from_an_origin_its_tenant_does_not_accept_keeps_only_that_origin() {
        let d = Fake { origins: vec!["https://shop.example".into(), "https://*.shop.example".into()], ..dir() };
        let body = br#"{"key":"acme","event_type":"signup","page":"/","params":{"plan":"pro"}}"#;
        let from = |origin: Option<&str>, referer: Option<&str>| RequestInfo {
            path: "/t/auto".into(),
            origin: origin.map(Into::into),
            referer: referer.map(Into::into),
            ..Default::default()
        };
        for req in [
            from(Some("https://shop.example"), None),
            from(Some("https://www.shop.example"), Some("https://elsewhere.example/")),
            from(None, Some("https://shop.example/cart")),
        ] {
            let e = ready(beacon(&d, &cfg(), &req, body, NOW, [0; 10])).unwrap();
            assert_eq!((e.params.get("plan").map(String::as_str), &e.raw_payload), (Some("pro"), &None), "{req:?}");
        }
        for (req, seen) in [
            (from(Some("https://evil.example"), Some("https://shop.example/")), r#""https://evil.example""#),
            (from(Some("null"), None), "null"),
            (from(None, None), "null"),
        ] {
            let e = ready(beacon(&d, &cfg(), &req, body, NOW, [0; 10])).unwrap();
            assert!(e.params.is_empty(), "nothing the other site sent is kept: {:?}", e.params);
            let raw = e.raw_payload.as_ref().map(|r| r.as_str().to_owned());
            assert_eq!(raw, Some(format!(r#"{{"{}":{seen}}}"#, crate::origins::REFUSED_ORIGIN)), "{req:?}");
            assert_eq!(e.event_type, "signup");
        }
        // a tenant without a list accepts every origin
        let open = ready(beacon(&dir(), &cfg(), &from(Some("https://evil.example"), None), body, NOW, [0; 10]));
        assert_eq!(open.unwrap().params.get("plan").map(String::as_str), Some("pro"));
    }

    fn dir() -> Fake {
        Fake {
            global: vec![LinkKey {
                kid: "global".into(),
                signing_secret: Some("g".into()),
                encryption_key: None,
                retires_at_ms: None,
            }],
            capped: false,
            assigned: false,
            origins: Vec::new(),
            intake: IntakeSettings::default(),
        }
    }

    #[test]
    fn a_tenant_that_closed_open_postbacks_takes_them_only_with_a_credential() {
        let closed = IntakeSettings { open_postbacks: false, ..IntakeSettings::default() };
        let d = Fake { intake: closed, ..dir() };
        let req = RequestInfo { path: "/p".into(), ..Default::default() };
        let open = ready(signal(&d, &cfg(), &req, LinkKind::Postback, "key_prefix=acme&order=7", None, NOW, [0; 10]));
        assert!(matches!(open, Err(ProtocolError::Unauthorized { .. })), "{open:?}");
        let with_token =
            ready(signal(&d, &cfg(), &req, LinkKind::Postback, "order=7", Some("trk_ing_good"), NOW, [0; 10]));
        assert_eq!(with_token.unwrap().auth, Auth::Token);
        // impression pixels stay open (an image cannot carry a credential)
        let pixel = ready(signal(&d, &cfg(), &req, LinkKind::Impression, "key_prefix=acme", None, NOW, [0; 10]));
        assert_eq!(pixel.unwrap().auth, Auth::None);
        // the default, as the replaced system did
        let default = ready(signal(&dir(), &cfg(), &req, LinkKind::Postback, "key_prefix=acme", None, NOW, [0; 10]));
        assert_eq!(default.unwrap().auth, Auth::None);
        // the edge reads records without the field as the default
        let record: TenantRecord = serde_json::from_str(r#"{"key_prefix":"acme","active":true,"keys":[]}"#).unwrap();
        assert!(record.intake.is_default());
    }

    fn is_client_error(e: &ProtocolError) -> bool {
        (400..500).contains(&e.http_status())
    }

    #[test]
    fn a_signed_link_becomes_a_click_with_its_params() {
        let link = V2Link {
            kind: LinkKind::Click,
            key_prefix: "acme",
            kid: "k1",
            target: "https://shop.example/?a=1",
            expires_at: None,
            ext: &[],
            params: &[("campaign", "c1")],
        };
        let url = link.signed_url("", "s3cret").unwrap();
        let req = RequestInfo { path: "/t".into(), ip: Some("203.0.113.1".into()), ..Default::default() };
        let click = ready(click(&dir(), &cfg(), &req, None, url.split_once('?').unwrap().1, NOW, [1; 10])).unwrap();
        assert_eq!(click.event.params.get("campaign").map(String::as_str), Some("c1"));
        assert_eq!(click.event.key_prefix, "acme");
        assert_eq!(click.location, format!("https://shop.example/?a=1&ad_click_id={}", click.event.event_id));
        let short = ready(click_short(TU)).unwrap();
        assert_eq!(short.event.params.get("tu_id").map(String::as_str), Some(TU));
        assert!(short.location.starts_with("https://a.example/x?ad_click_id="));
    }

    #[test]
    fn an_expired_short_link_goes_to_its_fallback_or_is_refused() {
        let old = ready(click_short(TU_OLD)).unwrap();
        assert!(old.location.starts_with("https://a.example/over?ad_click_id="), "{}", old.location);
        assert_eq!(old.event.params.get("tu_id").map(String::as_str), Some(TU_OLD));
        assert!(matches!(ready(click_short(TU_GONE)), Err(ProtocolError::LinkExpired)));
    }

    #[test]
    fn a_tenant_over_its_hard_cap_keeps_its_links_and_pixels_but_ingestion_answers_429() {
        let d = Fake { capped: true, ..dir() };
        let (c, req) = (cfg(), RequestInfo::default());
        let url = crate::links::v1_short_url("", "s3cret", Some("acme"), TU, &[]).unwrap();
        let q = url.split_once('?').unwrap().1;
        assert!(ready(click(&d, &c, &req, Some(TU), q, NOW, [2; 10])).is_ok());
        let pixel = ready(signal(&d, &c, &req, LinkKind::Impression, "key_prefix=acme", None, NOW, [0; 10]));
        assert!(pixel.is_ok());
        assert!(ready(beacon(&d, &c, &req, br#"{"key":"acme"}"#, NOW, [0; 10])).is_ok());
        let refusals = [
            ready(signal(&d, &c, &req, LinkKind::Postback, "key_prefix=acme", None, NOW, [0; 10])).map(|_| ()),
            ready(signal(&d, &c, &req, LinkKind::Postback, "a=1", Some("trk_ing_good"), NOW, [0; 10])).map(|_| ()),
            ready(batch(
                &d,
                &c,
                &req,
                Some("trk_ing_good"),
                br#"[{"event_type":"x"}]"#,
                BatchFormat::Ours,
                NOW,
                || [0; 10],
            ))
            .map(|_| ()),
            ready(ingest(&d, &c, &req, Some("trk_ing_good"), br#"{"event_type":"x"}"#, NOW, [0; 10])).map(|_| ()),
        ];
        for r in refusals {
            let e = r.unwrap_err();
            assert_eq!(e, ProtocolError::QuotaExceeded { allowance: 100, retry_after_secs: 91 });
            assert_eq!((e.http_status(), e.code()), (429, "quota_exceeded"));
            assert_eq!(
                e.retry_headers(),
                vec![
                    ("retry-after", "91".to_owned()),
                    ("ratelimit-policy", "\"events\";q=100;w=2592000".to_owned()),
                    ("ratelimit", "\"events\";r=0;t=91".to_owned()),
                ]
            );
        }
        // the block ends with the month
        let later = NOW + 90_500;
        assert!(ready(ingest(&d, &c, &req, Some("trk_ing_good"), br#"{"event_type":"x"}"#, later, [0; 10])).is_ok());
    }

    fn click_query(d: &Fake, tu: Option<&str>, query: &str) -> Result<Click, ProtocolError> {
        let req = RequestInfo { path: "/t".into(), ..Default::default() };
        ready(click(d, &cfg(), &req, tu, query, NOW, [3; 10]))
    }

    fn raw_overflow(e: &Event) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(e.raw_payload.as_ref().unwrap().as_str()).unwrap()["overflow"].clone()
    }

    #[test]
    fn v1_links_redirect_whatever_their_params() {
        let d = dir();
        let url = crate::links::v1_signed_url("", "s3cret", Some("acme"), "https://shop.example/a", &[]).unwrap();
        let base = url.split_once('?').unwrap().1;
        // names of v2 fields, repeats, brackets, an over-long value, and the tenant named again
        let long = "x".repeat(3000);
        let query = format!("{base}&v=3&d=5&k=a&s=b&sub=1&sub=2&utm%5Bsource%5D=g&big={long}&key_prefix=acme");
        let c = click_query(&d, None, &query).unwrap();
        assert!(c.location.starts_with("https://shop.example/a?ad_click_id="));
        let p = &c.event.params;
        for (k, v) in [("v", "3"), ("d", "5"), ("k", "a"), ("s", "b"), ("sub", "2")] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!p.contains_key("key_prefix") && !p.contains_key("big"));
        assert!(c.event.overflow);
        let kept = raw_overflow(&c.event)["params"].clone();
        let kept: Vec<(String, String)> = serde_json::from_value(kept).unwrap();
        assert_eq!(kept[0], ("sub".into(), "1".into()), "earlier values of a repeated name first");
        assert!(kept.contains(&("utm[source]".into(), "g".into())));
        assert!(kept.contains(&("big".into(), long.clone())));
        // the last url and sig count, as they did
        let twice = format!("url=https%3A%2F%2Fother.example%2F&sig=acme_{}&{base}", "0".repeat(64));
        assert!(click_query(&d, None, &twice).is_ok());
    }

    #[test]
    fn imported_short_links_keep_their_rules_and_ours_keep_ours() {
        let (d, q) = (dir(), "sub1=x");
        let c = click_query(&d, Some(TU_V1), q).unwrap();
        assert_eq!(
            (c.event.key_prefix.as_str(), c.event.params.get("tu_id").map(String::as_str)),
            ("acme", Some(TU_V1))
        );
        assert_eq!(click_query(&d, Some(TU), q).unwrap_err(), ProtocolError::MissingLinkParams);
        // the global key, or another tenant's key, resolves an imported link for its owner only
        let global = crate::links::v1_short_url("", "g", None, TU_V1, &[]).unwrap();
        let c = click_query(&d, Some(TU_V1), global.split_once('?').unwrap().1).unwrap();
        assert_eq!(c.event.key_prefix, "acme");
        let forged = format!("sig=acme_{}", "0".repeat(64));
        assert_eq!(click_query(&d, Some(TU_V1), &forged).unwrap_err(), ProtocolError::InvalidSignature);
    }

    #[test]
    fn global_links_and_postbacks_belong_to_the_assigned_tenant() {
        let url = crate::links::v1_signed_url("", "g", None, "https://a.example/", &[("c", "1")]).unwrap();
        let q = url.split_once('?').unwrap().1;
        assert_eq!(click_query(&dir(), None, q).unwrap().event.key_prefix, GLOBAL_KEY_PREFIX);
        let assigned = Fake { assigned: true, ..dir() };
        assert_eq!(click_query(&assigned, None, q).unwrap().event.key_prefix, "acme");
        // a tenant named in the link's params owns it, as it did in the replaced system
        let named =
            crate::links::v1_signed_url("", "g", None, "https://a.example/", &[("key_prefix", "acme")]).unwrap();
        let c = click_query(&dir(), None, named.split_once('?').unwrap().1).unwrap();
        assert_eq!((c.event.key_prefix.as_str(), c.event.params.get("key_prefix")), ("acme", None));
        let req = RequestInfo::default();
        let post =
            |d: &Fake| ready(signal(d, &cfg(), &req, LinkKind::Postback, "click_id=1&p%5B%5D=2", None, NOW, [0; 10]));
        assert_eq!(post(&dir()).unwrap_err(), ProtocolError::MissingKeyPrefix);
        let e = post(&assigned).unwrap();
        assert_eq!((e.key_prefix.as_str(), e.auth, e.overflow), ("acme", Auth::None, true));
        assert_eq!(raw_overflow(&e)["params"][0], serde_json::json!(["p[]", "2"]));
    }

    async fn click_short(tu: &str) -> Result<Click, ProtocolError> {
        let url = crate::links::v1_short_url("", "s3cret", Some("acme"), tu, &[]).unwrap();
        click(&dir(), &cfg(), &RequestInfo::default(), Some(tu), url.split_once('?').unwrap().1, NOW, [2; 10]).await
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the query or body, every endpoint answers with an event or a client error (4xx), never a panic
        /// and never a server error.
        #[test]
        fn endpoints_answer_any_input_with_an_event_or_a_4xx(
            query in concat!(
                "((v|k|s|e|d|url|sig|exp|ext|key_prefix|token|event_type|campaign|x)",
                "=[a-zA-Z0-9%._:+/-]{0,20}&?){0,8}"
            ),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            tu in proptest::option::of("tu_[0-9a-f-]{0,40}"),
            kind in prop_oneof![Just(LinkKind::Postback), Just(LinkKind::Impression)],
        ) {
            let (d, c, req) = (dir(), cfg(), RequestInfo::default());
            let results = [
                ready(click(&d, &c, &req, tu.as_deref(), &query, NOW, [0; 10])).map(|_| ()),
                ready(signal(&d, &c, &req, kind, &query, None, NOW, [0; 10])).map(|_| ()),
                ready(signal(&d, &c, &req, kind, &query, Some("trk_ing_good"), NOW, [0; 10])).map(|_| ()),
                ready(beacon(&d, &c, &req, &body, NOW, [0; 10])).map(|_| ()),
                ready(batch(&d, &c, &req, Some("trk_ing_good"), &body, BatchFormat::Ours, NOW, || [0; 10])).map(|_| ()),
                ready(batch(&d, &c, &req, Some("trk_ing_good"), &body, BatchFormat::V1, NOW, || [0; 10])).map(|_| ()),
                ready(ingest(&d, &c, &req, Some("trk_ing_good"), &body, NOW, [0; 10])).map(|_| ()),
            ];
            for r in results {
                if let Err(e) = r {
                    prop_assert!(is_client_error(&e), "{e:?} is not a 4xx");
                }
            }
        }
    }
}
