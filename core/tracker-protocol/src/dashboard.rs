//! How the dashboard (`dashboard/`, a single-page app built to `dashboard/dist`) is answered, the same by the
//! Worker (Workers static assets) and every core node (the files embedded by `tracker-dashboard`): under
//! `/dashboard/`, its page revalidated on every load and its content-hashed assets immutable for a year, with a
//! Content-Security-Policy that allows nothing but the dashboard's own origin (no inline script, no third
//! party: the page talks only to the API beside it).

/// Where the dashboard is served.
pub const PREFIX: &str = "/dashboard/";

/// Nothing but this origin: scripts, styles (Svelte's style directives are inline), API calls and live streams.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Headers of every dashboard answer.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The page: always revalidated (its `ETag` makes that a 304), so a deploy reaches every open browser at once.
pub const PAGE_CACHE: &str = "no-cache";
/// Assets under `assets/` carry their content's hash in their names.
pub const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

/// The file a request path names, relative to the build (`index.html` for the page), or `None` outside
/// `/dashboard/`. `/dashboard` itself is a redirect to `/dashboard/`, the caller's to make.
pub fn file_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(PREFIX)?;
    if rest.is_empty() || rest == "index.html" {
        return Some("index.html");
    }
    // build outputs only: no dot segments or hidden files, nothing escaped (`%2e%2e` would be decoded later)
    let safe = rest.split('/').all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains(['%', '\\']));
    safe.then_some(rest)
}

/// `Cache-Control` of a file of the build.
pub fn cache_control(file: &str) -> &'static str {
    if file.starts_with("assets/") { ASSET_CACHE } else { PAGE_CACHE }
}

/// `Content-Type` by extension.
pub fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_build_files_only() {
        assert_eq!(file_of("/dashboard/"), Some("index.html"));
        assert_eq!(file_of("/dashboard/index.html"), Some("index.html"));
        assert_eq!(file_of("/dashboard/assets/index-abc.js"), Some("assets/index-abc.js"));
        assert_eq!(file_of("/dashboard"), None);
        assert_eq!(file_of("/dashboardx/"), None);
        assert_eq!(file_of("/dashboard/../secret"), None);
        assert_eq!(file_of("/dashboard/assets//x.js"), None);
        assert_eq!(file_of("/dashboard/.env"), None);
        assert_eq!(file_of("/dashboard/assets/%2e%2e/index.html"), None);
        assert_eq!(file_of("/dashboard/assets\\..\\x"), None);
    }

    #[test]
    fn the_page_revalidates_and_assets_are_immutable() {
        assert_eq!(cache_control("index.html"), "no-cache");
        assert!(cache_control("assets/index-abc.js").contains("immutable"));
        assert_eq!(content_type("assets/a.css"), "text/css; charset=utf-8");
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-eval"));
    }
}
