//! Which fields of stored records are secret, and how a stored body holds them: at the record boundary
//! (every store adapter encodes and decodes through here), each secret field is moved out of the JSON
//! into `"sealed": {"<field>": "<envelope>"}`, sealed by the store's `Sealer` with the item's key and
//! the field name as associated data. Bodies without `sealed` (written before encryption) read as they
//! are and are sealed on their next write; `reseal` rewrites every one (migration, key rotation).

use crate::keys;
use crate::ports::sealer::{Place, Purpose, SealError, Sealer};
use crate::ports::{Record, RecordKey, Store, StoreError, Write};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The attribute of a stored body that holds its sealed fields.
pub const SEALED: &str = "sealed";

/// The secret fields: entity kind, top-level field of its JSON, class of secret.
pub const SECRET_FIELDS: &[(&str, &str, Purpose)] = &[
    // The bind result: credentials (passwords, URIs with passwords), and what else a backend returns.
    (keys::KIND_BINDING, "result", Purpose::Credentials),
    // The webhook registration (its secret) while the operation runs.
    (keys::KIND_OPERATION, "webhook", Purpose::Webhook),
    // The callback's signing secret and its pending body (a bind's body carries the credentials).
    (keys::KIND_CALLBACK, "secret", Purpose::Webhook),
    (keys::KIND_CALLBACK, "body", Purpose::Webhook),
];

/// The entity kinds that have secret fields (what `reseal` rewrites).
pub const KINDS_WITH_SECRETS: &[&str] = &[
    keys::KIND_BINDING,
    keys::KIND_OPERATION,
    keys::KIND_CALLBACK,
];

fn purpose_of(field: &str) -> Option<Purpose> {
    SECRET_FIELDS
        .iter()
        .find(|(_, f, _)| *f == field)
        .map(|(_, _, p)| *p)
}

fn has_secrets(record: &Record) -> bool {
    match record {
        Record::Binding(b) => b.result.is_some(),
        Record::Operation(o) => o.webhook.is_some(),
        Record::Callback(c) => c.secret.is_some() || c.body.is_some(),
        _ => false,
    }
}

fn sealing_failed(pk: &str, sk: &str, field: &str, e: SealError) -> StoreError {
    match e {
        SealError::Unavailable(why) => StoreError::Unavailable(why),
        SealError::Invalid(why) => {
            StoreError::Corrupt(format!("field '{field}' of item {pk} / {sk}: {why}"))
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The stored body of a record: its JSON with every secret field sealed.
pub async fn encode(record: &Record, sealer: &dyn Sealer) -> Result<Vec<u8>, StoreError> {
    if !has_secrets(record) {
        return keys::encode_record(record).map_err(StoreError::Corrupt);
    }
    let (pk, sk, kind) = keys::record_key(record);
    let mut value = keys::record_value(record).map_err(StoreError::Corrupt)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(StoreError::Corrupt(format!("{kind} is not a JSON object")));
    };
    let mut sealed = Map::new();
    for (_, field, purpose) in SECRET_FIELDS.iter().filter(|(k, _, _)| *k == kind) {
        let plain = match obj.remove(*field) {
            None | Some(Value::Null) => continue,
            Some(v) => serde_json::to_vec(&v).map_err(corrupt)?,
        };
        let place = Place {
            pk: &pk,
            sk: &sk,
            field,
            purpose: *purpose,
        };
        let envelope = sealer
            .seal(place, &plain)
            .await
            .map_err(|e| sealing_failed(&pk, &sk, field, e))?;
        sealed.insert((*field).to_owned(), Value::String(envelope));
    }
    let mut out = serde_json::to_vec(&value).map_err(corrupt)?;
    // `"sealed"` goes last, so that reading can splice the opened values back in place of it without
    // parsing the record twice (`open_spliced`).
    if !sealed.is_empty() && out.pop() == Some(b'}') {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(SEALED_MEMBER);
        let map = serde_json::to_vec(&Value::Object(sealed)).map_err(corrupt)?;
        out.extend_from_slice(&map[1..]);
        out.push(b'}');
    }
    Ok(out)
}

/// How the sealed member starts in a stored body (`"sealed":{`, its opening brace included).
const SEALED_MEMBER: &[u8] = b"\"sealed\":{";

/// The fast path of reading a sealed body as `encode` writes it (`"sealed"` the last member): the body
/// with that member replaced by the opened fields, as JSON bytes; `None` when the body is not of that shape
/// (then `open_value` decides). Quotes inside JSON strings are escaped, so the needle is a real key; it is
/// the top-level one only if the object that follows ends the body.
async fn open_spliced(
    pk: &str,
    sk: &str,
    body: &[u8],
    sealer: &dyn Sealer,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(at) = memchr::memmem::rfind(body, SEALED_MEMBER) else {
        return Ok(None);
    };
    let (head, member) = body.split_at(at);
    if !(head.ends_with(b",") || head == b"{") || !body.ends_with(b"}}") {
        return Ok(None);
    }
    let map = &member[SEALED_MEMBER.len() - 1..member.len() - 1];
    let Ok(sealed) = serde_json::from_slice::<std::collections::BTreeMap<String, String>>(map)
    else {
        return Ok(None);
    };
    if sealed.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(head);
    for (n, (field, envelope)) in sealed.iter().enumerate() {
        let plain = open_field(pk, sk, field, envelope, sealer).await?;
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&serde_json::to_vec(field).map_err(corrupt)?);
        out.push(b':');
        out.extend_from_slice(&plain);
    }
    out.push(b'}');
    Ok(Some(out))
}

/// One sealed field opened: the JSON bytes of its value (checked to be JSON).
async fn open_field(
    pk: &str,
    sk: &str,
    field: &str,
    envelope: &str,
    sealer: &dyn Sealer,
) -> Result<Vec<u8>, StoreError> {
    let Some(purpose) = purpose_of(field) else {
        return Err(StoreError::Corrupt(format!(
            "item {pk} / {sk}: '{field}' is not a sealed field"
        )));
    };
    let place = Place {
        pk,
        sk,
        field,
        purpose,
    };
    let plain = sealer
        .open(place, envelope)
        .await
        .map_err(|e| sealing_failed(pk, sk, field, e))?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&plain).is_err() {
        return Err(StoreError::Corrupt(format!(
            "item {pk} / {sk}: sealed field '{field}' is not JSON"
        )));
    }
    Ok(plain)
}

