//! Dashboard sessions: a credential exchanged for a short-lived cookie. Only the SHA-256 of the session's secret is
//! stored. A tenant's session lives no longer than the API key it was opened with (revoking the key ends it at
//! once); the operator's remembers a check value of the admin token it was opened with (a domain-separated hash of
//! the token's hash, which opens nothing by itself), so changing `ADMIN_TOKEN` ends those.

use crate::rows::{new_id, random_secret};
use crate::{KeyOwner, Result, Store, StoreError, hash_token, int, opt_text, text};

/// Prefix of session secrets (never shown to the page: they travel only in the `HttpOnly` cookie).
pub const SESSION_SECRET_PREFIX: &str = "trk_ses_";

/// Who a session was opened by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOpener {
    /// The operator, with a check value of the admin token (hex; the caller derives and compares it).
    Admin { token_check: String },
    /// One of a tenant's API keys.
    Key { key_prefix: String, key_id: String },
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub session_id: String,
    pub opener: SessionOpener,
    /// Sent back by the page as `X-CSRF-Token` with every change; useless without the cookie.
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live session and, for a tenant's, its key and tenant as they are now.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    pub session: Session,
    /// `None` for the operator's sessions.
    pub key: Option<KeyOwner>,
}

impl Store {
    /// Opens a session; returns its secret (for the cookie) and its record. Sessions that expired more than a day
    /// ago (ended ones too: a session ends before it expires) are deleted as new ones are made.
    pub async fn create_session(&self, opener: SessionOpener, ttl_ms: i64, now_ms: i64) -> Result<(String, Session)> {
        if ttl_ms <= 0 {
            return Err(StoreError::Invalid("a session must live a positive time"));
        }
        let conn = self.conn().await?;
        conn.execute("DELETE FROM dashboard_sessions WHERE expires_at < ?1", [now_ms - 24 * 3600 * 1000]).await?;
        let secret = random_secret(SESSION_SECRET_PREFIX);
        let session = Session {
            session_id: new_id("ses"),
            opener,
            csrf_token: random_secret(""),
            created_at: now_ms,
            expires_at: now_ms + ttl_ms,
        };
        let (key_prefix, key_id, admin) = match &session.opener {
            SessionOpener::Admin { token_check } => (None, None, Some(token_check.as_str())),
            SessionOpener::Key { key_prefix, key_id } => (Some(key_prefix.as_str()), Some(key_id.as_str()), None),
        };
        conn.execute(
            "INSERT INTO dashboard_sessions
                 (session_id, session_hash, key_prefix, key_id, admin_check, csrf_token, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            libsql::params![
                session.session_id.as_str(),
                hash_token(&secret),
                key_prefix,
                key_id,
                admin,
                session.csrf_token.as_str(),
                now_ms,
                session.expires_at
            ],
        )
        .await?;
        Ok((secret, session))
    }

    /// The live session whose secret has this SHA-256 (hex): not ended, not expired, and for a tenant's, its key
    /// neither revoked nor expired.
    pub async fn session_by_hash(&self, session_hash: &str, now_ms: i64) -> Result<Option<SessionOwner>> {
        let sql = "SELECT s.session_id, s.key_prefix, s.key_id, s.admin_check, s.csrf_token, s.created_at,
                          s.expires_at, k.key_hash
                   FROM dashboard_sessions s LEFT JOIN api_keys k ON k.key_id = s.key_id AND k.key_prefix = s.key_prefix
                   WHERE s.session_hash = ?1 AND s.ended_at IS NULL AND s.expires_at > ?2";
        let (session, key_hash) = {
            let conn = self.conn().await?;
            let mut rows = conn.query(sql, (session_hash, now_ms)).await?;
            let Some(row) = rows.next().await? else { return Ok(None) };
            let opener = match (opt_text(&row, 1, "key_prefix")?, opt_text(&row, 2, "key_id")?) {
                (Some(key_prefix), Some(key_id)) => SessionOpener::Key { key_prefix, key_id },
                _ => SessionOpener::Admin {
                    token_check: opt_text(&row, 3, "admin_check")?.ok_or(StoreError::BadColumn("admin_check"))?,
                },
            };
            let session = Session {
                session_id: text(&row, 0, "session_id")?,
                opener,
                csrf_token: text(&row, 4, "csrf_token")?,
                created_at: int(&row, 5, "created_at")?,
                expires_at: int(&row, 6, "expires_at")?,
            };
            (session, opt_text(&row, 7, "key_hash")?)
        };
        match (&session.opener, key_hash) {
            (SessionOpener::Admin { .. }, _) => Ok(Some(SessionOwner { session, key: None })),
            (SessionOpener::Key { .. }, Some(key_hash)) => Ok(self
                .api_key_by_hash(&key_hash, now_ms)
                .await?
                .map(|owner| SessionOwner { session, key: Some(owner) })),
            // the key is gone
            (SessionOpener::Key { .. }, None) => Ok(None),
        }
    }

    /// Ends a session now (signing out); ending one twice is not an error.
    pub async fn end_session(&self, session_id: &str, now_ms: i64) -> Result<()> {
        self.conn()
            .await?
            .execute(
                "UPDATE dashboard_sessions SET ended_at = ?2 WHERE session_id = ?1 AND ended_at IS NULL",
                (session_id, now_ms),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_770_704_294_008;
    const HOUR: i64 = 3_600_000;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("meta/tracker.db")).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_tenant_session_lives_while_its_key_does() {
        let (_d, s) = store().await;
        let t = s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let (_, key) = s.create_api_key(&t.key_prefix, "dash", &["read".into()], None, NOW).await.unwrap();
        let opener = SessionOpener::Key { key_prefix: "acme".into(), key_id: key.key_id.clone() };
        let (secret, session) = s.create_session(opener.clone(), 8 * HOUR, NOW).await.unwrap();
        assert!(secret.starts_with(SESSION_SECRET_PREFIX));
        assert_ne!(session.csrf_token, secret);

        let live = s.session_by_hash(&hash_token(&secret), NOW + 1).await.unwrap().unwrap();
        assert_eq!(live.session, session);
        let owner = live.key.unwrap();
        assert_eq!((owner.tenant.key_prefix.as_str(), owner.key.scopes.clone()), ("acme", vec!["read".to_owned()]));
        // not by the secret itself, nor after it expires
        assert!(s.session_by_hash(&secret, NOW + 1).await.unwrap().is_none());
        assert!(s.session_by_hash(&hash_token(&secret), NOW + 8 * HOUR).await.unwrap().is_none());

        // revoking the key ends the session
        s.revoke_api_key("acme", &key.key_id, NOW + 2).await.unwrap();
        assert!(s.session_by_hash(&hash_token(&secret), NOW + 3).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn signing_out_ends_only_that_session() {
        let (_d, s) = store().await;
        s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let (_, key) = s.create_api_key("acme", "dash", &["read".into()], None, NOW).await.unwrap();
        let opener = SessionOpener::Key { key_prefix: "acme".into(), key_id: key.key_id };
        let (a, sa) = s.create_session(opener.clone(), HOUR, NOW).await.unwrap();
        let (b, _) = s.create_session(opener, HOUR, NOW).await.unwrap();
        s.end_session(&sa.session_id, NOW + 1).await.unwrap();
        s.end_session(&sa.session_id, NOW + 2).await.unwrap();
        assert!(s.session_by_hash(&hash_token(&a), NOW + 3).await.unwrap().is_none());
        assert!(s.session_by_hash(&hash_token(&b), NOW + 3).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn operator_sessions_remember_the_admin_token_and_old_sessions_go() {
        let (_d, s) = store().await;
        let opener = SessionOpener::Admin { token_check: "ab".repeat(32) };
        let (secret, _) = s.create_session(opener.clone(), HOUR, NOW).await.unwrap();
        let live = s.session_by_hash(&hash_token(&secret), NOW).await.unwrap().unwrap();
        assert_eq!(live.session.opener, opener);
        assert!(live.key.is_none());
        // a day after it expired, the next sign-in deletes it
        s.create_session(opener, HOUR, NOW + HOUR + 25 * HOUR).await.unwrap();
        let conn = s.conn().await.unwrap();
        let mut rows = conn.query("SELECT count(*) FROM dashboard_sessions", ()).await.unwrap();
        assert_eq!(rows.next().await.unwrap().unwrap().get::<i64>(0).unwrap(), 1);
        assert!(matches!(
            s.create_session(SessionOpener::Admin { token_check: String::new() }, 0, NOW).await,
            Err(StoreError::Invalid(_))
        ));
    }
}
