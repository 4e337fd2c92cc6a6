//! Sharing tokens: derived, never stored. `token = "osbst_" + key id + "." + base64url(HMAC-SHA256(key,
//! key id, owner tenant, owner id, 128-bit random nonce, expiry))`. The owner record keeps the nonce, the
//! expiry, the key id and the token's SHA-256 (the key of the token's lookup item); the server-side keys
//! never reach the store, so a database read alone cannot produce a usable token, while the owner's GET can
//! show it again. A token is accepted by its hash, so it verifies until it expires whatever happens to the
//! keys; the keys only let the owner's view show it again.
//!
//! The keys are a set of their own, apart from every tenant credential: locally a file in the data
//! directory (`sharing-token-key`), on AWS a Secrets Manager secret the template creates. Both hold
//! `{"current": "<id>", "<id>": "<random material>", …}`; rotation adds an id and makes it current, and
//! the owner's view keeps showing older tokens while their key is still listed.

use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
    /// A key derived from other secret material (a key set's entry, the table name for the simulated
    /// backend's demo key on AWS).
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

/// Why a set of token keys cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeySetError {
    #[error(
        "the sharing token key file {0} is missing, but the data directory already holds a database: restore the file. If it is lost for good, create a new one (`{{\"current\": \"k2\", \"k2\": \"<64 random hex characters>\"}}`, mode 0600): tokens already handed out keep working until they expire, owners regenerate the ones their GET can no longer show"
    )]
    Missing(std::path::PathBuf),
    #[error("cannot read or write the sharing token key file {0}: {1}")]
    Io(std::path::PathBuf, String),
    #[error("the sharing token keys {0} are invalid: {1}")]
    Invalid(String, String),
}

/// The sharing token keys: one current key (new tokens) and older ones (to show the tokens made with
/// them). `Debug` never shows a key.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenKeys {
    current: String,
    keys: BTreeMap<String, TokenKey>,
}

impl TokenKeys {
    /// One key, current.
    pub fn single(id: &str, key: TokenKey) -> Self {
        TokenKeys {
            current: id.to_owned(),
            keys: BTreeMap::from([(id.to_owned(), key)]),
        }
    }

