//! The AWS sealer: envelope encryption with KMS. A data key (`GenerateDataKey`, AES-256, encryption
//! context `purpose = credentials | webhook`) seals fields with AES-256-GCM (the item's key and field as
//! associated data); the envelope carries the KMS-wrapped data key:
//! `K1.<base64url(wrapped key)>.<base64url(nonce || ciphertext || tag)>`.
//!
//! Per cold start one data key per purpose is cached for a bounded time and number of uses, so a request
//! does not pay a KMS call; unwrapped data keys (`Decrypt`, same encryption context) are cached the same
//! way. The key policy grants each function's role what it needs per purpose (template.yaml).

use crate::ports::sealer::{KeyBytes, Place, Purpose, SealError, Sealer, aes_open, aes_seal};
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCHEME: &str = "K1";

/// The encryption context key whose value is the field's `Purpose` (the key policy's condition).
pub const CONTEXT_PURPOSE: &str = "purpose";

/// How long and how often cached data keys are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Age after which a data key seals no more and an unwrapped key is asked for again.
    pub max_age: Duration,
    /// Values one data key seals before a new one is generated.
    pub max_uses: u64,
    /// Unwrapped data keys kept at most.
    pub max_unwrapped: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(300),
            max_uses: 100_000,
            max_unwrapped: 1024,
        }
    }
}

/// Unwrapped data keys by purpose and wrapped form, with when they were unwrapped.
type Unwrapped = HashMap<(Purpose, Vec<u8>), (KeyBytes, Instant)>;

/// The data key a purpose seals with now.
struct Active {
    key: KeyBytes,
    wrapped: String,
    created: Instant,
    uses: u64,
}

pub struct KmsSealer {
    client: Client,
    key_id: String,
    limits: CacheLimits,
    sealing: [tokio::sync::Mutex<Option<Active>>; 2],
    unwrapped: Mutex<Unwrapped>,
    generated: AtomicU64,
    decrypted: AtomicU64,
}

impl std::fmt::Debug for KmsSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSealer")
            .field("key_id", &self.key_id)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn slot(p: Purpose) -> usize {
    match p {
        Purpose::Credentials => 0,
        Purpose::Webhook => 1,
    }
}

/// A KMS failure as a `SealError`: a ciphertext KMS refuses is `Invalid`, anything else (throttling
/// after the SDK's retries, network, a disabled key, access) `Unavailable`. Only the error code is kept.
fn classify<E: ProvideErrorMetadata, R>(what: &str, e: &SdkError<E, R>) -> SealError {
    let code = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("unknown").to_owned(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure".into(),
        _ => "unknown".into(),
    };
    match code.as_str() {
        "InvalidCiphertextException" | "IncorrectKeyException" => {
            SealError::Invalid(format!("KMS {what} refused the wrapped data key: {code}"))
        }
        _ => SealError::Unavailable(format!("KMS {what} failed: {code}")),
    }
}

