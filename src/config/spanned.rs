//! [`Spanned`]: a value with the position it was written at.
//!
//! The YAML crate's own `Spanned` does the reading (the fast reader,
//! `fast.rs`, hands positions over its own way, below); this twin exists
//! so the rule-file types can also describe themselves as a JSON Schema
//! ([`super::schema`]): a foreign trait cannot be implemented for a foreign
//! type, and a position is invisible in the file, so the schema of
//! `Spanned<T>` is the schema of `T`. It keeps only what a diagnostic
//! shows, a line and a column ([`Location`]).

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// A place in a rule file: the 1-based line and column (0 and 0 when
/// unknown).
///
/// The YAML crate's `Location` also keeps a character span and a source
/// id, 28 bytes against these 8, and its `Spanned` keeps two. A rule file
/// holds a position for every value in it, all alive while the file is
/// compiled: at 10,000 routes the smaller positions took the heap's peak
/// during `check` from 22.7 to 15.4 MB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    line: u32,
    column: u32,
}

impl Location {
    /// No known place (line and column 0).
    pub const UNKNOWN: Location = Location { line: 0, column: 0 };

    /// The 1-based line.
    pub fn line(&self) -> u64 {
        u64::from(self.line)
    }

    /// The 1-based column.
    pub fn column(&self) -> u64 {
        u64::from(self.column)
    }
}

impl Location {
    /// A 1-based line and column (saturated at `u32::MAX`).
    pub(super) fn at(line: u64, column: u64) -> Location {
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Location {
            line: narrow(line),
            column: narrow(column),
        }
    }
}

impl From<serde_saphyr::Location> for Location {
    fn from(at: serde_saphyr::Location) -> Location {
        Location::at(at.line(), at.column())
    }
}

/// A value and where it is in its rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where the value is used (an alias's position for an aliased node).
    pub referenced: Location,
}

impl<T> Spanned<T> {
    /// A value at the given position.
    pub const fn new(value: T, referenced: Location) -> Self {
        Spanned { value, referenced }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Every value the rule types read passes here: a reload's parse
        // gives way to the serving threads (`crate::yielding`).
        crate::yielding::yield_point();
        if FAST_READ.get() {
            return d.deserialize_newtype_struct(FAST_SPANNED, FastSpanned(PhantomData));
        }
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Spanned::new(s.value, s.referenced.into()))
    }
}

// How `super::fast` hands positions over: while it reads (`FAST_READ`), a
// `Spanned` asks for a newtype struct named `FAST_SPANNED`, and the fast
// reader puts the next node's position in `FAST_POSITION` before it
// visits. serde-saphyr's own protocol (a map of location fields) is its
// private business; this one is ours.
thread_local! {
    static FAST_READ: Cell<bool> = const { Cell::new(false) };
    static FAST_POSITION: Cell<Location> = const { Cell::new(Location::UNKNOWN) };
}

/// The newtype-struct name a [`Spanned`] asks the fast reader for.
pub(super) const FAST_SPANNED: &str = "__pointsman_spanned";

/// Marks the calling thread as inside the fast reader until the returned
/// guard drops.
pub(super) fn fast_read() -> impl Drop {
    struct Reading;
    impl Drop for Reading {
        fn drop(&mut self) {
            FAST_READ.set(false);
        }
    }
    FAST_READ.set(true);
    Reading
}

/// Sets the position the next [`Spanned`] the fast reader visits takes.
pub(super) fn set_fast_position(at: Location) {
    FAST_POSITION.set(at);
}

struct FastSpanned<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for FastSpanned<T> {
    type Value = Spanned<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let at = FAST_POSITION.get();
        Ok(Spanned::new(T::deserialize(d)?, at))
    }
}

/// Transparent, as `Box<T>` is: a position is not written in the file.
impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of a rule file carries its position while the file is
    /// compiled: a position costs it 8 bytes (the YAML crate's two
    /// `Location`s cost 56).
    #[test]
    fn a_position_adds_eight_bytes_to_a_value() {
        assert_eq!(size_of::<Location>(), 8);
        assert_eq!(size_of::<Spanned<String>>(), size_of::<String>() + 8);
    }

    /// The line and column are the YAML crate's, for a value read from text.
    #[test]
    fn a_value_keeps_the_line_and_column_it_was_read_at() {
        let v: Spanned<Vec<Spanned<u32>>> = serde_saphyr::from_str("\n  - 1\n  - 22\n").unwrap();
        let at: Vec<(u64, u64)> = v
            .value
            .iter()
            .map(|s| (s.referenced.line(), s.referenced.column()))
            .collect();
        assert_eq!(at, [(2, 5), (3, 5)]);
    }
}
