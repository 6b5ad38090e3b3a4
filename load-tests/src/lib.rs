//! What the benchmarks share: the report they write.

pub mod commit_ceiling;
pub mod hexeract_relay;
pub mod report;
