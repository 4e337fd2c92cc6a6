//! Backends that really do the work behind a plan. Today: the simulated backend.

pub mod simulated;
