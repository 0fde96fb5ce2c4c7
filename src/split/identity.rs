//! Definition identities (SPEC 4): a SHA-256 over a canonical text of the
//! settings that decide who gets what, so state kept for a definition
//! (canary progress, experiment counts, `state_file` entries) follows the
//! definition across reloads, builds and versions, never a `Debug` dump.
//!
//! The canonical text is `pointsman-identity-v1`, the kind, then one
//! `key=value` line per field in a fixed order; values are JSON strings or
//! JSON numbers (shortest round-trip form), lists are JSON arrays.

use sha2::{Digest, Sha256};
use std::fmt;

/// A definition's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Identity([u8; 32]);

impl Identity {
    /// The identity as 64 lowercase hex digits (the `state_file` form).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", &self.hex()[..12])
    }
}

/// Builds an [`Identity`] field by field, in the caller's fixed order.
#[derive(Debug)]
pub struct Canonical {
    text: String,
}

impl Canonical {
    /// Starts the canonical text of a definition of `kind`.
    pub fn new(kind: &str) -> Self {
        let mut text = String::from("pointsman-identity-v1\n");
        text.push_str(kind);
        text.push('\n');
        Canonical { text }
    }

    fn field(mut self, key: &str, value: serde_json::Value) -> Self {
        self.text.push_str(key);
        self.text.push('=');
        self.text.push_str(&value.to_string());
        self.text.push('\n');
        self
    }

    /// A text field.
    pub fn text(self, key: &str, value: &str) -> Self {
        self.field(key, serde_json::Value::from(value))
    }

    /// An optional text field (`null` when absent).
    pub fn opt_text(self, key: &str, value: Option<&str>) -> Self {
        self.field(key, value.map_or(serde_json::Value::Null, Into::into))
    }

    /// A number field.
    pub fn number(self, key: &str, value: f64) -> Self {
        self.field(key, serde_json::Value::from(value))
    }

    /// A list of text values.
    pub fn texts<'a>(self, key: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let list: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
        self.field(key, serde_json::Value::Array(list))
    }

    /// A list of numbers.
    pub fn numbers(self, key: &str, values: impl IntoIterator<Item = f64>) -> Self {
        let list: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
        self.field(key, serde_json::Value::Array(list))
    }

    /// The identity of the text built so far.
    pub fn finish(self) -> Identity {
        Identity(Sha256::digest(self.text.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_a_fixed_function_of_the_fields() {
        let id = Canonical::new("canary")
            .text("route", "shop")
            .numbers("weights", [5.0, 100.0])
            .finish();
        // Pinned: a state_file written by one build is read by the next.
        assert_eq!(
            id.hex(),
            hex::encode(Sha256::digest(
                "pointsman-identity-v1\ncanary\nroute=\"shop\"\nweights=[5.0,100.0]\n"
            ))
        );
        let other = Canonical::new("canary")
            .text("route", "shop")
            .numbers("weights", [5.0, 50.0])
            .finish();
        assert_ne!(id, other);
    }
}
