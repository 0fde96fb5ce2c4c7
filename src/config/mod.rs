//! Rule files: reading, merging and parsing. The only module that touches the
//! YAML crate (see [`parse`]).

pub mod diagnostic;
pub mod duration;
pub mod raw;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use duration::parse_duration;
