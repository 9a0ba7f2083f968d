//! The metadata database's schema and its numbered migrations (applied once, in order, by `db`).

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    key_prefix TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'free',
    status TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tenant_keys (
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    kid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    signing_secret TEXT NOT NULL,
    encryption_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retires_at INTEGER,
    PRIMARY KEY (key_prefix, kid)
) STRICT;
CREATE TABLE IF NOT EXISTS ingest_tokens (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS tracking_urls (
    tu_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    destination TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS tracking_urls_by_tenant ON tracking_urls(key_prefix);
"#;

/// Schema changes after the first release, applied in order once each (the `tracker_schema` table records them).
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the platform API's resources
    r#"
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN updated_at INTEGER;
ALTER TABLE tracking_urls ADD COLUMN name TEXT;
ALTER TABLE tracking_urls ADD COLUMN fallback_url TEXT;
ALTER TABLE tracking_urls ADD COLUMN updated_at INTEGER;
CREATE INDEX IF NOT EXISTS ingest_tokens_by_tenant ON ingest_tokens(key_prefix, token_id);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys(key_prefix, key_id);
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT NOT NULL DEFAULT '[]',
    param_filters TEXT NOT NULL DEFAULT '{}',
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks(key_prefix, webhook_id);
CREATE TABLE IF NOT EXISTS filter_rules (
    rule_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    field TEXT NOT NULL,
    operator TEXT NOT NULL,
    value TEXT,
    action TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS filter_rules_by_tenant ON filter_rules(key_prefix, rule_id);
"#,
    // 2: click counts per tracking link, and consumer offsets kept in the same transactions as what they produced
    r#"
CREATE TABLE IF NOT EXISTS link_counts (
    key_prefix TEXT NOT NULL,
    tu_id TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    last_click_at INTEGER,
    PRIMARY KEY (key_prefix, tu_id)
) STRICT;
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
"#,
    // 3: webhook deliveries (queue, log and dead letters), endpoints disabled after repeated failures
    r#"
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (webhook_id, event_id)
) STRICT;
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint ON webhook_deliveries(key_prefix, webhook_id, delivery_id);
ALTER TABLE webhooks ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
"#,
    // 4: leases for jobs one process may run at a time (archive maintenance)
    r#"
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
) STRICT;
"#,
    // 5: deliveries that are not events (allowance warnings); the usage table (webhook deliveries are counted with
    // their outcome) is `usage::USAGE_SCHEMA`, created with the schema
    r#"
ALTER TABLE webhook_deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'event';
"#,
    // 6: moving in from the replaced system: short links imported from it, platform settings (the tenant of
    // events that name none), the operators' audit log, and the positions of event imports
    r#"
ALTER TABLE tracking_urls ADD COLUMN v1 INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS import_runs (
    run_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    next_row INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
) STRICT;
"#,
    // 7: the origins a tenant's beacon is accepted from (a JSON array of normalized origins; empty: every origin)
    r#"
ALTER TABLE tenants ADD COLUMN beacon_origins TEXT NOT NULL DEFAULT '[]';
"#,
    // 8: dashboard sessions (the secret's SHA-256; a tenant's session names the API key it was opened with, the
    // operator's holds a check value of the admin token)
    r#"
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    session_id TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT,
    key_id TEXT,
    admin_check TEXT,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_expiry ON dashboard_sessions(expires_at);
"#,
    // 9: what a tenant accepts without a credential (`tracker_protocol::service::IntakeSettings` as JSON)
    r#"
ALTER TABLE tenants ADD COLUMN intake TEXT NOT NULL DEFAULT '{}';
"#,
    // 10: signatures of state-changing requests the edge forwarded, taken once across every node (their SHA-256)
    r#"
CREATE TABLE IF NOT EXISTS taken_signatures (
    signature_hash TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS taken_signatures_by_expiry ON taken_signatures(expires_at);
"#,
];
