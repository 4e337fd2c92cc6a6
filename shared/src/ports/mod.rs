//! Ports: what the domain needs from the outside world. Adapters (embedded, AWS) implement them.

pub mod backend;
pub mod clock;
pub mod queue;
pub mod sealer;
pub mod store;
pub mod webhook;

pub use backend::{Backend, BackendError, BackendJob, BackendOutcome, BackendResult};
pub use clock::{
    Clock, IdGenerator, ManualClock, SystemClock, UlidGenerator, iso8601_millis, rfc3339_ms,
};
pub use queue::{Delivery, Queue, QueueError};
pub use sealer::{Purpose, SealError, Sealer};
pub use store::{
    Bindings, Cursor, Expected, InstanceWithBindings, InventoryCursor, InventoryKind,
    InventoryPage, InventoryQuery, KeyPage, MAX_PAGE, Record, RecordKey, Store, StoreError,
    Versioned, Write,
};
pub use webhook::{AttemptOutcome, AttemptReport, WebhookRequest, WebhookSender};
