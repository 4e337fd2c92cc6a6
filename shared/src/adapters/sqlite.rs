//! The embedded store: SQLite in WAL mode, one table of versioned JSON items keyed like the DynamoDB
//! table (`keys.rs`). Writes go to one writer thread that group-commits: every waiting batch is applied
//! in its own savepoint (version-checked, all-or-nothing per batch) inside one `BEGIN IMMEDIATE`
//! transaction. Point reads run on the calling thread, on a read connection of that thread's own (a WAL
//! reader never waits for the writer, and a read from the page cache takes microseconds, less than a hop to
//! another thread); scans of many items run on Tokio's blocking threads.
//!
//! Secret fields are sealed (`sealing`) before a batch goes to the writer thread and opened after a read,
//! with the store's `Sealer` (the data directory's key file in local mode). A `meta` table remembers the
//! id of the key the items were written with, so a missing or wrong key file is caught at start-up.
//!
//! Durability: WAL with `synchronous=NORMAL` survives a crash or kill of the broker process; the last
//! transactions before a power loss may be lost. Set `synchronous = "full"` for power-loss durability.

pub use crate::config::Synchronous;
use crate::ids::{BindingId, InstanceId};
use crate::keys;
use crate::ports::sealer::Sealer;
use crate::ports::{
    Bindings, Cursor, Expected, InstanceWithBindings, InventoryCursor, InventoryPage,
    InventoryQuery, KeyPage, MAX_PAGE, Record, RecordKey, Store, StoreError, Versioned, Write,
};
use crate::records::{Binding, Callback, Instance, Operation, OperationKey};
use crate::sealing;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    unfinished INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    inv_part TEXT,
    inv_sort TEXT,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
DROP INDEX IF EXISTS items_unfinished;
CREATE INDEX IF NOT EXISTS items_unfinished_keys ON items (kind, pk, sk) WHERE unfinished = 1;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// The `meta` entry holding the id of the key that seals the items (`adapters::local_key`).
pub const META_RECORD_KEY_ID: &str = "record_key_id";

struct Inner {
    path: PathBuf,
    sync: Synchronous,
    /// Hands write batches to the writer thread (group commit).
    writer: std::sync::mpsc::Sender<WriteJob>,
    sealer: Arc<dyn Sealer>,
}

thread_local! {
    /// This thread's read connections, one per open store (told apart by their `Inner`).
    static READERS: std::cell::RefCell<Vec<(Weak<Inner>, Connection)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's read connection to the store of `inner`, opening it on first use.
fn with_reader<T>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    READERS.with(|cell| {
        let mut readers = cell.borrow_mut();
        // Connections of stores that were dropped are closed here.
        readers.retain(|(store, _)| store.strong_count() > 0);
        let at = match readers
            .iter()
            .position(|(store, _)| std::ptr::eq(store.as_ptr(), Arc::as_ptr(inner)))
        {
            Some(at) => at,
            None => {
                readers.push((Arc::downgrade(inner), open(&inner.path, inner.sync)?));
                readers.len() - 1
            }
        };
        f(&readers[at].1)
    })
}

/// A write ready for SQLite: its key, expectation, index flag and stored (sealed) body.
struct EncodedWrite {
    pk: String,
    sk: String,
    kind: &'static str,
    expected: Expected,
    unfinished: bool,
    /// The inventory index entry (`keys::inventory_key`).
    inventory: Option<(String, String)>,
    body: Vec<u8>,
}

impl EncodedWrite {
    async fn of(write: &Write, sealer: &dyn Sealer) -> Result<Self, StoreError> {
        let (pk, sk, kind) = keys::record_key(&write.record);
        Ok(EncodedWrite {
            pk,
            sk,
            kind,
            expected: write.expected,
            unfinished: keys::index_shard(&write.record).is_some(),
            inventory: keys::inventory_key(&write.record),
            body: sealing::encode(&write.record, sealer).await?,
        })
    }
}

