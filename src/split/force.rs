//! Forcing a variant for QA (SPEC 3): header `x-pointsman-force` or query
//! `pm_force`, with comma-separated `name=variant` pairs.

use super::sticky::StickyLookup;
use http::HeaderName;
use std::borrow::Cow;

/// The request header that forces variants.
pub const FORCE_HEADER: &str = "x-pointsman-force";
/// [`FORCE_HEADER`] as a header name (a `static`: a `const` `HeaderName`
/// is built afresh at each use).
static FORCE_NAME: HeaderName = HeaderName::from_static(FORCE_HEADER);
/// The query parameter that forces variants.
pub const FORCE_QUERY: &str = "pm_force";

/// The `name=variant` pairs of one force list, trimmed; malformed pairs
/// are skipped.
pub fn parse_force(list: &str) -> impl Iterator<Item = (&str, &str)> {
    list.split(',').filter_map(|pair| {
        let (name, variant) = pair.split_once('=')?;
        let (name, variant) = (name.trim(), variant.trim());
        (!name.is_empty() && !variant.is_empty()).then_some((name, variant))
    })
}

/// The variant forced for experiment or canary route `name` on this
/// request: the header is read first, then the (decoded) query parameter.
/// The caller only asks when the experiment or canary has `allow_force`.
pub fn forced_variant<'a>(req: &'a dyn StickyLookup, name: &str) -> Option<Cow<'a, str>> {
    if let Some(list) = req.header(&FORCE_NAME)
        && let Some((_, v)) = parse_force(list).find(|(n, _)| *n == name)
    {
        return Some(Cow::Borrowed(v));
    }
    let decoded = req.query(FORCE_QUERY)?;
    parse_force(&decoded)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| Cow::Owned(v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::sticky::SimpleRequest;

    #[test]
    fn pairs_are_trimmed_and_malformed_ones_skipped() {
        let got: Vec<_> = parse_force(" a=x , b , =y, c=z,d=").collect();
        assert_eq!(got, vec![("a", "x"), ("c", "z")]);
    }

    #[test]
    fn header_wins_over_query() {
        let req = SimpleRequest::default()
            .header(FORCE_HEADER, "exp=b")
            .query("pm_force=exp%3Da%2Cshop%3Dcanary");
        assert_eq!(forced_variant(&req, "exp").as_deref(), Some("b"));
        assert_eq!(forced_variant(&req, "shop").as_deref(), Some("canary"));
        assert_eq!(forced_variant(&req, "other"), None);
    }
}
