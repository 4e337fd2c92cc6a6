//! The local-mode sealer: AES-256-GCM with keys from a key file in the data directory (owner-only), never
//! from the database. Envelope: `L1.<key id>.<base64url(nonce || ciphertext || tag)>`; the key id
//! (16 hex digits of a SHA-256 of the key) names which key of the file opens it.
//!
//! The file holds one base64 key a line; the first seals, every one opens (rotation: a new first key,
//! re-encrypt, then the old ones go). It is created on first start; a missing file or one without the
//! key the database was written with is a start-up error naming the file, never a silent new key.

use crate::ports::sealer::{KeyBytes, Place, SealError, Sealer, aes_open, aes_seal};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The envelope prefix of a value sealed with a local key.
const SCHEME: &str = "L1";

const HEADER: &str = "# osb-broker record keys: one base64 AES-256 key a line. The first encrypts, every one decrypts.\n\
# Keep it owner-only and back it up with broker.db: without it the stored credentials cannot be read.\n";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "the record key file {0} is missing, but the database was encrypted with a key (id {1}): restore the file; a new key would not read the stored credentials"
    )]
    Missing(PathBuf, String),
    #[error(
        "the record key file {0} does not hold the key (id {1}) the database was encrypted with: restore the right file"
    )]
    WrongKey(PathBuf, String),
    #[error("the record key file {0} is invalid: {1}")]
    Invalid(PathBuf, String),
    #[error("cannot read or write the record key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// One key of the file, with its id.
#[derive(Clone)]
struct Entry {
    id: String,
    key: KeyBytes,
}

