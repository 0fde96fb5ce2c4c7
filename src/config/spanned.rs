//! [`Spanned`]: a value with the position it was written at.
//!
//! The YAML crate's own `Spanned` does the reading; this twin (same fields,
//! same constructor) exists so the rule-file types can also describe
//! themselves as a JSON Schema ([`super::schema`]): a foreign trait cannot be
//! implemented for a foreign type, and a position is invisible in the file,
//! so the schema of `Spanned<T>` is the schema of `T`.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Location;
use std::borrow::Cow;

/// A value and where it is in its rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where the value is used (an alias's position for an aliased node).
    pub referenced: Location,
    /// Where the value is defined.
    pub defined: Location,
}

impl<T> Spanned<T> {
    /// A value at the given positions.
    pub const fn new(value: T, referenced: Location, defined: Location) -> Self {
        Spanned {
            value,
            referenced,
            defined,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Every value the rule types read passes here: a reload's parse
        // gives way to the serving threads (`crate::yielding`).
        crate::yielding::yield_point();
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Spanned {
            value: s.value,
            referenced: s.referenced,
            defined: s.defined,
        })
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
