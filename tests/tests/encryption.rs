//! Secrets at rest in local mode, end to end on the real broker binary: after binds and webhook
//! registrations the raw SQLite files hold no credential, password or webhook secret; GET binding, an
//! idempotent re-PUT, a restart and webhook delivery give back the exact credentials; a tampered or
//! moved ciphertext is an error, not garbage; a missing or wrong key file stops the start naming the
//! file; `osb-broker reencrypt` seals records written before encryption and rotates the key.

use e2e::receiver::{Receiver, Reply};
use e2e::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "enc-webhook-secret-9f8e7d6c5b4a";
const SECRET_IN_PROGRESS: &str = "enc-in-progress-secret-7712";

/// Every byte of the broker's database files (main file, WAL, shared memory index).
fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["broker.db", "broker.db-wal", "broker.db-shm"] {
        if let Ok(b) = std::fs::read(data_dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The secret strings of a credentials object: the password and everything that embeds it.
fn secret_strings(credentials: &Value) -> Vec<String> {
    let password = credentials["password"]
        .as_str()
        .expect("a password")
        .to_owned();
    assert!(password.len() >= 16, "a realistic password: {password}");
    let mut out = vec![password.clone()];
    if let Some(map) = credentials.as_object() {
        for v in map.values() {
            if let Some(s) = v.as_str()
                && s.contains(&password)
            {
                out.push(s.to_owned());
            }
        }
    }
    out
}

#[track_caller]
fn assert_no_secret_in(bytes: &[u8], secrets: &[String]) {
    for s in secrets {
        assert!(!contains(bytes, s), "'{s}' is stored in plain text");
    }
}

/// A raw binding row of broker.db: (pk, sk, body).
fn binding_rows(data_dir: &Path) -> Vec<(String, String, Vec<u8>)> {
    let db = rusqlite::Connection::open(data_dir.join("broker.db")).expect("broker.db");
    let mut stmt = db
        .prepare("SELECT pk, sk, body FROM items WHERE kind = 'binding' ORDER BY sk")
        .expect("select");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn set_body(data_dir: &Path, pk: &str, sk: &str, body: &[u8]) {
    let db = rusqlite::Connection::open(data_dir.join("broker.db")).expect("broker.db");
    let n = db
        .execute(
            "UPDATE items SET body = ?1 WHERE pk = ?2 AND sk = ?3",
            rusqlite::params![body, pk, sk],
        )
        .expect("update");
    assert_eq!(n, 1);
}

fn sealed_result(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).expect("json");
    v["sealed"]["result"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn binds_and_webhooks_leave_no_secret_in_the_database_and_answers_are_exact() {
    bounded(async {
        let mut broker = Broker::start_logging(&e2e::loopback_webhooks_config(&[30, 30]), "debug").await;
        let cf1 = broker.client("cf1");
        let small = json!({"service_id": PG_SERVICE, "plan_id": SMALL, "organization_guid": "o", "space_guid": "s"});
        cf1.put(&instance_path("enc-i"), &small).await.expect(201);
        // A synchronous bind, and the same PUT again: 200 with the exact credentials.
        let bind = json!({"service_id": PG_SERVICE, "plan_id": SMALL});
        let first = cf1.put(&binding_path("enc-i", "b1"), &bind).await;
        first.expect(201);
        let again = cf1.put(&binding_path("enc-i", "b1"), &bind).await;
        again.expect(200);
        assert_eq!(again.json["credentials"], first.json["credentials"]);
        let got = cf1.get(&binding_path("enc-i", "b1")).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], first.json["credentials"]);
        let mut secrets = secret_strings(&first.json["credentials"]);

        // An asynchronous bind with a webhook whose receiver fails: the callback stays pending with its
        // secret and its body (the credentials) stored.
        let rx = Receiver::start(vec![Reply::Status(503)]).await;
        let async_plan = json!({"service_id": PG_SERVICE, "plan_id": ASYNC_BINDINGS, "organization_guid": "o", "space_guid": "s"});
        cf1.put(&instance_path("enc-a"), &async_plan).await.expect(201);
        cf1.put(
            &format!(
                "{}?accepts_incomplete=true&{}",
                binding_path("enc-a", "b2"),
                e2e::webhook_query(&rx.url("/hook"), SECRET)
            ),
            &json!({"service_id": PG_SERVICE, "plan_id": ASYNC_BINDINGS}),
        )
        .await
        .expect(202);
        let delivered = rx.wait_for(1, Duration::from_secs(30)).await;
        let hook_body = delivered[0].json();
        let got = cf1.get(&binding_path("enc-a", "b2")).await;
        got.expect(200);
        assert_eq!(
            hook_body["credentials"], got.json["credentials"],
            "the webhook carries the exact credentials"
        );
        secrets.extend(secret_strings(&got.json["credentials"]));
        secrets.push(SECRET.into());

        // An operation in progress with its webhook registration (secret) stored on it.
        let rx2 = Receiver::start(vec![Reply::Status(200)]).await;
        cf1.put(
            &format!(
                "{}?accepts_incomplete=true&{}",
                instance_path("enc-slow"),
                e2e::webhook_query(&rx2.url("/hook2"), SECRET_IN_PROGRESS)
            ),
            &json!({"service_id": PG_SERVICE, "plan_id": STANDARD, "organization_guid": "o", "space_guid": "s",
                    "parameters": delay(120)}),
        )
        .await
        .expect(202);
        secrets.push(SECRET_IN_PROGRESS.into());

        let data = broker.data_dir();
        assert_no_secret_in(&database_bytes(&data), &secrets);
        let rows = binding_rows(&data);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|(_, _, b)| sealed_result(b).is_some()));
        // The broker's own key opens them to the exact credentials.
        let opened = stored_records(&data, "binding").await;
        assert!(
            opened
                .iter()
                .any(|b| b["result"]["credentials"] == first.json["credentials"])
        );

        // After a restart (the key file read again) the answers are the same.
        broker.restart().await;
        let cf1 = broker.client("cf1");
        let got = cf1.get(&binding_path("enc-i", "b1")).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], first.json["credentials"]);
        assert_no_secret_in(&database_bytes(&broker.data_dir()), &secrets);
        assert_no_secret_in(broker.log().as_bytes(), &secrets);
    })
    .await;
}

