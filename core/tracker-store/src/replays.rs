//! Signed requests taken once across the fleet. The edge signs each API request it forwards; a state-changing one
//! captured on the way and sent again within the replay window must be refused by every node, not only by the one
//! that took it first. So the signatures taken are remembered here, in the metadata store the nodes share (Turso in
//! production), each until its timestamp has left the window.

use crate::{Result, Store, hash_token};

impl Store {
    /// Whether the request with this `signature` is taken for the first time by any node sharing this store; it is
    /// remembered until `expires_at_ms`. Signatures already past their expiry are deleted as new ones are taken.
    pub async fn take_signature(&self, signature: &str, expires_at_ms: i64, now_ms: i64) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM taken_signatures WHERE expires_at < ?1", [now_ms]).await?;
        let taken = conn
            .execute(
                "INSERT INTO taken_signatures (signature_hash, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (signature_hash) DO NOTHING",
                libsql::params![hash_token(signature), expires_at_ms],
            )
            .await?;
        Ok(taken == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[tokio::test]
    async fn a_signature_is_taken_once_until_it_expires_for_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let (first, second) = (Store::open(&path).await.unwrap(), Store::open(&path).await.unwrap());
        assert!(first.take_signature("sig-a", 2_000, 1_000).await.unwrap());
        assert!(!second.take_signature("sig-a", 2_000, 1_500).await.unwrap(), "another node: a replay");
        assert!(second.take_signature("sig-b", 2_000, 1_500).await.unwrap());
        // past its expiry it is forgotten (its timestamp is outside the window then, which refuses it anyway)
        assert!(first.take_signature("sig-a", 4_000, 2_001).await.unwrap());
    }
}
