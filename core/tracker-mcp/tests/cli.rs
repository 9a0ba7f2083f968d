//! The stdio binary refuses a configuration it cannot work with, saying why, before it speaks MCP (desktop
//! clients show a server's stderr when it exits).

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracker-mcp"));
    cmd.args(args).env_remove("TRACKER_API_URL").env_remove("TRACKER_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("tracker-mcp runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_url_that_is_not_http_is_refused_with_the_reason() {
    let (ok, err) = run(&["--api-url", "file:///etc/passwd", "--api-key", "trk_key_x"], &[]);
    assert!(!ok);
    assert!(err.contains("must start with https:// or http://"), "{err}");
}

#[test]
fn the_credential_is_required_and_named() {
    let (ok, err) = run(&[], &[("TRACKER_API_URL", "http://127.0.0.1:9")]);
    assert!(!ok);
    assert!(err.contains("--api-key") && err.contains("TRACKER_API_KEY"), "{err}");
}

#[test]
fn an_unreachable_api_is_reported_not_hung_on() {
    // port 9 (discard) on loopback: nothing listens, the connection is refused at once
    let (ok, err) = run(&[], &[("TRACKER_API_URL", "http://127.0.0.1:9"), ("TRACKER_API_KEY", "trk_key_x")]);
    assert!(!ok);
    assert!(err.contains("could not be reached") && err.contains("/api/openapi.json"), "{err}");
}