#[tokio::test]
async fn a_tampered_or_moved_ciphertext_is_an_error_not_garbage() {
    bounded(async {
        let mut broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        let small = json!({"service_id": PG_SERVICE, "plan_id": SMALL, "organization_guid": "o", "space_guid": "s"});
        cf1.put(&instance_path("t-i"), &small).await.expect(201);
        let bind = json!({"service_id": PG_SERVICE, "plan_id": SMALL});
        let b1 = cf1.put(&binding_path("t-i", "b1"), &bind).await;
        b1.expect(201);
        cf1.put(&binding_path("t-i", "b2"), &bind).await.expect(201);
        broker.kill();
        let data = broker.data_dir();
        let rows = binding_rows(&data);
        let (pk, sk1, body1) = rows[0].clone();
        let (_, sk2, body2) = rows[1].clone();
        // b2 gets b1's sealed credentials.
        let mut moved: Value = serde_json::from_slice(&body2).expect("json");
        moved["sealed"]["result"] = json!(sealed_result(&body1).expect("sealed"));
        set_body(&data, &pk, &sk2, &serde_json::to_vec(&moved).expect("json"));
        // One character of b1's ciphertext changed.
        let envelope = sealed_result(&body1).expect("sealed");
        let mut chars: Vec<char> = envelope.chars().collect();
        let at = chars.len() - 5;
        chars[at] = if chars[at] == 'x' { 'y' } else { 'x' };
        let mut tampered: Value = serde_json::from_slice(&body1).expect("json");
        tampered["sealed"]["result"] = json!(chars.into_iter().collect::<String>());
        set_body(&data, &pk, &sk1, &serde_json::to_vec(&tampered).expect("json"));

        broker.restart().await;
        let cf1 = broker.client("cf1");
        for b in ["b1", "b2"] {
            let got = cf1.get(&binding_path("t-i", b)).await;
            assert_eq!(got.status, 500, "{b}: {}", got.text);
            assert!(got.json.get("credentials").is_none(), "{}", got.text);
        }
        let password = b1.json["credentials"]["password"].as_str().expect("pw");
        assert!(!broker.log().contains(password));
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_wrong_record_key_stops_the_start_naming_the_file() {
    bounded(async {
        let mut broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        let small = json!({"service_id": PG_SERVICE, "plan_id": SMALL, "organization_guid": "o", "space_guid": "s"});
        cf1.put(&instance_path("k-i"), &small).await.expect(201);
        let bound = cf1
            .put(
                &binding_path("k-i", "b1"),
                &json!({"service_id": PG_SERVICE, "plan_id": SMALL}),
            )
            .await;
        bound.expect(201);
        broker.kill();
        let key_file = broker.data_dir().join("record-key");
        let kept = std::fs::read(&key_file).expect("the key file exists");

        std::fs::remove_file(&key_file).expect("remove");
        let (status, out) = broker.run_binary(&[], Duration::from_secs(30));
        assert!(status.is_some_and(|s| !s.success()), "{status:?}: {out}");
        assert!(out.contains(&key_file.display().to_string()), "{out}");
        assert!(!key_file.exists(), "no silent new key");

        let other = "# another key\nq83vEjY3g0rj7nrnxE0nVnF5yCh1c3b5nT3V7nJQv3Y=\n";
        std::fs::write(&key_file, other).expect("write");
        let (status, out) = broker.run_binary(&[], Duration::from_secs(30));
        assert!(status.is_some_and(|s| !s.success()), "{status:?}: {out}");
        assert!(out.contains(&key_file.display().to_string()), "{out}");
        assert!(out.contains("does not hold the key"), "{out}");

        std::fs::write(&key_file, kept).expect("restore");
        broker.restart().await;
        let got = broker.client("cf1").get(&binding_path("k-i", "b1")).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], bound.json["credentials"]);
    })
    .await;
}

#[tokio::test]
async fn reencrypt_seals_records_written_before_and_rotates_the_key() {
    bounded(async {
        let mut broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        let small = json!({"service_id": PG_SERVICE, "plan_id": SMALL, "organization_guid": "o", "space_guid": "s"});
        cf1.put(&instance_path("r-i"), &small).await.expect(201);
        let bound = cf1
            .put(
                &binding_path("r-i", "b1"),
                &json!({"service_id": PG_SERVICE, "plan_id": SMALL}),
            )
            .await;
        bound.expect(201);
        broker.kill();
        let data = broker.data_dir();
        let secrets = secret_strings(&bound.json["credentials"]);

        // The binding as a broker before encryption stored it: plain JSON.
        let plain = stored_records(&data, "binding").await.remove(0);
        let (pk, sk, _) = binding_rows(&data).remove(0);
        set_body(&data, &pk, &sk, &serde_json::to_vec(&plain).expect("json"));
        let db = rusqlite::Connection::open(data.join("broker.db")).expect("db");
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("checkpoint");
        drop(db);
        assert!(contains(&database_bytes(&data), &secrets[0]), "stored plain");
        // It still reads.
        broker.restart().await;
        let got = broker.client("cf1").get(&binding_path("r-i", "b1")).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], bound.json["credentials"]);
        broker.kill();

        let key_file = data.join("record-key");
        let old_key = std::fs::read_to_string(&key_file).expect("key");
        let (status, out) = broker.run_binary(&["reencrypt", "--rotate-key"], Duration::from_secs(60));
        assert!(status.is_some_and(|s| s.success()), "{status:?}: {out}");
        assert!(out.contains("re-encrypted"), "{out}");
        assert!(out.contains("older keys removed"), "{out}");
        let new_key = std::fs::read_to_string(&key_file).expect("key");
        assert_ne!(new_key, old_key);
        let keys: Vec<&str> = new_key
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(keys.len(), 1, "only the new key is left");
        // Not even in a freed page or the WAL: reencrypt vacuums the database.
        assert_no_secret_in(&database_bytes(&data), &secrets);
        assert!(binding_rows(&data).iter().all(|(_, _, b)| sealed_result(b).is_some()));

        broker.restart().await;
        let got = broker.client("cf1").get(&binding_path("r-i", "b1")).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], bound.json["credentials"]);
    })
    .await;
}
