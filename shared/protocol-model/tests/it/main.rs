//! The model checks: the safe protocol holds, each negative control breaks.

mod negative_controls;
mod safe;
