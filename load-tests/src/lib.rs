//! What the benchmarks share: the report they write.

pub mod report;
