//! The fields the proxy adds to a request on its way upstream (SPEC 5):
//! X-Forwarded-For, -Proto and -Host, `Via`, the request id and the
//! variant a split chose. They are held apart from the head's map: an
//! HTTP/1.1 upstream gets them written after the head's own fields, where
//! an insert into the map would cost a hash and a probe each (and often a
//! grow of the map); an h2 upstream, a mirror and a route's header edits
//! get them inserted first.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The request id header, kept or generated, echoed on the response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The variant header sent upstream (SPEC 3).
pub const X_POINTSMAN_VARIANT: HeaderName = HeaderName::from_static("x-pointsman-variant");
/// The `Via` entry this proxy adds.
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 pointsman");

/// The names of [`AddedFields`], in the order they are written. A
/// `static`: each use of a `const` `HeaderName` builds a fresh one.
static NAMES: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::VIA,
    X_REQUEST_ID,
    X_POINTSMAN_VARIANT,
];

/// The fields added to one request, each absent until set.
#[derive(Debug, Clone, Default)]
pub struct AddedFields {
    values: [Option<HeaderValue>; 6],
}

/// No added fields (a mirror's copy, whose fields are in its map, or a
/// health check).
pub static NO_FIELDS: AddedFields = AddedFields::none();

/// Which of the fields the proxy sets the client's request carries, from
/// one scan of its names (see [`crate::forward::headers::strip_internal`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Present {
    /// `x-forwarded-for`.
    pub forwarded_for: bool,
    /// `x-forwarded-proto`.
    pub forwarded_proto: bool,
    /// `x-forwarded-host`.
    pub forwarded_host: bool,
    /// `x-request-id`.
    pub request_id: bool,
}

impl Present {
    /// Notes `name` if it is one of the fields the proxy sets.
    pub(super) fn note(&mut self, name: &str) {
        match name {
            "x-forwarded-for" => self.forwarded_for = true,
            "x-forwarded-proto" => self.forwarded_proto = true,
            "x-forwarded-host" => self.forwarded_host = true,
            "x-request-id" => self.request_id = true,
            _ => {}
        }
    }
}

const FOR: usize = 0;
const PROTO: usize = 1;
const HOST: usize = 2;
const VIA: usize = 3;
const REQUEST_ID: usize = 4;
const VARIANT: usize = 5;

impl AddedFields {
    const fn none() -> Self {
        AddedFields {
            values: [None, None, None, None, None, None],
        }
    }

    /// The fields as written, after the head's own.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        NAMES
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// How many fields are set.
    pub fn len(&self) -> usize {
        self.values.iter().flatten().count()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// Appends the fields to `headers` (where the head's own values of
    /// these names were removed, or are kept on purpose).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Moves the fields into `headers`, leaving none here.
    pub fn move_into(&mut self, headers: &mut HeaderMap) {
        self.insert_into(headers);
        *self = AddedFields::none();
    }

    pub(super) fn set_forwarded_for(&mut self, v: HeaderValue) {
        self.values[FOR] = Some(v);
    }

    pub(super) fn set_forwarded_proto(&mut self, v: HeaderValue) {
        self.values[PROTO] = Some(v);
    }

    pub(super) fn set_forwarded_host(&mut self, v: HeaderValue) {
        self.values[HOST] = Some(v);
    }

    pub(super) fn set_via(&mut self) {
        self.values[VIA] = Some(VIA_VALUE);
    }

    /// The request id sent upstream (the client's own one was removed
    /// from the head, or there was none).
    pub fn set_request_id(&mut self, v: HeaderValue) {
        self.values[REQUEST_ID] = Some(v);
    }

    /// The variant a split chose.
    pub fn set_variant(&mut self, v: HeaderValue) {
        self.values[VARIANT] = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_written_in_order_and_moved_whole() {
        let mut added = AddedFields::default();
        assert!(added.is_empty());
        added.set_variant(HeaderValue::from_static("b"));
        added.set_forwarded_for(HeaderValue::from_static("10.0.0.1"));
        added.set_via();
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-forwarded-for", "via", "x-pointsman-variant"]);
        assert_eq!(added.len(), 3);
        let mut map = HeaderMap::new();
        map.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        added.move_into(&mut map);
        assert!(added.is_empty());
        let via: Vec<_> = map.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.0 edge", "1.1 pointsman"]);
        assert_eq!(map["x-forwarded-for"], "10.0.0.1");
        assert_eq!(map["x-pointsman-variant"], "b");
    }

    #[test]
    fn present_notes_only_the_fields_the_proxy_sets() {
        let mut p = Present::default();
        for name in ["x-forwarded-proto", "x-request-id", "x-forwarded", "via"] {
            p.note(name);
        }
        assert!(p.forwarded_proto && p.request_id);
        assert!(!p.forwarded_for && !p.forwarded_host);
    }
}
