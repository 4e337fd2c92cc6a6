//! Time and ids, as ports so tests can control them.

use crate::ids::OperationId;
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

pub trait IdGenerator: Send + Sync {
    /// A new, unique, URL-safe operation id.
    fn operation_id(&self) -> OperationId;
}

/// ULIDs: 26 characters of Crockford base32, sortable by creation time.
#[derive(Debug, Default, Clone, Copy)]
pub struct UlidGenerator;

impl IdGenerator for UlidGenerator {
    fn operation_id(&self) -> OperationId {
        OperationId::from_generated(ulid::Ulid::new().to_string())
    }
}