impl KmsSealer {
    /// Seals with data keys of the KMS key `key_id` (id, ARN or alias); opens envelopes of any key the
    /// caller may decrypt with (keys rotated away included).
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self::with_limits(client, key_id, CacheLimits::default())
    }

    pub fn with_limits(client: Client, key_id: impl Into<String>, limits: CacheLimits) -> Self {
        KmsSealer {
            client,
            key_id: key_id.into(),
            limits,
            sealing: Default::default(),
            unwrapped: Mutex::new(HashMap::new()),
            generated: AtomicU64::new(0),
            decrypted: AtomicU64::new(0),
        }
    }

    /// KMS calls made so far: (`GenerateDataKey`, `Decrypt`).
    pub fn kms_calls(&self) -> (u64, u64) {
        (
            self.generated.load(Ordering::Relaxed),
            self.decrypted.load(Ordering::Relaxed),
        )
    }

    /// The data key to seal with for `purpose`, and its wrapped form: the cached one while it is young and
    /// has uses left, else a new one from KMS.
    async fn sealing_key(&self, purpose: Purpose) -> Result<(KeyBytes, String), SealError> {
        let mut active = self.sealing[slot(purpose)].lock().await;
        let fresh = active.as_ref().is_some_and(|a| {
            a.created.elapsed() < self.limits.max_age && a.uses < self.limits.max_uses
        });
        if !fresh {
            let out = self
                .client
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(DataKeySpec::Aes256)
                .encryption_context(CONTEXT_PURPOSE, purpose.as_str())
                .send()
                .await
                .map_err(|e| classify("GenerateDataKey", &e))?;
            self.generated.fetch_add(1, Ordering::Relaxed);
            let (Some(plain), Some(wrapped)) = (out.plaintext, out.ciphertext_blob) else {
                return Err(SealError::Unavailable(
                    "KMS GenerateDataKey returned no key".into(),
                ));
            };
            let key = KeyBytes::from_slice(plain.as_ref()).ok_or_else(|| {
                SealError::Unavailable("KMS GenerateDataKey returned a key of another size".into())
            })?;
            let wrapped = wrapped.into_inner();
            // What this process seals, it opens without asking KMS.
            self.remember(purpose, wrapped.clone(), key.clone());
            *active = Some(Active {
                key,
                wrapped: URL_SAFE_NO_PAD.encode(wrapped),
                created: Instant::now(),
                uses: 0,
            });
        }
        let a = active
            .as_mut()
            .ok_or_else(|| SealError::Unavailable("no data key".into()))?;
        a.uses += 1;
        Ok((a.key.clone(), a.wrapped.clone()))
    }

    fn remember(&self, purpose: Purpose, wrapped: Vec<u8>, key: KeyBytes) {
        let Ok(mut cache) = self.unwrapped.lock() else {
            return;
        };
        if cache.len() >= self.limits.max_unwrapped {
            let max_age = self.limits.max_age;
            cache.retain(|_, (_, at)| at.elapsed() < max_age);
            if cache.len() >= self.limits.max_unwrapped {
                cache.clear();
            }
        }
        cache.insert((purpose, wrapped), (key, Instant::now()));
    }

    fn cached(&self, purpose: Purpose, wrapped: &[u8]) -> Option<KeyBytes> {
        let cache = self.unwrapped.lock().ok()?;
        cache
            .get(&(purpose, wrapped.to_vec()))
            .filter(|(_, at)| at.elapsed() < self.limits.max_age)
            .map(|(k, _)| k.clone())
    }

    /// The data key inside `wrapped`: from the cache, or unwrapped by KMS `Decrypt` with the purpose's
    /// encryption context (a key wrapped for another purpose does not unwrap).
    async fn unwrap_key(&self, purpose: Purpose, wrapped: Vec<u8>) -> Result<KeyBytes, SealError> {
        if let Some(key) = self.cached(purpose, &wrapped) {
            return Ok(key);
        }
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped.clone()))
            .encryption_context(CONTEXT_PURPOSE, purpose.as_str())
            .send()
            .await
            .map_err(|e| classify("Decrypt", &e))?;
        self.decrypted.fetch_add(1, Ordering::Relaxed);
        let key = out
            .plaintext
            .and_then(|p| KeyBytes::from_slice(p.as_ref()))
            .ok_or_else(|| SealError::Invalid("KMS Decrypt returned no 32-byte key".into()))?;
        self.remember(purpose, wrapped, key.clone());
        Ok(key)
    }
}

#[async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Result<String, SealError> {
        let (key, wrapped) = self.sealing_key(place.purpose).await?;
        let sealed = aes_seal(&key, &place.aad(), plaintext)?;
        Ok(format!(
            "{SCHEME}.{wrapped}.{}",
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    async fn open(&self, place: Place<'_>, sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(SCHEME), Some(wrapped), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Invalid("not a KMS envelope".into()));
        };
        let b64 = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| SealError::Invalid("envelope is not base64url".into()))
        };
        let key = self.unwrap_key(place.purpose, b64(wrapped)?).await?;
        aes_open(&key, &place.aad(), &b64(data)?)
    }
}