/// One `commit` call waiting for the writer thread.
struct WriteJob {
    writes: Vec<EncodedWrite>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Most items a read fetches on the calling thread; larger reads go to the blocking threads.
const POINT_READ_ITEMS: usize = 8;

/// Most jobs the writer thread puts in one transaction.
const MAX_GROUP: usize = 256;

/// The writer thread: owns the one write connection; takes every job waiting, applies each inside its own
/// savepoint (a job whose expectation fails rolls back alone, with `Conflict`), commits them all in one
/// transaction (one WAL append; one fsync with `synchronous = full`), then answers each job.
fn writer_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcomes = run_group(&mut conn, &group);
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.done.send(outcome);
        }
    }
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The checkpoint thread: a passive checkpoint (never waits for readers or the writer, which keep going
/// meanwhile) every `CHECKPOINT_EVERY` while the store is open. A checkpoint that copied every frame lets
/// the next commit start the WAL over, so it stays small.
fn checkpoint_loop(conn: Connection, alive: Weak<Inner>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
        }
    }
}

fn run_group(conn: &mut Connection, group: &[WriteJob]) -> Vec<Result<(), StoreError>> {
    match try_group(conn, group) {
        Ok(outcomes) => outcomes,
        // The transaction itself failed: nothing of the group is committed.
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            group.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

/// One transaction for the group, a savepoint per job: a job's own failure (a version conflict, …)
/// rolls back that job alone and is its outcome; a failure of the transaction statements is the error.
fn try_group(
    conn: &mut Connection,
    group: &[WriteJob],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    // Prepared once (cached), not parsed again for every job.
    let exec = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(unavailable)
    };
    exec("BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        exec("SAVEPOINT job")?;
        let outcome = job.writes.iter().try_for_each(|w| apply(conn, w));
        if outcome.is_err() {
            exec("ROLLBACK TO job")?;
        }
        exec("RELEASE job")?;
        outcomes.push(outcome);
    }
    exec("COMMIT")?;
    Ok(outcomes)
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(unavailable)?;
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;"
    ))
    .map_err(unavailable)?;
    Ok(conn)
}

impl SqliteStore {
    /// A stored body decoded, its sealed fields opened.
    async fn decode<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        body: &[u8],
        version: i64,
    ) -> Result<Versioned<T>, StoreError> {
        Ok(Versioned {
            item: sealing::decode(pk, sk, body, self.inner.sealer.as_ref()).await?,
            version: version as u64,
        })
    }

    /// The value of a `meta` entry of the database at `path` (created when needed), read before the
    /// store is opened: e.g. the id of the key its items were sealed with.
    pub fn read_meta(path: impl AsRef<Path>, name: &str) -> Result<Option<String>, StoreError> {
        let conn = open(path.as_ref(), Synchronous::Normal)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(unavailable)
    }

    /// Rewrites the database file without free pages and empties the WAL, so that bytes of replaced
    /// items (e.g. plain secrets before `reencrypt`) are gone from the files. Maintenance only.
    pub fn vacuum(&self) -> Result<(), StoreError> {
        let conn = open(&self.inner.path, self.inner.sync)?;
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(unavailable)
    }

    /// Sets a `meta` entry.
    pub fn write_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let conn = open(&self.inner.path, self.inner.sync)?;
        conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map(drop)
        .map_err(unavailable)
    }

    /// Opens (creating when needed) the database file at `path`; secret fields are sealed with `sealer`.
    pub fn open(
        path: impl AsRef<Path>,
        sync: Synchronous,
        sealer: Arc<dyn Sealer>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer = open(&path, sync)?;
        writer.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate_inventory(&writer)?;
        // Checkpoints (copying the WAL into the database file, with an fsync of it) run on a thread of
        // their own: inside a commit they would stall every writer waiting behind it for the fsync.
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(unavailable)?;
        let checkpointer = open(&path, sync)?;
        let (jobs, inbox) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, inbox))
            .map_err(unavailable)?;
        let inner = Arc::new(Inner {
            path,
            sync,
            writer: jobs,
            sealer,
        });
        let alive = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, alive))
            .map_err(unavailable)?;
        Ok(SqliteStore { inner })
    }

    /// A point read (a few items by key): on this thread.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        with_reader(&self.inner, f)
    }

    /// A read of many items: on Tokio's blocking threads, off the async runtime's.
    async fn scan<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || with_reader(&inner, f))
            .await
            .map_err(unavailable)?
    }

    /// One page of the keys of the items of one kind flagged unfinished (operations in progress,
    /// callbacks not final), in `(pk, sk)` order after the cursor's key: keyset pagination on the
    /// partial index `items_unfinished_keys`.
    async fn unfinished_keys(
        &self,
        kind: &'static str,
        parse: fn(&str, &str) -> Option<OperationKey>,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        // Every stored `pk` is non-empty, so `('', '')` sorts before all keys.
        let after = from.and_then(|c| c.after.clone()).unwrap_or(RecordKey {
            pk: String::new(),
            sk: String::new(),
        });
        self.scan(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT pk, sk FROM items WHERE unfinished = 1 AND kind = ?1 AND (pk, sk) > (?2, ?3) \
                     ORDER BY pk, sk LIMIT ?4",
                )
                .map_err(unavailable)?;
            // One row more than the page: whether another page follows, without an empty last page.
            let rows = stmt
                .query_map(params![kind, after.pk, after.sk, limit as i64 + 1], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?;
            let mut page = KeyPage::default();
            let mut last = None;
            for (n, row) in rows.enumerate() {
                let (pk, sk) = row.map_err(unavailable)?;
                if n == limit {
                    page.next = last.map(|after| Cursor {
                        shard: 0,
                        after: Some(after),
                    });
                    break;
                }
                page.keys.extend(parse(&pk, &sk));
                last = Some(RecordKey { pk, sk });
            }
            Ok(page)
        })
        .await
    }

    async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        pk: String,
        sk: String,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let row = self.read(|c| {
            c.prepare_cached("SELECT body, version FROM items WHERE pk = ?1 AND sk = ?2")
                .map_err(unavailable)?
                .query_row(params![pk, sk], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(unavailable)
        })?;
        match row {
            Some((body, version)) => Ok(Some(self.decode(&pk, &sk, &body, version).await?)),
            None => Ok(None),
        }
    }
}

