//! Forwarding failures and the answers they become (SPEC 6).

use super::body::{ProxyBody, full};
use super::grpc;
use super::headers::X_POINTSMAN_ERROR;
use crate::upstream::SendError;
use http::{HeaderValue, Response, StatusCode, header};

/// Why a request could not be forwarded; each becomes a response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No route matched and there is no fallback.
    #[error("no route matched")]
    NoRoute,
    /// Connect refused or timed out (after retries), or TLS not possible.
    #[error("upstream connect failed: {0}")]
    UpstreamConnect(String),
    /// No response headers within the timeout.
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    /// The upstream closed or reset before response headers.
    #[error("upstream reset: {0}")]
    UpstreamReset(String),
    /// No endpoint can take the request.
    #[error("no healthy upstream: {0}")]
    NoHealthyUpstream(String),
    /// The request body passed `max_body_bytes`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request is malformed (bad Host, path above root, ...).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's request body is malformed or was aborted: the client's
    /// fault, never counted against an upstream (SPEC 5.1).
    #[error("the request body is malformed or was cut short")]
    ClientBody,
    /// The request timeout passed while the client's body was still being
    /// awaited (408): a slow upload, never counted against an upstream.
    #[error("the request body did not arrive in time")]
    ClientTimeout,
    /// Request headers over `max_headers` / `max_header_bytes`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The Host names another server than the TLS SNI (421).
    #[error("Host does not match the TLS server name")]
    Misdirected,
    /// TRACE or CONNECT (405 with `Allow`): not a forward proxy, and TRACE
    /// would echo credentials.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The message framing cannot be trusted (a repeated or malformed
    /// Transfer-Encoding): 400, and the connection is closed.
    #[error("bad framing: {0}")]
    BadFraming(&'static str),
    /// A transfer coding other than `chunked` (501), and the connection is
    /// closed: its body cannot be read.
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

/// The methods a client may use (`Allow` on a 405).
pub const ALLOWED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");

impl ForwardError {
    /// The status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoRoute => StatusCode::NOT_FOUND,
            ForwardError::UpstreamConnect(_) | ForwardError::UpstreamReset(_) => {
                StatusCode::BAD_GATEWAY
            }
            ForwardError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::NoHealthyUpstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ForwardError::BadRequest(_)
            | ForwardError::ClientBody
            | ForwardError::BadFraming(_) => StatusCode::BAD_REQUEST,
            ForwardError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ForwardError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ForwardError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ForwardError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ForwardError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Whether the connection must close after the answer: the request's
    /// framing (and so where the next request starts) cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ForwardError::BadFraming(_)
                | ForwardError::UnsupportedCoding
                | ForwardError::ClientBody
                | ForwardError::ClientTimeout
        )
    }

    /// The `x-pointsman-error` token, for the rows of SPEC 6 that have one.
    pub fn token(&self) -> Option<&'static str> {
        Some(match self {
            ForwardError::NoRoute => "no_route",
            ForwardError::UpstreamConnect(_) => "upstream_connect",
            ForwardError::UpstreamTimeout(_) => "upstream_timeout",
            ForwardError::UpstreamReset(_) => "upstream_reset",
            ForwardError::NoHealthyUpstream(_) => "no_healthy_upstream",
            ForwardError::BodyTooLarge => "body_too_large",
            ForwardError::BadRequest(_)
            | ForwardError::ClientBody
            | ForwardError::ClientTimeout
            | ForwardError::HeadersTooLarge
            | ForwardError::Misdirected
            | ForwardError::MethodNotAllowed
            | ForwardError::BadFraming(_)
            | ForwardError::UnsupportedCoding => return None,
        })
    }

    /// Whether an upstream failed (connect, timeout, reset, none healthy):
    /// logged at warn with its reason, unlike a client's own fault.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ForwardError::UpstreamConnect(_)
                | ForwardError::UpstreamTimeout(_)
                | ForwardError::UpstreamReset(_)
                | ForwardError::NoHealthyUpstream(_)
        )
    }

    /// Whether `fallback.failover` may serve this request instead (502/503).
    pub fn fails_over(&self) -> bool {
        matches!(
            self.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
        )
    }

    /// The answer: the status, and for token rows the `x-pointsman-error`
    /// header and `{"error": TOKEN, "route": NAME|null}`.
    pub fn to_response(&self, route: Option<&str>) -> Response<ProxyBody> {
        let mut resp = Response::new(full(bytes::Bytes::new()));
        *resp.status_mut() = self.status();
        if let ForwardError::MethodNotAllowed = self {
            resp.headers_mut().insert(header::ALLOW, ALLOWED_METHODS);
        }
        if let Some(token) = self.token() {
            let body = serde_json::json!({ "error": token, "route": route }).to_string();
            resp.headers_mut()
                .insert(X_POINTSMAN_ERROR, HeaderValue::from_static(token));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            *resp.body_mut() = full(body.into());
        }
        resp
    }

    /// The answer to a gRPC call (SPEC 5): trailers-only, HTTP 200, with the
    /// `grpc-status` that stands for [`Self::status`], `grpc-message` the
    /// token (the reason phrase for rows without one) and `x-pointsman-error`
    /// as on any answer. `None` for statuses without a gRPC form.
    pub fn to_grpc_response(&self) -> Option<Response<ProxyBody>> {
        let status = self.status();
        let code = grpc::code_for(status)?;
        let token = self.token();
        let message = token.or(status.canonical_reason()).unwrap_or("");
        let mut resp = grpc::trailers_only(code, message);
        if let Some(token) = token {
            resp.headers_mut()
                .insert(X_POINTSMAN_ERROR, HeaderValue::from_static(token));
        }
        Some(resp)
    }
}