/// Whether a stored body may hold sealed fields: only the kinds with secrets (told by the key's `sk`) and
/// only bodies that mention `"sealed":` (a SIMD substring search; a body that merely mentions it somewhere
/// inside is parsed and found plain). Never misses a sealed body; on the read path of every item.
fn may_be_sealed(sk: &str, body: &[u8]) -> bool {
    static NEEDLE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"sealed\":"));
    let kind_with_secrets = [
        keys::SK_BINDING_PREFIX,
        keys::SK_OPERATION_PREFIX,
        keys::SK_CALLBACK_PREFIX,
    ]
    .iter()
    .any(|p| sk.starts_with(p));
    kind_with_secrets && NEEDLE.find(body).is_some()
}

/// The JSON of a stored body with its sealed fields opened back in place; `None` when it has none
/// (decode the body as it is).
pub async fn open_value(
    pk: &str,
    sk: &str,
    body: &[u8],
    sealer: &dyn Sealer,
) -> Result<Option<Value>, StoreError> {
    if !may_be_sealed(sk, body) {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_slice(body).map_err(corrupt)?;
    let Some(obj) = value.as_object_mut() else {
        return Ok(None);
    };
    let sealed = match obj.remove(SEALED) {
        None => return Ok(Some(value)),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(StoreError::Corrupt(format!(
                "item {pk} / {sk}: '{SEALED}' is not an object"
            )));
        }
    };
    for (field, envelope) in sealed {
        let Value::String(envelope) = envelope else {
            return Err(StoreError::Corrupt(format!(
                "item {pk} / {sk}: '{field}' is not a sealed value"
            )));
        };
        let plain = open_field(pk, sk, &field, &envelope, sealer).await?;
        obj.insert(field, serde_json::from_slice(&plain).map_err(corrupt)?);
    }
    Ok(Some(value))
}

/// A stored body decoded into its record type, sealed fields opened.
pub async fn decode<T: DeserializeOwned>(
    pk: &str,
    sk: &str,
    body: &[u8],
    sealer: &dyn Sealer,
) -> Result<T, StoreError> {
    if !may_be_sealed(sk, body) {
        return serde_json::from_slice(body).map_err(corrupt);
    }
    if let Some(bytes) = open_spliced(pk, sk, body, sealer).await? {
        return serde_json::from_slice(&bytes).map_err(corrupt);
    }
    match open_value(pk, sk, body, sealer).await? {
        None => serde_json::from_slice(body).map_err(corrupt),
        Some(v) => serde_json::from_value(v).map_err(corrupt),
    }
}

