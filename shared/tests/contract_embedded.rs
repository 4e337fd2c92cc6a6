//! The store and queue contract suites against the embedded adapters.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use osb_broker::adapters::MemoryQueue;
use osb_broker::adapters::sqlite::{SqliteStore, Synchronous};
use osb_broker::ports::{Queue, Store};
use std::sync::Arc;

async fn sqlite() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("tempdir");
    // The directory must outlive the store: leak it for the test's lifetime.
    let path = dir.keep().join("contract.db");
    // Sealing with a local record key, as in local mode.
    let keyring = Arc::new(osb_broker::adapters::local_key::LocalKeyring::random());
    Arc::new(SqliteStore::open(path, Synchronous::Normal, keyring).expect("open sqlite"))
        as Arc<dyn Store>
}

async fn memory_queue() -> Arc<dyn Queue> {
    Arc::new(MemoryQueue::new())
}

mod sqlite_store {
    osb_broker::store_contract!(super::sqlite());
}

mod memory_queue {
    osb_broker::queue_contract!(super::memory_queue());
}

/// A database written before the inventory index (no `inv_*` columns) gets the index on open, with
/// entries for the rows it already holds.
#[tokio::test]
async fn a_database_from_before_the_inventory_index_is_indexed_on_open() {
    use osb_broker::contract::store::{binding, instance};
    use osb_broker::ports::{InventoryKind, InventoryQuery, Record};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, kind TEXT NOT NULL, \
             version INTEGER NOT NULL, unfinished INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, \
             PRIMARY KEY (pk, sk)) WITHOUT ROWID;",
        )
        .unwrap();
        let mut old = instance("cf1", "i1");
        old.updated_at = 7_000;
        let mut b = binding("cf1", "i1", "b1");
        b.updated_at = 8_000;
        for (sk, kind, body) in [
            ("INSTANCE", "instance", serde_json::to_vec(&old).unwrap()),
            ("B#b1", "binding", serde_json::to_vec(&b).unwrap()),
        ] {
            c.execute(
                "INSERT INTO items (pk, sk, kind, version, body) VALUES ('T#cf1#I#i1', ?1, ?2, 3, ?3)",
                rusqlite::params![sk, kind, body],
            )
            .unwrap();
        }
    }
    let keyring = Arc::new(osb_broker::adapters::local_key::LocalKeyring::random());
    let store = SqliteStore::open(&path, Synchronous::Normal, keyring).expect("open sqlite");
    for (kind, want) in [
        (InventoryKind::Instances, 7_000),
        (InventoryKind::Bindings, 8_000),
    ] {
        let page = store
            .inventory(&InventoryQuery {
                tenant: "cf1".into(),
                kind,
                updated_since: Some(6_000),
                updated_before: None,
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1, "{kind:?}");
        assert_eq!(page.records[0].version, 3);
        let updated = match &page.records[0].item {
            Record::Instance(i) => i.updated_at,
            Record::Binding(b) => b.updated_at,
            other => panic!("{other:?}"),
        };
        assert_eq!(updated, want);
    }
}
