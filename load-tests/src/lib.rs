//! What the benchmarks share: the report they write.

pub mod commit_ceiling;
#[cfg(feature = "hexeract")]
pub mod hexeract_relay;
pub mod report;
pub mod tansu_engine;
