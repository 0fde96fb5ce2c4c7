//! gRPC through the proxy (SPEC 5): which requests are gRPC calls, the
//! deadline a call carries (`grpc-timeout`), and the trailers-only answer a
//! gRPC client gets when the proxy itself answers with an error of SPEC 6,
//! so that it reads UNAVAILABLE or DEADLINE_EXCEEDED rather than a protocol
//! error (as Envoy does).

use super::body::{ProxyBody, full};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use std::time::Duration;

/// The gRPC status of a call (a trailer, or a header of a trailers-only
/// answer).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The text that goes with `grpc-status`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The call's deadline, relative to when it was sent.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

const PREFIX: &[u8] = b"application/grpc";
const CONTENT_TYPE_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// Whether a message is gRPC: `content-type: application/grpc*` (also
/// `+proto`, `+json`, `-web`). One header lookup, no allocation.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= PREFIX.len() && v[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
    })
}

/// The deadline in `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), as gRPC over HTTP/2 writes it. `None` when absent
/// or malformed (a malformed deadline is ignored, as gRPC servers do).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status code (as its decimal text) that stands for a status
/// the proxy answers with (SPEC 5): UNAVAILABLE for 502 and 503,
/// DEADLINE_EXCEEDED for 504, UNIMPLEMENTED for 404, RESOURCE_EXHAUSTED
/// for 413 and 431. Other statuses have no gRPC form here; gRPC clients
/// map them themselves.
pub fn code_for(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        502 | 503 => "14",
        504 => "4",
        404 => "12",
        413 | 431 => "8",
        _ => return None,
    })
}

/// A trailers-only answer (HTTP 200, the status in the head, no body):
/// `grpc-status` `code` and `grpc-message` `message` (printable ASCII
/// without `%`, so it needs no percent-encoding).
pub fn trailers_only(code: &'static str, message: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, CONTENT_TYPE_GRPC);
    h.insert(GRPC_STATUS, HeaderValue::from_static(code));
    h.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc-web",
        ] {
            assert!(is_grpc(&with(header::CONTENT_TYPE, ct)), "{ct}");
        }
        for ct in ["application/json", "application/grp", "text/grpc"] {
            assert!(!is_grpc(&with(header::CONTENT_TYPE, ct)), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_in_every_unit() {
        let t = |v| timeout(&with(GRPC_TIMEOUT, v));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "100", "100x", "123456789S", "-1S", "1.5S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_map_to_grpc_codes() {
        let c = |s: u16| code_for(StatusCode::from_u16(s).unwrap());
        assert_eq!(
            [c(502), c(503), c(504), c(404), c(413), c(431)],
            [
                Some("14"),
                Some("14"),
                Some("4"),
                Some("12"),
                Some("8"),
                Some("8")
            ]
        );
        assert_eq!(c(400), None);
        assert_eq!(c(421), None);
    }

    #[test]
    fn trailers_only_is_a_200_with_the_status_in_the_head() {
        let resp = trailers_only("14", "upstream_connect");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "upstream_connect");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(http_body::Body::is_end_stream(resp.body()));
    }
}