impl From<SendError> for ForwardError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Connect { .. } | SendError::Tls { .. } => {
                ForwardError::UpstreamConnect(e.to_string())
            }
            SendError::Reset { .. } => ForwardError::UpstreamReset(e.to_string()),
            SendError::Timeout { .. } => ForwardError::UpstreamTimeout(e.to_string()),
            SendError::BodyTooLarge => ForwardError::BodyTooLarge,
            SendError::ClientBody => ForwardError::ClientBody,
            SendError::ClientTimeout(_) => ForwardError::ClientTimeout,
            SendError::NoHealthy { .. } => ForwardError::NoHealthyUpstream(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a gRPC call the proxy fails gets a trailers-only 200.
    #[test]
    fn grpc_answers_are_trailers_only() {
        let cases = [
            (
                ForwardError::UpstreamConnect(String::new()),
                "14",
                "upstream_connect",
            ),
            (
                ForwardError::UpstreamReset(String::new()),
                "14",
                "upstream_reset",
            ),
            (
                ForwardError::NoHealthyUpstream(String::new()),
                "14",
                "no_healthy_upstream",
            ),
            (
                ForwardError::UpstreamTimeout(String::new()),
                "4",
                "upstream_timeout",
            ),
            (ForwardError::NoRoute, "12", "no_route"),
            (ForwardError::BodyTooLarge, "8", "body_too_large"),
        ];
        for (e, code, token) in cases {
            let resp = e.to_grpc_response().unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{e}");
            let h = resp.headers();
            assert_eq!(h["grpc-status"], code, "{e}");
            assert_eq!(h["grpc-message"], token);
            assert_eq!(h["x-pointsman-error"], token);
        }
        let resp = ForwardError::HeadersTooLarge.to_grpc_response().unwrap();
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(
            resp.headers()["grpc-message"],
            "Request Header Fields Too Large"
        );
        assert!(resp.headers().get("x-pointsman-error").is_none());
        assert!(ForwardError::BadRequest("x").to_grpc_response().is_none());
        assert!(ForwardError::Misdirected.to_grpc_response().is_none());
    }
}
