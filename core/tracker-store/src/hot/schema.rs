//! The hot tier's tables.

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hot_segments (
    id INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    received_max INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS hot_segments_by_level ON hot_segments(level, id);
CREATE INDEX IF NOT EXISTS hot_segments_by_arrival ON hot_segments(received_max, id);
CREATE TABLE IF NOT EXISTS hot_segment_data (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS hot_segment_tenants (
    key_prefix TEXT NOT NULL,
    segment INTEGER NOT NULL,
    ts_min INTEGER NOT NULL,
    ts_max INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bloom BLOB NOT NULL,
    UNIQUE (key_prefix, segment)
) STRICT;
CREATE INDEX IF NOT EXISTS hot_segment_tenants_by_segment ON hot_segment_tenants(segment);
CREATE TABLE IF NOT EXISTS hot_floors (
    key_prefix TEXT PRIMARY KEY,
    ts INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS hot_next_seq (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    next INTEGER NOT NULL
) STRICT;
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
CREATE TABLE IF NOT EXISTS hot_kept_ids (
    id BLOB PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_kept_blocks (
    first BLOB NOT NULL,
    last BLOB NOT NULL,
    at INTEGER NOT NULL,
    keys BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS hot_kept_blocks_by_first ON hot_kept_blocks(first, last);
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

/// Numbered changes to a hot tier made by an earlier version.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events moved from rows (`hot_events`, `hot_params`) to segments. The rows are not converted: the archive
    // holds them, and each tenant's floor moves past them, so the query router takes their range to the archive.
    "CREATE TABLE IF NOT EXISTS hot_events (key_prefix TEXT NOT NULL, ts INTEGER NOT NULL);
     INSERT INTO hot_floors (key_prefix, ts) SELECT key_prefix, MAX(ts) FROM hot_events GROUP BY key_prefix
       ON CONFLICT DO UPDATE SET ts = MAX(ts, excluded.ts);
     DROP TABLE IF EXISTS hot_params;
     DROP TABLE hot_events;",
];