/// The keys of a key file: the first seals, all open. `Debug` shows key ids only.
#[derive(Clone)]
pub struct LocalKeyring {
    file: Option<PathBuf>,
    keys: Vec<Entry>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("file", &self.file)
            .field(
                "key_ids",
                &self.keys.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The id of a key: 16 hex digits of SHA-256 over a label and the key (reveals nothing of the key).
pub fn key_id(key: &KeyBytes) -> String {
    let mut h = Sha256::new();
    h.update(b"osb-broker record key id v1\0");
    h.update(key.expose());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl LocalKeyring {
    /// A keyring of one key, kept in memory only (tests, tools).
    pub fn in_memory(key: KeyBytes) -> Self {
        LocalKeyring {
            file: None,
            keys: vec![Entry {
                id: key_id(&key),
                key,
            }],
        }
    }

    /// A fresh random in-memory keyring.
    pub fn random() -> Self {
        Self::in_memory(KeyBytes::random())
    }

    /// The id of the key that seals.
    pub fn active_id(&self) -> &str {
        self.keys.first().map(|e| e.id.as_str()).unwrap_or_default()
    }

    /// Whether a key with this id is in the ring.
    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|e| e.id == id)
    }

    /// The keyring for a store: `file` when it exists (it must hold `expected`, the id of the key the
    /// store was last written with, when the store knows one); created with a new key when it does not
    /// exist and the store has no key yet; an error when it is missing but the store expects a key.
    pub fn open_or_create(file: &Path, expected: Option<&str>) -> Result<Self, KeyFileError> {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let ring = Self::parse(file, &text)?;
                warn_if_readable_by_others(file);
                match expected {
                    Some(id) if !ring.has(id) => {
                        Err(KeyFileError::WrongKey(file.to_path_buf(), id.to_owned()))
                    }
                    _ => Ok(ring),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match expected {
                Some(id) => Err(KeyFileError::Missing(file.to_path_buf(), id.to_owned())),
                None => {
                    let mut ring = Self::in_memory(KeyBytes::random());
                    ring.file = Some(file.to_path_buf());
                    ring.save()?;
                    Ok(ring)
                }
            },
            Err(e) => Err(KeyFileError::Io(file.to_path_buf(), e)),
        }
    }

    /// The keyring of an existing key file (tools and tests that read a data directory).
    pub fn load(file: &Path) -> Result<Self, KeyFileError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| KeyFileError::Io(file.to_path_buf(), e))?;
        Self::parse(file, &text)
    }

    fn parse(file: &Path, text: &str) -> Result<Self, KeyFileError> {
        let invalid = |why: String| KeyFileError::Invalid(file.to_path_buf(), why);
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = STANDARD
                .decode(line)
                .map_err(|_| invalid(format!("line {} is not base64", n + 1)))?;
            let key = KeyBytes::from_slice(&bytes)
                .ok_or_else(|| invalid(format!("line {} is not a 32-byte key", n + 1)))?;
            keys.push(Entry {
                id: key_id(&key),
                key,
            });
        }
        if keys.is_empty() {
            return Err(invalid("it holds no key".into()));
        }
        Ok(LocalKeyring {
            file: Some(file.to_path_buf()),
            keys,
        })
    }

    /// Writes the ring to its file (owner-only), replacing it atomically (a temporary file renamed).
    fn save(&self) -> Result<(), KeyFileError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let io = |e| KeyFileError::Io(file.clone(), e);
        let mut text = HEADER.to_owned();
        for e in &self.keys {
            text.push_str(&STANDARD.encode(e.key.expose()));
            text.push('\n');
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = file.with_extension("tmp");
        crate::config::write_private(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, file).map_err(io)
    }

    /// Rotation, step 1: a new random key becomes the sealing key; the old ones stay to open what they
    /// sealed. Saved to the file before anything is sealed with the new key.
    pub fn rotate(&mut self) -> Result<(), KeyFileError> {
        let key = KeyBytes::random();
        self.keys.insert(
            0,
            Entry {
                id: key_id(&key),
                key,
            },
        );
        self.save()
    }

    /// Rotation, last step (once everything is re-encrypted): only the sealing key stays.
    pub fn retire_old_keys(&mut self) -> Result<(), KeyFileError> {
        self.keys.truncate(1);
        self.save()
    }

    fn key(&self, id: &str) -> Option<&KeyBytes> {
        self.keys.iter().find(|e| e.id == id).map(|e| &e.key)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %file.display(), "the record key file is readable by others: chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[async_trait]
impl Sealer for LocalKeyring {
    async fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Result<String, SealError> {
        let active = self
            .keys
            .first()
            .ok_or_else(|| SealError::Invalid("no record key".into()))?;
        let sealed = aes_seal(&active.key, &place.aad(), plaintext)?;
        Ok(format!(
            "{SCHEME}.{}.{}",
            active.id,
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    async fn open(&self, place: Place<'_>, sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(SCHEME), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Invalid(
                "not sealed with a local record key".into(),
            ));
        };
        let key = self.key(id).ok_or_else(|| {
            SealError::Invalid(format!(
                "sealed with record key {id}, which the key file does not hold"
            ))
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Invalid("ciphertext is not base64url".into()))?;
        aes_open(key, &place.aad(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::sealer::Purpose;

    const PLACE: Place<'static> = Place {
        pk: "T#t#I#i",
        sk: "B#b",
        field: "result",
        purpose: Purpose::Credentials,
    };

    #[tokio::test]
    async fn a_new_file_is_owner_only_and_reopens_with_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record-key");
        let ring = LocalKeyring::open_or_create(&file, None).expect("created");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = ring.seal(PLACE, b"pw").await.expect("seal");
        let again = LocalKeyring::open_or_create(&file, Some(ring.active_id())).expect("reopen");
        assert_eq!(again.open(PLACE, &sealed).await.expect("open"), b"pw");
        assert!(format!("{again:?}").contains(ring.active_id()));
        assert!(!format!("{again:?}").contains(&STANDARD.encode(ring.keys[0].key.expose())));
    }

    #[test]
    fn a_missing_or_wrong_file_with_a_known_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record-key");
        let err =
            LocalKeyring::open_or_create(&file, Some("0011223344556677")).expect_err("missing");
        assert!(matches!(err, KeyFileError::Missing(..)));
        assert!(err.to_string().contains(&file.display().to_string()));
        assert!(!file.exists(), "no silent new key");
        LocalKeyring::open_or_create(&file, None).expect("created");
        let err = LocalKeyring::open_or_create(&file, Some("0011223344556677")).expect_err("wrong");
        assert!(matches!(err, KeyFileError::WrongKey(..)));
        assert!(err.to_string().contains(&file.display().to_string()));
        std::fs::write(&file, "not a key\n").expect("write");
        let err = LocalKeyring::open_or_create(&file, None).expect_err("invalid");
        assert!(matches!(err, KeyFileError::Invalid(..)), "{err}");
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_until_retired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record-key");
        let mut ring = LocalKeyring::open_or_create(&file, None).expect("created");
        let old_id = ring.active_id().to_owned();
        let old = ring.seal(PLACE, b"old").await.expect("seal");
        ring.rotate().expect("rotate");
        assert_ne!(ring.active_id(), old_id);
        let reread = LocalKeyring::open_or_create(&file, Some(&old_id)).expect("both keys");
        assert_eq!(reread.open(PLACE, &old).await.expect("old opens"), b"old");
        let new = reread.seal(PLACE, b"new").await.expect("seal");
        assert!(new.contains(ring.active_id()));
        ring.retire_old_keys().expect("retire");
        let only_new = LocalKeyring::open_or_create(&file, Some(ring.active_id())).expect("new");
        assert!(only_new.open(PLACE, &old).await.is_err());
        assert_eq!(only_new.open(PLACE, &new).await.expect("new opens"), b"new");
    }
}
