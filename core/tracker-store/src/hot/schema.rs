//! The hot tier's tables.

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hot_events (
    seq INTEGER PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    tu_id TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS hot_events_once ON hot_events(key_prefix, event_id);
CREATE INDEX IF NOT EXISTS hot_events_by_time ON hot_events(key_prefix, ts, seq);
CREATE INDEX IF NOT EXISTS hot_events_by_type ON hot_events(key_prefix, event_type, ts, seq);
CREATE INDEX IF NOT EXISTS hot_events_by_link ON hot_events(key_prefix, tu_id, ts, seq);
CREATE TABLE IF NOT EXISTS hot_params (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    ts INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (seq, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hot_params_by_value ON hot_params(key_prefix, name, value, ts, seq, event_type);
CREATE TABLE IF NOT EXISTS hot_counts (
    key_prefix TEXT NOT NULL,
    minute INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    tu_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, minute, event_type, tu_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_param_counts (
    key_prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    minute INTEGER NOT NULL,
    value TEXT NOT NULL,
    event_type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, name, minute, value, event_type)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_param_names (
    key_prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, name)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_drops (
    key_prefix TEXT NOT NULL,
    hour INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, hour, action, reason)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_drop_samples (
    id INTEGER PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    hour INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS hot_drop_samples_by_reason ON hot_drop_samples(key_prefix, reason, hour);
CREATE TABLE IF NOT EXISTS hot_seen_ids (
    id BLOB PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
CREATE TABLE IF NOT EXISTS quota_months (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, month)
) STRICT;
CREATE TABLE IF NOT EXISTS quota_alerts (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    allowance INTEGER NOT NULL,
    at INTEGER NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_prefix, month, percent)
) STRICT;
CREATE INDEX IF NOT EXISTS quota_alerts_pending ON quota_alerts(notified);
CREATE TABLE IF NOT EXISTS quota_ids (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (key_prefix, month, event_id)
) STRICT;
CREATE TABLE IF NOT EXISTS usage_marks (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS hot_filter_pending (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    dropped TEXT NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
"#;
