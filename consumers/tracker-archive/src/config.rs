//! The archive's settings from `ARCHIVE_*` variables, read alike by every process that opens the archive (the
//! node, `tracker-consumer`, the query functions).

use std::path::Path;
use std::time::Duration;

use crate::{ArchiveSettings, parse_base};

/// A variable with a value that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError { name, reason: reason.into() }
}

/// Reads the settings through `get` (a variable's non-empty value); `None` for `ARCHIVE_URL=off`. The default
/// location is `<data_dir>/archive`.
pub fn from_vars(
    get: impl Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> Result<Option<ArchiveSettings>, SettingError> {
    let number = |name: &'static str, default: u64| -> Result<u64, SettingError> {
        match get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| invalid(name, format!("{v:?}: {e}"))),
        }
    };
    // durations of at most about 30 years: no overflow where they are added to a time
    let seconds = |name: &'static str, default: u64, unit: u64| -> Result<Duration, SettingError> {
        match number(name, default)?.checked_mul(unit) {
            Some(s) if s <= 1_000_000_000 => Ok(Duration::from_secs(s)),
            _ => Err(invalid(name, "is too large")),
        }
    };
    let base = match get("ARCHIVE_URL").as_deref() {
        Some("off") => return Ok(None),
        Some(url) => url.to_owned(),
        None => data_dir.join("archive").display().to_string(),
    };
    let base = parse_base(&base).map_err(|e| invalid("ARCHIVE_URL", e.to_string()))?;
    let mut settings = ArchiveSettings::new(base);
    settings.flush_events = match number("ARCHIVE_FLUSH_EVENTS", 100_000)? {
        n @ 1..=10_000_000 => usize::try_from(n).unwrap_or(100_000),
        _ => return Err(invalid("ARCHIVE_FLUSH_EVENTS", "must be 1 to 10000000")),
    };
    settings.flush_interval = seconds("ARCHIVE_FLUSH_SECS", 60, 1)?.max(Duration::from_secs(1));
    settings.maintenance.interval = seconds("ARCHIVE_MAINTENANCE_SECS", 3600, 1)?.max(Duration::from_secs(1));
    settings.maintenance.target_file_size = match number("ARCHIVE_TARGET_FILE_MB", 128)? {
        n @ 1..=4096 => n * 1024 * 1024,
        _ => return Err(invalid("ARCHIVE_TARGET_FILE_MB", "must be 1 to 4096")),
    };
    settings.maintenance.vacuum_retention = match seconds("ARCHIVE_VACUUM_RETENTION_HOURS", 168, 3600)? {
        d if d.is_zero() => return Err(invalid("ARCHIVE_VACUUM_RETENTION_HOURS", "must be at least 1")),
        d => d,
    };
    let s3 = [
        ("ARCHIVE_S3_ENDPOINT", "AWS_ENDPOINT_URL"),
        ("ARCHIVE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("ARCHIVE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        ("ARCHIVE_S3_REGION", "AWS_REGION"),
    ];
    for (var, option) in s3 {
        if let Some(v) = get(var) {
            settings.storage_options.insert(option.into(), v);
        }
    }
    if get("ARCHIVE_S3_ENDPOINT").is_some() && get("ARCHIVE_S3_REGION").is_none() {
        // R2's region
        settings.storage_options.insert("AWS_REGION".into(), "auto".into());
    }
    if settings.base.scheme() != "file" {
        // Commit safety, stated rather than left to a library default: a Delta commit is a conditional put
        // (`If-None-Match: *`), which S3 and R2 honour, so two writers can never both create a version and no lock
        // service is needed. Copy-if-not-exists: R2 takes its own header (S3 a multipart upload, the default).
        settings.storage_options.insert("AWS_CONDITIONAL_PUT".into(), "etag".into());
        let r2 = get("ARCHIVE_S3_ENDPOINT")
            .and_then(|e| url::Url::parse(&e).ok())
            .and_then(|u| u.host_str().map(|h| h.ends_with(".r2.cloudflarestorage.com")))
            .unwrap_or(false);
        if r2 {
            settings
                .storage_options
                .insert("AWS_COPY_IF_NOT_EXISTS".into(), "header: cf-copy-destination-if-none-match: *".into());
        }
    }
    match get("ARCHIVE_S3_ALLOW_HTTP").as_deref().unwrap_or("false") {
        "true" | "1" => {
            settings.storage_options.insert("AWS_ALLOW_HTTP".into(), "true".into());
        }
        "false" | "0" => {}
        other => return Err(invalid("ARCHIVE_S3_ALLOW_HTTP", format!("{other:?} is not true or false"))),
    }
    Ok(Some(settings))
}
