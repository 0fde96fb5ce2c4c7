//! The dashboard (SPEC 8.1): one HTML page, its script and its style sheet,
//! embedded in the binary at build time and served at `/`. The page reads
//! the admin JSON endpoints (at most every 2 s) and draws its charts as
//! inline SVG; it loads nothing from anywhere else, which its
//! `Content-Security-Policy` also enforces in the browser.

use bytes::Bytes;
use http::{Response, StatusCode, header};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Everything from this admin address and nothing else: no inline script,
/// no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Whether `name` (one path segment) is one of the page's assets.
pub fn is_asset(name: &str) -> bool {
    matches!(name, "dashboard.js" | "dashboard.css")
}

/// `GET /`: the page.
pub fn page() -> Response<Bytes> {
    serve("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard.js`, `GET /dashboard.css`.
pub fn asset(name: &str) -> Response<Bytes> {
    match name {
        "dashboard.js" => serve("text/javascript; charset=utf-8", SCRIPT),
        "dashboard.css" => serve("text/css; charset=utf-8", STYLE),
        _ => {
            let mut r = Response::new(Bytes::from_static(b"not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response<Bytes> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        // A new binary may serve a new page: always revalidate.
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap_or_else(|_| {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_its_own_assets() {
        for needle in ["http://", "https://", "//cdn", "@import"] {
            for (name, text) in [
                ("index.html", INDEX_HTML),
                ("dashboard.js", SCRIPT),
                ("dashboard.css", STYLE),
            ] {
                // The SVG namespace is a name, not a fetch.
                let text = text.replace("http://www.w3.org/2000/svg", "");
                assert!(!text.contains(needle), "{name} contains {needle}");
            }
        }
        assert!(INDEX_HTML.contains("src=\"dashboard.js\""));
        assert!(INDEX_HTML.contains("href=\"dashboard.css\""));
        let r = page();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("connect-src 'self'")
        );
        assert_eq!(asset("nope").status(), StatusCode::NOT_FOUND);
    }
}
