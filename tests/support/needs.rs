//! What a test needs from outside the workspace: a program `make test` installs (sqld, DuckDB, the S3 server),
//! found through an environment variable `make test` sets. Run by hand without it, the test says it is skipped and
//! passes; under `CI=true` the absence fails the test, so CI cannot go green by skipping. What CI cannot have at all
//! (an Iggy server) is not handled here: those tests are `#[ignore]`d with the reason, and `make test` lists them.
//!
//! Included by the test files that need it (`#[path = ".../tests/support/needs.rs"] mod needs;`).

use std::ffi::OsString;

/// The value of `var`, or `None` after saying that `test` is skipped and why (`what` is the thing it names).
///
/// # Panics
/// When `var` is unset and `CI` is `true`: a CI run must run every test it can have.
#[allow(dead_code)] // each including test file uses what it needs
pub fn var(var: &str, test: &str, what: &str) -> Option<OsString> {
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(value);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs {what}: {var} is not set, and CI=true does not skip (make test sets it)"
    );
    eprintln!("SKIPPED {test}: {var} is not set ({what}; make test sets it)");
    None
}
