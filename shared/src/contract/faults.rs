//! Test support: a `Store` wrapper that injects faults into any adapter (records that read as corrupt, an
//! index listing that fails, slow reads) and records how the sweep reads (pages, their limits, reads in
//! flight at once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ids::{BindingId, InstanceId};
use crate::ports::{
    Bindings, Cursor, InstanceWithBindings, InventoryPage, InventoryQuery, KeyPage, Record,
    RecordKey, Store, StoreError, Versioned, Write,
};
use crate::records::{Binding, Callback, Instance, Operation, OperationKey};
use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wraps a store; every fault is off until set.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Operations and callbacks (by operation key) whose read fails with `Corrupt`.
    pub corrupt: Mutex<HashSet<OperationKey>>,
    /// `unfinished_operations` fails with `Unavailable`.
    pub fail_operations_listing: AtomicBool,
    /// `pending_callbacks` fails with `Unavailable`.
    pub fail_callbacks_listing: AtomicBool,
    /// How long each `get_operation`/`get_callback` takes on top of the adapter.
    pub read_delay_ms: AtomicU64,
    /// Pages listed so far (both listings).
    pub pages: AtomicUsize,
    /// The largest `limit` a listing was asked for.
    pub max_limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The most `get_operation`/`get_callback` calls seen running at once.
    pub max_in_flight: AtomicUsize,
    /// While set, the next commit that creates a binding in `Creating` waits (after `held` is notified)
    /// until a permit is added to `release`: a bind that has read but not yet committed.
    pub hold_binding_commit: AtomicBool,
    pub held: tokio::sync::Notify,
    pub release: tokio::sync::Semaphore,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            corrupt: Mutex::new(HashSet::new()),
            fail_operations_listing: AtomicBool::new(false),
            fail_callbacks_listing: AtomicBool::new(false),
            read_delay_ms: AtomicU64::new(0),
            pages: AtomicUsize::new(0),
            max_limit: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            hold_binding_commit: AtomicBool::new(false),
            held: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        })
    }

    async fn read<T>(
        &self,
        key: &OperationKey,
        read: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = self.read_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let corrupt = self.corrupt.lock().unwrap().contains(key);
        let out = if corrupt {
            Err(StoreError::Corrupt("injected: undecodable record".into()))
        } else {
            read.await
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn listed(&self, limit: usize, fail: &AtomicBool) -> Result<(), StoreError> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        self.max_limit.fetch_max(limit, Ordering::SeqCst);
        if fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: index unreadable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn get_instance(
        &self,
        tenant: &str,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Instance>>, StoreError> {
        self.inner.get_instance(tenant, id).await
    }

    async fn get_binding(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        id: &BindingId,
    ) -> Result<Option<Versioned<Binding>>, StoreError> {
        self.inner.get_binding(tenant, instance_id, id).await
    }

    async fn get_instance_with_bindings(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        which: Bindings<'_>,
    ) -> Result<InstanceWithBindings, StoreError> {
        self.inner
            .get_instance_with_bindings(tenant, instance_id, which)
            .await
    }

    async fn get_operation(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Operation>>, StoreError> {
        self.read(key, self.inner.get_operation(key)).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let creates_binding = writes.iter().any(|w| {
            matches!(&w.record, Record::Binding(b) if b.state == crate::records::BindingState::Creating)
        });
        if creates_binding && self.hold_binding_commit.swap(false, Ordering::SeqCst) {
            self.held.notify_one();
            self.release.acquire().await.unwrap().forget();
        }
        self.inner.commit(writes).await
    }

    async fn get_records(&self, keys: &[RecordKey]) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.inner.get_records(keys).await
    }

    async fn unfinished_operations(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.listed(limit, &self.fail_operations_listing)?;
        self.inner.unfinished_operations(from, limit).await
    }

    async fn get_callback(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Callback>>, StoreError> {
        self.read(key, self.inner.get_callback(key)).await
    }

    async fn pending_callbacks(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.listed(limit, &self.fail_callbacks_listing)?;
        self.inner.pending_callbacks(from, limit).await
    }

    async fn inventory(&self, query: &InventoryQuery) -> Result<InventoryPage, StoreError> {
        self.inner.inventory(query).await
    }
}