/// A stored body of any entity kind decoded into a `Record`, sealed fields opened.
pub async fn decode_record(
    kind: &str,
    pk: &str,
    sk: &str,
    body: &[u8],
    sealer: &dyn Sealer,
) -> Result<Record, StoreError> {
    if !may_be_sealed(sk, body) {
        return keys::decode_record(kind, body).map_err(StoreError::Corrupt);
    }
    if let Some(bytes) = open_spliced(pk, sk, body, sealer).await? {
        return keys::decode_record(kind, &bytes).map_err(StoreError::Corrupt);
    }
    match open_value(pk, sk, body, sealer).await? {
        None => keys::decode_record(kind, body).map_err(StoreError::Corrupt),
        Some(v) => {
            let bytes = serde_json::to_vec(&v).map_err(corrupt)?;
            keys::decode_record(kind, &bytes).map_err(StoreError::Corrupt)
        }
    }
}

/// Listing of every item of some entity kinds, in key order: the maintenance scan behind `reseal`
/// (never on a request path).
#[async_trait]
pub trait RecordScan: Send + Sync {
    /// At most `limit` keys of items of `kinds` after `after` (`None`: from the start), and where the
    /// next page starts (`None`: done).
    async fn scan_keys(
        &self,
        kinds: &[&'static str],
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<RecordKey>), StoreError>;
}

/// What a `reseal` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Items read and written again with the store's current sealing key.
    pub rewritten: u64,
    /// Items that changed under the run three times in a row (each change sealed them anew).
    pub skipped: u64,
    /// Where to go on when the run stopped at its deadline; `None` once every item was done.
    pub next: Option<RecordKey>,
}

/// How many times an item that changed under `reseal` is read and written again.
const RESEAL_TRIES: usize = 3;

