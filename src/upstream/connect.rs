//! Connections toward endpoints: the TCP + rustls connector, opening an
//! HTTP/1.1 or h2 connection, and telling apart why an attempt failed.

use super::SendError;
use super::def::{Protocol, UpstreamDef};
use super::h2::H2Sender;
use super::pool::Sender;
use crate::forward::body::ClientBodyError;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The connector toward upstreams: TCP, with rustls on top for `https://`
/// endpoints (plain `http://` passes through).
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long a pooled connection may sit idle. Kept below the usual backend
/// keep-alive (60 s in nginx, 75 s default) so we close first and never
/// write into a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one HTTP/1.1 upstream connection reads ahead at most (hyper's
/// default is about 400 KiB). The response body is read from the socket
/// only as the client side takes it, so this, with what the client side
/// buffers, is what a client that stops reading holds (SPEC 5.1: about
/// 165 KiB above an idle connection measured with 16 KiB, 210 KiB with
/// 32 KiB). It also caps a response head: a larger one is a 502, as with
/// HAProxy's 16 KiB buffers (NGINX allows 4 or 8 KiB by default).
const H1_READ_BUF: usize = 16 * 1024;

/// HTTP/2 flow control toward `protocol: h2` upstreams: a stream whose
/// client stops reading holds at most its window (hyper's default is
/// 2 MiB), and the connection window covers 100 such streams so that they
/// never stall the others sharing the connection.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONN_WINDOW: u32 = 8 * 1024 * 1024;

/// The connector for `def`: TCP with its connect timeout, rustls for
/// `https://` endpoints (roots from `tls.ca`, else the bundled Mozilla
/// roots; SNI and verification against `tls.server_name`, else the
/// endpoint's host; ALPN `h2` for `protocol: h2`, else `http/1.1`). A
/// verification failure is a connect error.
pub(crate) fn connector(def: &UpstreamDef) -> Connector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(def.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let ca = def.tls.as_ref().map_or(&[][..], |t| &t.ca_certs[..]);
    let config = crate::tls::client_config(ca).unwrap_or_else(|e| {
        // Not reachable with the fixed provider and versions; fail closed
        // (no roots: every https:// endpoint answers 502).
        tracing::error!(upstream = %def.name, error = %e, "cannot build TLS client config");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let name = def
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .and_then(|n| rustls_pki_types::ServerName::try_from(n).ok());
    let builder = match name {
        Some(n) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(n)),
        None => builder,
    };
    match def.protocol {
        Protocol::H2 => builder.enable_http2().wrap_connector(tcp),
        Protocol::Http1 => builder.enable_http1().wrap_connector(tcp),
    }
}

/// Opens a new HTTP/1.1 connection (TCP, TLS for `https://`) to `url`.
pub(crate) async fn open_h1(
    connector: &Connector,
    url: &str,
    endpoint: &Arc<str>,
) -> Result<Sender, SendError> {
    match dial(connector, url, endpoint).await? {
        // Clear text: the connection reads and writes the socket itself,
        // not through the TLS-or-not wrapper on every call.
        MaybeHttpsStream::Http(tcp) => handshake_h1(tcp, endpoint).await,
        tls => handshake_h1(tls, endpoint).await,
    }
}

/// The HTTP/1.1 handshake on `io`; the connection runs in a task of its own.
async fn handshake_h1<T>(io: T, endpoint: &Arc<str>) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(H1_READ_BUF)
        // A read may fill more than the buffer's nominal size: the head
        // limit is checked on its parsed length too.
        .max_header_size(H1_READ_BUF)
        .handshake(io)
        .await
        .map_err(|e| SendError::Connect {
            endpoint: endpoint.clone(),
            source: e.into(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(tx)
}

/// Opens a new h2 connection to `url`: prior knowledge on clear text, ALPN
/// `h2` on TLS (the connector of an h2 upstream offers nothing else).
pub(crate) async fn open_h2(
    connector: &Connector,
    url: &str,
    endpoint: &Arc<str>,
) -> Result<H2Sender, SendError> {
    let io = dial(connector, url, endpoint).await?;
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .handshake(io)
        .await
        .map_err(|e| SendError::Connect {
            endpoint: endpoint.clone(),
            source: e.into(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection closed");
        }
    });
    Ok(tx)
}

/// Opens the transport to `url`: TCP within the connect timeout, then TLS
/// for `https://` (a certificate that does not verify is a TLS error).
async fn dial(
    connector: &Connector,
    url: &str,
    endpoint: &Arc<str>,
) -> Result<MaybeHttpsStream<TokioIo<TcpStream>>, SendError> {
    use tower_service::Service;
    let uri = http::Uri::try_from(url).map_err(|e| SendError::Connect {
        endpoint: endpoint.clone(),
        source: e.into(),
    })?;
    let mut connector = connector.clone();
    let connected = async {
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        connector.call(uri).await
    }
    .await;
    match connected {
        Ok(io) => Ok(io),
        Err(e) if is_tls_error(&*e) => Err(SendError::Tls {
            endpoint: endpoint.clone(),
            source: e,
        }),
        Err(e) => Err(SendError::Connect {
            endpoint: endpoint.clone(),
            source: e,
        }),
    }
}

/// Why an exchange failed after the connection was made (HTTP/1.1 or h2).
pub(crate) fn classify(endpoint: Arc<str>, e: hyper::Error) -> SendError {
    body_fault(&e).unwrap_or_else(|| SendError::Reset {
        endpoint,
        source: e.into(),
    })
}

/// A failure caused by the request body rather than the upstream: over
/// `max_body_bytes`, or the client's body failed.
fn body_fault(e: &(dyn std::error::Error + 'static)) -> Option<SendError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return Some(SendError::BodyTooLarge);
        }
        source = s.source();
    }
    ClientBodyError::is_in(e).then_some(SendError::ClientBody)
}

/// Whether a connect error came from rustls. io::Error hides its inner
/// error from `source()` (and hyper-rustls wraps it twice), so look inside
/// each io::Error too.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_tls_error(inner)
        {
            return true;
        }
        source = s.source();
    }
    false
}
