//! The archive's settings from `ARCHIVE_*` variables, read alike by every process that opens the archive (the
//! node, `tracker-consumer`, the query functions).

use std::path::Path;
use std::time::Duration;

use tracker_protocol::settings::{Section, SettingError, Settings, Unit, invalid, var};

use crate::{ArchiveSettings, Maintenance, parse_base};

/// The archive's variables: the one declaration of their defaults (the README's Archive table is rendered from it).
pub const SETTINGS: Section = Section {
    title: "Archive",
    variables: &[
        var(
            "ARCHIVE_URL",
            "=DATA_DIR/archive",
            "Delta Lake archive (tables events and rollups): a directory, `s3://bucket/prefix` (S3, R2), or `off`",
        ),
        var("ARCHIVE_FLUSH_EVENTS", "100000", "the archiver commits once this many events wait..."),
        var("ARCHIVE_FLUSH_SECS", "60", "...or the oldest has waited this long (large files; the log holds the rest)"),
        var("ARCHIVE_MAINTENANCE_SECS", "3600", "how often retention deletes, OPTIMIZE, checkpoint and VACUUM run"),
        var("ARCHIVE_TARGET_FILE_MB", "128", "OPTIMIZE compacts small files into files of about this size"),
        var(
            "ARCHIVE_VACUUM_RETENTION_HOURS",
            "168",
            "VACUUM deletes data files unreferenced for this long (longer than any query or write runs)",
        ),
        var("ARCHIVE_S3_ENDPOINT", "", "S3-compatible endpoint (R2: `https://<account>.r2.cloudflarestorage.com`)"),
        var(
            "ARCHIVE_S3_REGION",
            "",
            "region: `auto` when `ARCHIVE_S3_ENDPOINT` is set (R2), else the AWS environment's",
        ),
        var(
            "ARCHIVE_S3_ACCESS_KEY_ID",
            "",
            "S3 or R2 access key id (or the `AWS_*` environment and instance credentials)",
        ),
        var("ARCHIVE_S3_SECRET_ACCESS_KEY", "", "S3 or R2 secret access key"),
        var("ARCHIVE_S3_ALLOW_HTTP", "false", "allow a plain-http endpoint (local S3 servers only)"),
    ],
};

/// Reads the settings (declared in [`SETTINGS`], which `src` must include); `None` for `ARCHIVE_URL=off`. The
/// default location is `<data_dir>/archive`.
pub fn from_settings<F: Fn(&str) -> Option<String>>(
    src: &Settings<'_, F>,
    data_dir: &Path,
) -> Result<Option<ArchiveSettings>, SettingError> {
    let get = |name: &str| src.get(name);
    let base = match get("ARCHIVE_URL").as_deref() {
        Some("off") => return Ok(None),
        Some(url) => url.to_owned(),
        None => data_dir.join("archive").display().to_string(),
    };
    let base = parse_base(&base).map_err(|e| invalid("ARCHIVE_URL", e.to_string()))?;
    let mut settings = at(src, base)?;
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
    if src.flag("ARCHIVE_S3_ALLOW_HTTP")? {
        settings.storage_options.insert("AWS_ALLOW_HTTP".into(), "true".into());
    }
    Ok(Some(settings))
}

/// The batching and maintenance settings, at `base`.
fn at<F: Fn(&str) -> Option<String>>(src: &Settings<'_, F>, base: url::Url) -> Result<ArchiveSettings, SettingError> {
    Ok(ArchiveSettings {
        base,
        storage_options: Default::default(),
        flush_events: src.number("ARCHIVE_FLUSH_EVENTS", 1..=10_000_000)?,
        flush_interval: src.duration("ARCHIVE_FLUSH_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
        maintenance: maintenance(src)?,
    })
}

fn maintenance<F: Fn(&str) -> Option<String>>(src: &Settings<'_, F>) -> Result<Maintenance, SettingError> {
    Ok(Maintenance {
        interval: src.duration("ARCHIVE_MAINTENANCE_SECS", Unit::Secs)?.max(Duration::from_secs(1)),
        target_file_size: src.number::<u64>("ARCHIVE_TARGET_FILE_MB", 1..=4096)? * 1024 * 1024,
        vacuum_retention: match src.duration("ARCHIVE_VACUUM_RETENTION_HOURS", Unit::Hours)? {
            d if d.is_zero() => return Err(invalid("ARCHIVE_VACUUM_RETENTION_HOURS", "must be at least 1")),
            d => d,
        },
        log_retention: COMMIT_LOG_RETENTION,
    })
}

/// How long commit files older than a checkpoint are kept (not configurable).
const COMMIT_LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

fn declared() -> Settings<'static, impl Fn(&str) -> Option<String>> {
    Settings::new(core::slice::from_ref(&SETTINGS), |_: &str| None)
}

/// The settings at `base` with every variable at its declared default.
pub(crate) fn declared_defaults(base: url::Url) -> ArchiveSettings {
    at(&declared(), base).expect("the declared defaults are valid (tested by the_declared_defaults_are_valid)")
}

/// Maintenance with every variable at its declared default.
pub(crate) fn declared_maintenance() -> Maintenance {
    maintenance(&declared()).expect("the declared defaults are valid (tested by the_declared_defaults_are_valid)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_declared_defaults_are_valid() {
        let s = super::declared_defaults(url::Url::parse("file:///lake/").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!((s.flush_events, s.flush_interval.as_secs()), (100_000, 60));
        assert_eq!(s.maintenance.vacuum_retention.as_secs(), 168 * 3600);
    }
}