/// Writes every item with secret fields again through `store` (which seals with its current key, so
/// plain items get sealed and items sealed with an old key get the new one): a version-checked replace
/// of each item as read, so a concurrent change is never overwritten. Stops after the page during which
/// `deadline` passed, with `next` to resume from.
pub async fn reseal(
    store: &dyn Store,
    scan: &dyn RecordScan,
    from: Option<RecordKey>,
    deadline: Option<std::time::Instant>,
) -> Result<ResealReport, StoreError> {
    let mut report = ResealReport::default();
    let mut after = from;
    loop {
        let (keys, next) = scan
            .scan_keys(KINDS_WITH_SECRETS, after.as_ref(), 100)
            .await?;
        for key in keys {
            let mut done = false;
            for _ in 0..RESEAL_TRIES {
                let Some(current) = store.get_records(std::slice::from_ref(&key)).await?.pop()
                else {
                    // Deleted meanwhile: nothing to seal.
                    done = true;
                    break;
                };
                match store
                    .commit(vec![Write::replace(current.item, current.version)])
                    .await
                {
                    Ok(()) => {
                        report.rewritten += 1;
                        done = true;
                        break;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e),
                }
            }
            if !done {
                report.skipped += 1;
            }
        }
        after = next;
        match &after {
            None => return Ok(report),
            Some(_) if deadline.is_some_and(|d| std::time::Instant::now() >= d) => {
                report.next = after;
                return Ok(report);
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local_key::LocalKeyring;
    use crate::records::{Callback, CallbackState, OperationKind, OperationState};

    fn callback() -> Callback {
        Callback {
            tenant: "t1".into(),
            instance_id: crate::ids::InstanceId::parse("i-1").expect("id"),
            binding_id: None,
            operation_id: crate::ids::OperationId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("id"),
            kind: OperationKind::Bind,
            url: "https://example.com/hook".into(),
            secret: Some("s3cr3t-webhook".into()),
            body: Some(r#"{"credentials":{"password":"pa55word"}}"#.into()),
            status: 201,
            outcome: OperationState::Succeeded,
            completed_at: 1,
            api_version: None,
            request_identity: None,
            state: CallbackState::Pending,
            next_attempt_at: 1,
            lease_until: None,
            attempts: vec![],
            created_at: 1,
            updated_at: 1,
        }
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn secret_fields_are_sealed_and_open_back_to_the_same_record() {
        let ring = LocalKeyring::random();
        let record = Record::Callback(callback());
        let body = encode(&record, &ring).await.expect("encode");
        for secret in ["s3cr3t-webhook", "pa55word"] {
            assert!(!contains(&body, secret), "{secret} in the stored body");
        }
        assert!(contains(&body, "\"sealed\":"));
        let (pk, sk, kind) = keys::record_key(&record);
        let back = decode_record(kind, &pk, &sk, &body, &ring)
            .await
            .expect("decode");
        assert_eq!(back, record);
        let typed: Callback = decode(&pk, &sk, &body, &ring).await.expect("typed");
        assert_eq!(Record::Callback(typed), record);
    }

    #[tokio::test]
    async fn sealed_goes_last_and_other_layouts_still_read() {
        let ring = LocalKeyring::random();
        let record = Record::Callback(callback());
        let (pk, sk, kind) = keys::record_key(&record);
        let body = encode(&record, &ring).await.expect("encode");
        let text = String::from_utf8(body.clone()).expect("utf-8");
        assert!(
            text.rfind("\"sealed\":{")
                .is_some_and(|at| text[at..].ends_with("}}"))
        );
        assert!(
            open_spliced(&pk, &sk, &body, &ring)
                .await
                .expect("opens")
                .is_some()
        );
        // The same item with "sealed" among the other members (e.g. re-serialized with sorted keys).
        let sorted = serde_json::to_vec(&serde_json::from_slice::<Value>(&body).expect("json"))
            .expect("json");
        assert_ne!(sorted, body);
        assert!(
            open_spliced(&pk, &sk, &sorted, &ring)
                .await
                .expect("no error")
                .is_none()
        );
        let back = decode_record(kind, &pk, &sk, &sorted, &ring)
            .await
            .expect("decode");
        assert_eq!(back, record);
        // A plain record whose last member holds a nested "sealed" key is plain.
        let mut cb = callback();
        cb.secret = None;
        cb.body = None;
        let mut v = serde_json::to_value(&cb).expect("json");
        v["zz"] = serde_json::json!({"sealed": {"body": "x"}});
        let nested = serde_json::to_vec(&v).expect("json");
        let read: Callback = decode(&pk, &sk, &nested, &ring).await.expect("plain");
        assert_eq!(read, cb);
    }

    #[tokio::test]
    async fn plain_bodies_of_before_still_read() {
        let ring = LocalKeyring::random();
        let record = Record::Callback(callback());
        let plain = keys::encode_record(&record).expect("plain");
        let (pk, sk, kind) = keys::record_key(&record);
        let back = decode_record(kind, &pk, &sk, &plain, &ring)
            .await
            .expect("decode");
        assert_eq!(back, record);
    }

    #[tokio::test]
    async fn a_sealed_field_moved_to_another_item_or_field_or_tampered_does_not_open() {
        let ring = LocalKeyring::random();
        let record = Record::Callback(callback());
        let (pk, sk, _) = keys::record_key(&record);
        let body = encode(&record, &ring).await.expect("encode");
        // Another item.
        let err = decode::<Callback>(&pk, "W#01ARZ3NDEKTSV4RRFFQ69G5FAW", &body, &ring)
            .await
            .expect_err("other item");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        // Another field: the secret's envelope as the body.
        let mut v: Value = serde_json::from_slice(&body).expect("json");
        let secret = v[SEALED]["secret"].clone();
        v[SEALED]["body"] = secret;
        let swapped = serde_json::to_vec(&v).expect("json");
        assert!(decode::<Callback>(&pk, &sk, &swapped, &ring).await.is_err());
        // A flipped character of the ciphertext.
        let mut v: Value = serde_json::from_slice(&body).expect("json");
        let env = v[SEALED]["body"].as_str().expect("envelope").to_owned();
        let mut chars: Vec<char> = env.chars().collect();
        let at = chars.len() - 3;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        v[SEALED]["body"] = Value::String(chars.into_iter().collect());
        let tampered = serde_json::to_vec(&v).expect("json");
        let err = decode::<Callback>(&pk, &sk, &tampered, &ring)
            .await
            .expect_err("tampered");
        assert!(err.to_string().contains("'body'"), "{err}");
        assert!(!err.to_string().contains("pa55word"));
        // Another key.
        assert!(
            decode::<Callback>(&pk, &sk, &body, &LocalKeyring::random())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_finished_callback_without_secrets_is_stored_plain() {
        let ring = LocalKeyring::random();
        let mut cb = callback();
        cb.secret = None;
        cb.body = None;
        let body = encode(&Record::Callback(cb), &ring).await.expect("encode");
        assert!(!contains(&body, "\"sealed\":"));
    }
}
