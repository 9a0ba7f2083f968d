//! # The dashboard's files
//!
//! `dashboard/dist` (the build of `dashboard/`, committed, and checked by `make test` to be the build of its
//! source) embedded in the node, so a self-hosted node serves its dashboard with nothing else installed. Each file
//! carries its gzip, made once at build time, and an `ETag`. How they are answered (paths, caching, the
//! Content-Security-Policy) is `tracker_protocol::dashboard`, shared with the Worker.

use tracker_protocol::dashboard;

/// One file of the build.
#[derive(Debug)]
pub struct File {
    /// Path below `/dashboard/`, e.g. `index.html`, `assets/index-3f2a.js`.
    pub name: &'static str,
    pub body: &'static [u8],
    /// The same bytes, gzipped.
    pub gzip: &'static [u8],
    /// `"<first 16 hex digits of the SHA-256 of body>"`.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// Every embedded file.
pub fn files() -> &'static [File] {
    FILES
}

/// The answer to a `GET` of `path`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    /// Empty for `304`, redirects and `404`.
    pub body: &'static [u8],
}

/// `accept_encoding` and `if_none_match` are the request's headers of those names.
pub fn answer(path: &str, accept_encoding: Option<&str>, if_none_match: Option<&str>) -> Answer {
    if path == "/dashboard" {
        let headers = vec![("location", dashboard::PREFIX), ("cache-control", dashboard::PAGE_CACHE)];
        return Answer { status: 308, headers, body: b"" };
    }
    let Some(file) = dashboard::file_of(path).and_then(|name| FILES.iter().find(|f| f.name == name)) else {
        let headers = vec![("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")];
        return Answer { status: 404, headers, body: b"no such file of the dashboard\n" };
    };
    let mut headers: Vec<(&'static str, &'static str)> = dashboard::SECURITY_HEADERS.to_vec();
    headers.push(("cache-control", dashboard::cache_control(file.name)));
    headers.push(("etag", file.etag));
    headers.push(("vary", "accept-encoding"));
    let fresh = if_none_match
        .is_some_and(|h| h.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == file.etag || t == "*"));
    if fresh {
        return Answer { status: 304, headers, body: b"" };
    }
    headers.push(("content-type", dashboard::content_type(file.name)));
    let gzip_ok = accept_encoding.is_some_and(|h| {
        h.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
    });
    if gzip_ok && file.gzip.len() < file.body.len() {
        headers.push(("content-encoding", "gzip"));
        return Answer { status: 200, headers, body: file.gzip };
    }
    Answer { status: 200, headers, body: file.body }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn header(a: &Answer, name: &str) -> Option<&'static str> {
        a.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn the_page_and_its_assets_are_embedded() {
        let page = answer("/dashboard/", None, None);
        assert_eq!(page.status, 200);
        let html = std::str::from_utf8(page.body).unwrap();
        assert!(html.contains("<html"), "{html}");
        // every asset the page names is embedded, and only built files are
        for src in html.split("/dashboard/").skip(1).filter_map(|s| s.split('"').next()) {
            assert_eq!(answer(&format!("/dashboard/{src}"), None, None).status, 200, "{src}");
        }
        assert!(files().iter().any(|f| f.name.starts_with("assets/") && f.name.ends_with(".js")));
        assert_eq!(header(&page, "cache-control"), Some("no-cache"));
        assert!(header(&page, "content-security-policy").unwrap().contains("frame-ancestors 'none'"));
    }

    #[test]
    fn gzip_when_accepted_and_304_when_fresh() {
        let js = files().iter().find(|f| f.name.ends_with(".js")).unwrap();
        let path = format!("/dashboard/{}", js.name);
        let gz = answer(&path, Some("br, gzip;q=0.8"), None);
        assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
        assert!(header(&gz, "cache-control").unwrap().contains("immutable"));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gz.body).read_to_end(&mut unzipped).unwrap();
        assert_eq!(unzipped, js.body);
        assert_eq!(header(&answer(&path, Some("gzip;q=0"), None), "content-encoding"), None);
        assert_eq!(answer(&path, None, Some(js.etag)).status, 304);
        assert_eq!(answer(&path, None, Some("\"other\"")).status, 200);
    }

    #[test]
    fn outside_the_build_is_404_and_the_bare_prefix_redirects() {
        assert_eq!(answer("/dashboard/../Cargo.toml", None, None).status, 404);
        assert_eq!(answer("/dashboard/assets/missing.js", None, None).status, 404);
        let bare = answer("/dashboard", None, None);
        assert_eq!((bare.status, header(&bare, "location")), (308, Some("/dashboard/")));
    }
}
