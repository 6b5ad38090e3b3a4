//! What the benchmarks share: the report they write.

pub mod commit_ceiling;
pub mod report;
pub mod tansu_engine;