    /// `{"current": "<id>", "<id>": "<material>", …}`: ids of a-z, 0-9 (at most 16), material of at least
    /// 32 characters. `what` names the source in errors (never the material).
    pub fn parse(text: &str, what: &str) -> Result<Self, KeySetError> {
        let bad = |why: String| KeySetError::Invalid(what.to_owned(), why);
        let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|_| {
            bad("expected a JSON object {\"current\": \"<key id>\", \"<key id>\": \"<random material>\"}".into())
        })?;
        let current = map.get("current").cloned().ok_or_else(|| {
            bad("\"current\" (the id of the key new tokens use) is missing".into())
        })?;
        let mut keys = BTreeMap::new();
        for (id, material) in map.into_iter().filter(|(k, _)| k != "current") {
            if id.is_empty()
                || id.len() > 16
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(bad(format!(
                    "key id '{id}' must be 1-16 characters of a-z, 0-9"
                )));
            }
            if material.len() < 32 {
                return Err(bad(format!(
                    "the material of key '{id}' must be at least 32 random characters"
                )));
            }
            keys.insert(id, TokenKey::derive_from(material.as_bytes()));
        }
        if !keys.contains_key(&current) {
            return Err(bad(format!(
                "the current key '{current}' is not in the set"
            )));
        }
        Ok(TokenKeys { current, keys })
    }

    /// The keys in `file`. A missing file is created with a new key when `first_start` (nothing stored
    /// yet), and is an error otherwise: a silently new key would make every token shown so far unshowable.
    /// A file of one hex key (the format before key ids) is read as the key with id "".
    pub fn load(file: &Path, first_start: bool) -> Result<Self, KeySetError> {
        let io = |e: std::io::Error| KeySetError::Io(file.to_path_buf(), e.to_string());
        match std::fs::read_to_string(file) {
            Ok(text) => {
                if let Some(key) = from_hex(text.trim()) {
                    return Ok(TokenKeys::single("", TokenKey(key)));
                }
                TokenKeys::parse(&text, &file.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !first_start {
                    return Err(KeySetError::Missing(file.to_path_buf()));
                }
                let mut material = [0u8; 32];
                rand::rng().fill_bytes(&mut material);
                let text = serde_json::json!({"current": "k1", "k1": hex(&material)}).to_string();
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                crate::config::write_private(file, &text).map_err(io)?;
                TokenKeys::parse(&text, &file.display().to_string())
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A fresh random key (a broker that never makes tokens: the worker on AWS).
    pub fn random() -> Self {
        TokenKeys::single("k1", TokenKey::random())
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

/// What the sharing use cases need: the keys, the token lifetime and the tenants a rule may name.
#[derive(Debug, Clone)]
pub struct SharingSettings {
    pub keys: TokenKeys,
    pub token_lifetime_ms: i64,
    /// The names of the configured tenants (`sharing_to` may name only these); `None` where nothing
    /// checks rules (the worker).
    pub tenants: Option<std::collections::BTreeSet<String>>,
}

impl SharingSettings {
    pub fn new(keys: TokenKeys, token_lifetime_secs: u64) -> Self {
        SharingSettings {
            keys,
            token_lifetime_ms: (token_lifetime_secs.min(10 * 365 * 24 * 3600) as i64) * 1000,
            tenants: None,
        }
    }

    /// The same settings, checking `sharing_to` against these tenant names.
    pub fn with_tenants(mut self, names: std::collections::BTreeSet<String>) -> Self {
        self.tenants = Some(names);
        self
    }

    /// A new token state for an owner: fresh nonce, expiry `now + lifetime`, the current key.
    pub fn new_token(&self, owner_tenant: &str, owner_id: &str, now: i64) -> super::TokenState {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = hex(&nonce);
        let expires_at = now.saturating_add(self.token_lifetime_ms);
        let key_id = self.keys.current.clone();
        let token = self
            .derive(owner_tenant, owner_id, &nonce, expires_at, &key_id)
            .unwrap_or_default();
        super::TokenState {
            hash: token_hash(&token),
            nonce,
            expires_at,
            key_id,
        }
    }

    /// The token of a token state (what the owner's GET shows), when its key is still known and the
    /// token it yields is the one whose hash is stored (so a wrong key never shows a token that fails).
    pub fn token(
        &self,
        owner_tenant: &str,
        owner_id: &str,
        state: &super::TokenState,
    ) -> Option<String> {
        let token = self.derive(
            owner_tenant,
            owner_id,
            &state.nonce,
            state.expires_at,
            &state.key_id,
        )?;
        (token_hash(&token) == state.hash).then_some(token)
    }

    fn derive(
        &self,
        owner_tenant: &str,
        owner_id: &str,
        nonce: &str,
        expires_at: i64,
        key_id: &str,
    ) -> Option<String> {
        let key = self.keys.keys.get(key_id)?;
        let mut msg = Vec::new();
        let expiry = expires_at.to_string();
        let mut parts = vec![
            owner_tenant.as_bytes(),
            owner_id.as_bytes(),
            nonce.as_bytes(),
            expiry.as_bytes(),
        ];
        if !key_id.is_empty() {
            parts.insert(0, key_id.as_bytes());
        }
        for part in parts {
            msg.extend_from_slice(&(part.len() as u32).to_be_bytes());
            msg.extend_from_slice(part);
        }
        let mac =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac_sha256(&key.0, &msg));
        Some(if key_id.is_empty() {
            format!("{TOKEN_PREFIX}{mac}")
        } else {
            format!("{TOKEN_PREFIX}{key_id}.{mac}")
        })
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

    fn settings(id: &str, byte: u8) -> SharingSettings {
        SharingSettings::new(TokenKeys::single(id, TokenKey::from_bytes([byte; 32])), 60)
    }

    #[test]
    fn tokens_depend_on_key_nonce_and_expiry_and_the_state_keeps_only_a_hash() {
        let s = settings("k1", 7);
        let st = s.new_token("cf1", "i1", 1_000);
        assert_eq!(st.expires_at, 61_000);
        assert_eq!(st.nonce.len(), 32, "128-bit nonce");
        assert_eq!(st.key_id, "k1");
        let token = s.token("cf1", "i1", &st).unwrap();
        assert!(token.starts_with("osbst_k1.") && token.len() > 40);
        assert_eq!(token_hash(&token), st.hash);
        assert!(!format!("{st:?}").contains(&token));
        // Another key with the same id derives another token, which the view never shows.
        assert_eq!(settings("k1", 8).token("cf1", "i1", &st), None);
        let later = crate::sharing::TokenState {
            expires_at: st.expires_at + 1,
            ..st.clone()
        };
        assert_eq!(s.token("cf1", "i1", &later), None);
        assert_ne!(s.new_token("cf1", "i1", 1_000).hash, st.hash);
    }

    #[test]
    fn a_rotated_key_set_shows_old_tokens_while_their_key_is_listed() {
        let material = |c: char| c.to_string().repeat(40);
        let one = SharingSettings::new(
            TokenKeys::parse(
                &format!(r#"{{"current": "k1", "k1": "{}"}}"#, material('a')),
                "t",
            )
            .unwrap(),
            60,
        );
        let st = one.new_token("cf1", "i1", 0);
        let rotated = SharingSettings::new(
            TokenKeys::parse(
                &format!(
                    r#"{{"current": "k2", "k1": "{}", "k2": "{}"}}"#,
                    material('a'),
                    material('b')
                ),
                "t",
            )
            .unwrap(),
            60,
        );
        assert_eq!(rotated.token("cf1", "i1", &st), one.token("cf1", "i1", &st));
        assert_eq!(rotated.new_token("cf1", "i1", 0).key_id, "k2");
        let dropped = SharingSettings::new(
            TokenKeys::parse(
                &format!(r#"{{"current": "k2", "k2": "{}"}}"#, material('b')),
                "t",
            )
            .unwrap(),
            60,
        );
        assert_eq!(dropped.token("cf1", "i1", &st), None);
    }

    #[test]
    fn key_sets_are_checked_and_never_echo_material() {
        for (text, why) in [
            ("not json", "JSON object"),
            (r#"{"k1": "0123456789abcdef0123456789abcdef"}"#, "current"),
            (
                r#"{"current": "k2", "k1": "0123456789abcdef0123456789abcdef"}"#,
                "not in the set",
            ),
            (r#"{"current": "k1", "k1": "short-secret"}"#, "at least 32"),
            (
                r#"{"current": "K 1", "K 1": "0123456789abcdef0123456789abcdef"}"#,
                "a-z, 0-9",
            ),
        ] {
            let e = TokenKeys::parse(text, "the secret")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(
                !e.contains("short-secret") && !e.contains("0123456789abcdef"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_lost_key_file_is_an_error_unless_nothing_is_stored_yet() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sharing-token-key");
        assert_eq!(
            TokenKeys::load(&f, false),
            Err(KeySetError::Missing(f.clone()))
        );
        assert!(!f.exists());
        let a = TokenKeys::load(&f, true).unwrap();
        assert_eq!(TokenKeys::load(&f, false).unwrap(), a);
        assert!(!format!("{a:?}").contains(&std::fs::read_to_string(&f).unwrap()));
        // The format before key ids: one hex key, id "".
        std::fs::write(&f, "ab".repeat(32)).unwrap();
        let legacy = TokenKeys::load(&f, false).unwrap();
        assert_eq!(
            legacy,
            TokenKeys::single("", TokenKey::from_bytes([0xab; 32]))
        );
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
