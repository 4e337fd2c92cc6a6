//! The store and queue contract suites against the embedded adapters.
#![cfg(feature = "embedded")]

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
