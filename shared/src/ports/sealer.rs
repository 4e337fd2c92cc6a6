//! The sealer port: authenticated encryption of the secret fields of stored records (binding credentials,
//! webhook secrets and bodies), each ciphertext bound to its item and field. Adapters: a local key file
//! (`adapters::local_key`) and KMS envelope encryption (`aws::kms`). Which fields are secret: `sealing`.

use async_trait::async_trait;

/// Which class of secret a field holds; a class is a key policy boundary on AWS (the KMS encryption
/// context `purpose`): the webhook sender may open `Webhook` fields but never `Credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Binding credentials and the rest of a bind's result.
    Credentials,
    /// A webhook registration's secret and a pending callback's secret and body.
    Webhook,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Credentials => "credentials",
            Purpose::Webhook => "webhook",
        }
    }
}

/// Where a sealed value belongs: the item (`pk`, `sk`) and the field. A ciphertext opens only with the
/// same place, so one copied to another item or field is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub pk: &'a str,
    pub sk: &'a str,
    pub field: &'a str,
    pub purpose: Purpose,
}

impl Place<'_> {
    /// The associated data of the AEAD: a version tag, the purpose, the item's key and the field, each
    /// length-prefixed so that no two places share the same bytes.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.pk.len() + self.sk.len());
        for part in [
            "osb-broker sealed field v1",
            self.purpose.as_str(),
            self.pk,
            self.sk,
            self.field,
        ] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SealError {
    /// The key service could not be reached or refused for now; retryable.
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    /// The ciphertext does not open here: tampered, moved from another item or field, or sealed with a key
    /// this broker does not have. Never carries key material or plaintext.
    #[error("a sealed value does not open: {0}")]
    Invalid(String),
}

/// Seals and opens values. `seal` returns printable text (stored inside the record's JSON);
/// implementations never log or return plaintext or key material in errors.
#[async_trait]
pub trait Sealer: Send + Sync {
    async fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Result<String, SealError>;
    async fn open(&self, place: Place<'_>, sealed: &str) -> Result<Vec<u8>, SealError>;
}

/// 256-bit key material: never printed (`Debug` redacts), wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(pub(crate) [u8; 32]);

impl KeyBytes {
    pub fn random() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        KeyBytes(b)
    }
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(KeyBytes)
    }
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// AES-256-GCM with a random 96-bit nonce: `nonce || ciphertext || tag`.
pub(crate) fn aes_seal(key: &KeyBytes, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use rand::RngCore;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key.expose())
        .map_err(|_| SealError::Invalid("bad key length".into()))?;
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Invalid("encryption failed".into()))?;
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what `aes_seal` made; any change to the bytes, the key or the associated data fails.
pub(crate) fn aes_open(key: &KeyBytes, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    if sealed.len() < 12 + 16 {
        return Err(SealError::Invalid("ciphertext too short".into()));
    }
    let (nonce, ct) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| SealError::Invalid("bad nonce".into()))?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key.expose())
        .map_err(|_| SealError::Invalid("bad key length".into()))?;
    cipher
        .decrypt(&nonce.into(), Payload { msg: ct, aad })
        .map_err(|_| {
            SealError::Invalid(
                "authentication failed (tampered, moved from another item, or another key)".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(sk: &str) -> Place<'_> {
        Place {
            pk: "T#t#I#i",
            sk,
            field: "result",
            purpose: Purpose::Credentials,
        }
    }

    #[test]
    fn aes_round_trips_and_rejects_tampering_other_places_and_keys() {
        let key = KeyBytes::random();
        let aad = place("B#b").aad();
        let sealed = aes_seal(&key, &aad, b"hunter2").expect("seal");
        assert_eq!(aes_open(&key, &aad, &sealed).expect("open"), b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(aes_open(&key, &aad, &tampered).is_err());
        assert!(aes_open(&key, &place("B#other").aad(), &sealed).is_err());
        assert!(aes_open(&KeyBytes::random(), &aad, &sealed).is_err());
        assert!(aes_open(&key, &aad, &sealed[..20]).is_err());
    }

    #[test]
    fn places_differ_in_their_associated_data() {
        let a = place("B#b").aad();
        let mut other_field = place("B#b");
        other_field.field = "secret";
        let mut other_purpose = place("B#b");
        other_purpose.purpose = Purpose::Webhook;
        assert_ne!(a, other_field.aad());
        assert_ne!(a, other_purpose.aad());
        // Length prefixes: moving a '#' between pk and sk changes the bytes.
        let shifted = Place {
            pk: "T#t#I#iB",
            sk: "#b",
            ..place("")
        };
        assert_ne!(a, shifted.aad());
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = KeyBytes::from_slice(&[7u8; 32]).expect("32 bytes");
        assert_eq!(format!("{key:?}"), "KeyBytes(<redacted>)");
    }
}