/// Databases written before the inventory index get its columns, their rows' entries (tenant from the
/// key, update time from the body: neither is a sealed field) and the index.
fn migrate_inventory(c: &Connection) -> Result<(), StoreError> {
    let has: bool = c
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('items') WHERE name = 'inv_part'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(unavailable)?
        > 0;
    if !has {
        c.execute_batch(
            "ALTER TABLE items ADD COLUMN inv_part TEXT; ALTER TABLE items ADD COLUMN inv_sort TEXT;",
        )
        .map_err(unavailable)?;
        #[derive(serde::Deserialize)]
        struct Updated {
            updated_at: i64,
        }
        let rows: Vec<(String, String, String, Vec<u8>)> = c
            .prepare("SELECT pk, sk, kind, body FROM items")
            .map_err(unavailable)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        let inventoried = [
            keys::KIND_INSTANCE,
            keys::KIND_BINDING,
            keys::KIND_OPERATION,
            keys::KIND_CALLBACK,
            keys::KIND_LEASE,
        ];
        let tx = c.unchecked_transaction().map_err(unavailable)?;
        for (pk, sk, kind, body) in rows {
            let tenant = pk
                .strip_prefix("T#")
                .and_then(|rest| rest.split_once("#I#"))
                .map(|(t, _)| t);
            let (Some(tenant), true) = (tenant, inventoried.contains(&kind.as_str())) else {
                continue;
            };
            let updated = serde_json::from_slice::<Updated>(&body)
                .map(|u| u.updated_at)
                .unwrap_or(0);
            tx.execute(
                "UPDATE items SET inv_part = ?3, inv_sort = ?4 WHERE pk = ?1 AND sk = ?2",
                params![
                    pk,
                    sk,
                    keys::inventory_partition(tenant, &kind),
                    format!("{}#{pk}#{sk}", keys::inventory_time(updated))
                ],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS items_inventory ON items (inv_part, inv_sort) WHERE inv_part IS NOT NULL;",
    )
    .map_err(unavailable)
}

fn apply(tx: &Connection, write: &EncodedWrite) -> Result<(), StoreError> {
    let EncodedWrite {
        pk,
        sk,
        kind,
        unfinished,
        inventory,
        body,
        ..
    } = write;
    let (inv_part, inv_sort) = match inventory {
        Some((p, s)) => (Some(p.as_str()), Some(s.as_str())),
        None => (None, None),
    };
    // One statement per write, the expectation in its own condition: a conflict changes no row.
    let changed = match write.expected {
        Expected::Absent => tx
            .prepare_cached(
                "INSERT INTO items (pk, sk, kind, version, unfinished, body, inv_part, inv_sort) \
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7) ON CONFLICT (pk, sk) DO NOTHING",
            )
            .map_err(unavailable)?
            .execute(params![pk, sk, kind, *unfinished as i64, body, inv_part, inv_sort]),
        Expected::Version(v) => tx
            .prepare_cached(
                "UPDATE items SET kind = ?3, version = ?4 + 1, unfinished = ?5, body = ?6, inv_part = ?7, \
                 inv_sort = ?8 WHERE pk = ?1 AND sk = ?2 AND version = ?4",
            )
            .map_err(unavailable)?
            .execute(params![
                pk,
                sk,
                kind,
                v as i64,
                *unfinished as i64,
                body,
                inv_part,
                inv_sort
            ]),
    }
    .map_err(unavailable)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_instance(
        &self,
        tenant: &str,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Instance>>, StoreError> {
        self.get(keys::instance_pk(tenant, id), keys::SK_INSTANCE.into())
            .await
    }

    async fn get_binding(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        id: &BindingId,
    ) -> Result<Option<Versioned<Binding>>, StoreError> {
        self.get(keys::instance_pk(tenant, instance_id), keys::binding_sk(id))
            .await
    }

    async fn get_instance_with_bindings(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        which: Bindings<'_>,
    ) -> Result<InstanceWithBindings, StoreError> {
        let pk = keys::instance_pk(tenant, instance_id);
        let ids: Option<Vec<String>> = match which {
            Bindings::All => None,
            Bindings::Ids(ids) => Some(ids.iter().map(keys::binding_sk).collect()),
        };
        let pk_read = pk.clone();
        let read = move |c: &Connection| {
            let pk = pk_read;
            let mut rows: Vec<(String, Vec<u8>, i64)> = Vec::new();
            let mut push = |sk: &str, body: Vec<u8>, version: i64| -> Result<(), StoreError> {
                rows.push((sk.to_owned(), body, version));
                Ok(())
            };
            match ids {
                // 'B#…' < 'INSTANCE': the instance and all its bindings are one key range.
                None => {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT sk, body, version FROM items WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3 ORDER BY sk",
                        )
                        .map_err(unavailable)?;
                    let rows = stmt
                        .query_map(
                            params![pk, keys::SK_BINDING_PREFIX, keys::SK_INSTANCE],
                            |r| {
                                Ok((
                                    r.get::<_, String>(0)?,
                                    r.get::<_, Vec<u8>>(1)?,
                                    r.get::<_, i64>(2)?,
                                ))
                            },
                        )
                        .map_err(unavailable)?;
                    for row in rows {
                        let (sk, body, version) = row.map_err(unavailable)?;
                        push(&sk, body, version)?;
                    }
                }
                Some(sks) => {
                    let mut stmt = c
                        .prepare_cached("SELECT body, version FROM items WHERE pk = ?1 AND sk = ?2")
                        .map_err(unavailable)?;
                    for sk in std::iter::once(keys::SK_INSTANCE.to_owned()).chain(sks) {
                        let row = stmt
                            .query_row(params![pk, sk], |r| {
                                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                            })
                            .optional()
                            .map_err(unavailable)?;
                        if let Some((body, version)) = row {
                            push(&sk, body, version)?;
                        }
                    }
                }
            }
            Ok(rows)
        };
        let rows = match which {
            // Every binding of the instance, however many: off the async runtime's threads.
            Bindings::All => self.scan(read).await?,
            Bindings::Ids(_) => self.read(read)?,
        };
        let mut out = InstanceWithBindings::default();
        for (sk, body, version) in rows {
            if sk == keys::SK_INSTANCE {
                out.instance = Some(self.decode(&pk, &sk, &body, version).await?);
            } else {
                out.bindings
                    .push(self.decode(&pk, &sk, &body, version).await?);
            }
        }
        Ok(out)
    }

    async fn get_operation(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Operation>>, StoreError> {
        let (pk, sk) = keys::operation_key(key);
        self.get(pk, sk).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(writes.len());
        for w in &writes {
            encoded.push(EncodedWrite::of(w, self.inner.sealer.as_ref()).await?);
        }
        let writes = encoded;
        let (done, result) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(WriteJob { writes, done })
            .map_err(|_| StoreError::Unavailable("the SQLite writer thread has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer thread has stopped".into()))?
    }

    async fn get_records(
        &self,
        wanted: &[RecordKey],
    ) -> Result<Vec<Versioned<Record>>, StoreError> {
        let wanted = wanted.to_vec();
        let many = wanted.len() > POINT_READ_ITEMS;
        let read = move |c: &Connection| {
            let mut stmt = c
                .prepare_cached("SELECT kind, body, version FROM items WHERE pk = ?1 AND sk = ?2")
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for k in wanted {
                let row = stmt
                    .query_row(params![k.pk, k.sk], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()
                    .map_err(unavailable)?;
                if let Some((kind, body, version)) = row {
                    out.push((k, kind, body, version));
                }
            }
            Ok(out)
        };
        let rows = if many {
            self.scan(read).await?
        } else {
            self.read(read)?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (k, kind, body, version) in rows {
            out.push(Versioned {
                item: sealing::decode_record(
                    &kind,
                    &k.pk,
                    &k.sk,
                    &body,
                    self.inner.sealer.as_ref(),
                )
                .await?,
                version: version as u64,
            });
        }
        Ok(out)
    }

    async fn inventory(&self, query: &InventoryQuery) -> Result<InventoryPage, StoreError> {
        let crate::ports::store::InventoryRange { part, lo, hi, .. } = query.range();
        let limit = query.limit.clamp(1, MAX_PAGE);
        let rows = self
            .scan(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT pk, sk, kind, body, version, inv_sort FROM items \
                         WHERE inv_part = ?1 AND inv_sort >= ?2 AND inv_sort < ?3 \
                         ORDER BY inv_sort DESC LIMIT ?4",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![part, lo, hi, limit as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    })
                    .map_err(unavailable)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?;
                Ok(rows)
            })
            .await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|r| InventoryCursor(r.5.clone())))
            .flatten();
        let mut records = Vec::with_capacity(rows.len());
        for (pk, sk, kind, body, version, _) in rows {
            records.push(Versioned {
                item: sealing::decode_record(&kind, &pk, &sk, &body, self.inner.sealer.as_ref())
                    .await?,
                version: version as u64,
            });
        }
        Ok(InventoryPage { records, next })
    }

    async fn unfinished_operations(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.unfinished_keys(keys::KIND_OPERATION, keys::parse_operation_key, from, limit)
            .await
    }

    async fn get_callback(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Callback>>, StoreError> {
        let (pk, sk) = keys::callback_key(key);
        self.get(pk, sk).await
    }

    async fn pending_callbacks(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.unfinished_keys(keys::KIND_CALLBACK, keys::parse_callback_key, from, limit)
            .await
    }
}

#[async_trait]
impl sealing::RecordScan for SqliteStore {
    async fn scan_keys(
        &self,
        kinds: &[&'static str],
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<RecordKey>), StoreError> {
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        let after = after.cloned().unwrap_or(RecordKey {
            pk: String::new(),
            sk: String::new(),
        });
        let limit = limit.clamp(1, MAX_PAGE);
        self.scan(move |c| {
            let marks = vec!["?"; kinds.len()].join(", ");
            let sql = format!(
                "SELECT pk, sk FROM items WHERE kind IN ({marks}) AND (pk, sk) > (?, ?) ORDER BY pk, sk LIMIT ?"
            );
            let mut stmt = c.prepare(&sql).map_err(unavailable)?;
            let mut values: Vec<rusqlite::types::Value> =
                kinds.into_iter().map(rusqlite::types::Value::Text).collect();
            values.push(rusqlite::types::Value::Text(after.pk));
            values.push(rusqlite::types::Value::Text(after.sk));
            values.push(rusqlite::types::Value::Integer(limit as i64));
            let keys = stmt
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok(RecordKey {
                        pk: r.get(0)?,
                        sk: r.get(1)?,
                    })
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let next = (keys.len() == limit).then(|| keys.last().cloned()).flatten();
            Ok((keys, next))
        })
        .await
    }
}
