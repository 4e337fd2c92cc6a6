//! Sharing tokens: derived, never stored. `token = "osbst_" + base64url(HMAC-SHA256(key, owner tenant,
//! owner id, 128-bit random nonce, expiry))`. The owner record keeps the nonce, the expiry and the token's
//! SHA-256 (the key of the token's lookup item); the server-side key never reaches the store, so a
//! database read alone cannot produce a usable token, while the owner's GET can show it again.

use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Prefix of every sharing token (lets secret scanners recognise them).
pub const TOKEN_PREFIX: &str = "osbst_";

/// Default token lifetime: 7 days.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// The server-side key tokens are derived with. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(redacted)")
    }
}

impl TokenKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        TokenKey(b)
    }
    /// A key derived from other secret material (e.g. the tenants' secret on AWS).
    pub fn derive_from(material: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"osb-broker sharing token key v1\0");
        h.update(material);
        TokenKey(h.finalize().into())
    }
    /// The key's bytes (for a key file used by something other than tokens, e.g. the simulated backend).
    pub fn into_bytes(self) -> [u8; 32] {
        self.0
    }
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        TokenKey(b)
    }
    /// The key kept (hex, mode 0600) in `file`, created on first use.
    pub fn load_or_create(file: &Path) -> std::io::Result<Self> {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Some(key) = from_hex(text.trim())
        {
            return Ok(TokenKey(key));
        }
        let key = TokenKey::random();
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::config::write_private(file, &hex(&key.0))?;
        Ok(key)
    }
}

/// `[sharing]` of the broker configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharingConfig {
    /// How long a sharing token is valid after it is generated.
    pub token_lifetime_seconds: u64,
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECS,
        }
    }
}

/// What the sharing use cases need: the key and the token lifetime.
#[derive(Debug, Clone)]
pub struct SharingSettings {
    pub key: TokenKey,
    pub token_lifetime_ms: i64,
}

impl SharingSettings {
    pub fn new(key: TokenKey, token_lifetime_secs: u64) -> Self {
        SharingSettings {
            key,
            token_lifetime_ms: (token_lifetime_secs.min(10 * 365 * 24 * 3600) as i64) * 1000,
        }
    }

    /// A new token state for an owner: fresh nonce, expiry `now + lifetime`.
    pub fn new_token(&self, owner_tenant: &str, owner_id: &str, now: i64) -> super::TokenState {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = hex(&nonce);
        let expires_at = now.saturating_add(self.token_lifetime_ms);
        let token = self.token(owner_tenant, owner_id, &nonce, expires_at);
        super::TokenState {
            nonce,
            expires_at,
            hash: token_hash(&token),
        }
    }

    /// The token of a token state (what the owner's GET shows).
    pub fn token(
        &self,
        owner_tenant: &str,
        owner_id: &str,
        nonce: &str,
        expires_at: i64,
    ) -> String {
        let mut msg = Vec::new();
        for part in [
            owner_tenant.as_bytes(),
            owner_id.as_bytes(),
            nonce.as_bytes(),
            expires_at.to_string().as_bytes(),
        ] {
            msg.extend_from_slice(&(part.len() as u32).to_be_bytes());
            msg.extend_from_slice(part);
        }
        let mac = hmac_sha256(&self.key.0, &msg);
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
        )
    }
}

/// Hex SHA-256 of a presented token: the key of its lookup item.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104), by the `hmac` crate (the same one that signs webhooks).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_depend_on_key_nonce_and_expiry_and_the_state_keeps_only_a_hash() {
        let s = SharingSettings::new(TokenKey::from_bytes([7; 32]), 60);
        let st = s.new_token("cf1", "i1", 1_000);
        assert_eq!(st.expires_at, 61_000);
        assert_eq!(st.nonce.len(), 32, "128-bit nonce");
        let token = s.token("cf1", "i1", &st.nonce, st.expires_at);
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() > 40);
        assert_eq!(token_hash(&token), st.hash);
        assert!(!format!("{st:?}").contains(&token));
        let other = SharingSettings::new(TokenKey::from_bytes([8; 32]), 60);
        assert_ne!(other.token("cf1", "i1", &st.nonce, st.expires_at), token);
        assert_ne!(s.token("cf1", "i1", &st.nonce, st.expires_at + 1), token);
        assert_ne!(s.new_token("cf1", "i1", 1_000).hash, st.hash);
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        let a = TokenKey::load_or_create(&f).unwrap();
        let b = TokenKey::load_or_create(&f).unwrap();
        assert_eq!(a, b);
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&f).unwrap()));
    }
}
