//! Connections toward endpoints: the TCP + rustls connector, opening an
//! HTTP/1.1 or h2 connection, and telling apart why an attempt failed.

use super::SendError;
use super::def::UpstreamDef;
use super::h1::{Conn, H1Error, Io};
use super::h2::H2Sender;
use crate::forward::body::{BoxError, ClientBodyError};
use crate::gather::Gathered;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service as _;

/// The connector toward upstreams: TCP, with rustls on top for `https://`
/// endpoints (plain `http://` passes through).
pub(crate) type Connector = hyper_rustls::HttpsConnector<GatheringTcp>;

/// hyper-util's TCP connector, its streams wrapped in [`Gathered`] so that
/// h2's frames and rustls's records go out as one `send` when small.
#[derive(Clone, Debug)]
pub(crate) struct GatheringTcp(HttpConnector);

impl tower_service::Service<http::Uri> for GatheringTcp {
    type Response = TokioIo<Gathered<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?;
            Ok(TokioIo::new(Gathered(tcp.into_inner())))
        })
    }
}

impl Connection for Gathered<TcpStream> {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

/// How long a pooled connection may sit idle. Kept below the usual backend
/// keep-alive (60 s in nginx, 75 s default) so we close first and never
/// write into a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 flow control toward `protocol: h2` upstreams: a stream whose
/// client stops reading holds at most its window (hyper's default is
/// 2 MiB), and the connection window covers 100 such streams so that they
/// never stall the others sharing the connection.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONN_WINDOW: u32 = 8 * 1024 * 1024;

/// The TLS client settings of `def`: roots from `tls.ca`, else the
/// bundled Mozilla roots.
fn tls_config(def: &UpstreamDef) -> rustls::ClientConfig {
    let ca = def.tls.as_ref().map_or(&[][..], |t| &t.ca_certs[..]);
    crate::tls::client_config(ca).unwrap_or_else(|e| {
        // Not reachable with the fixed provider and versions; fail closed
        // (no roots: every https:// endpoint answers 502).
        tracing::error!(upstream = %def.name, error = %e, "cannot build TLS client config");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    })
}

/// The connector toward `protocol: h2` upstreams for `def`: TCP with its connect timeout, rustls for
/// `https://` endpoints (roots from `tls.ca`, else the bundled Mozilla
/// roots; SNI and verification against `tls.server_name`, else the
/// endpoint's host; ALPN `h2` for `protocol: h2`, else `http/1.1`). A
/// verification failure is a connect error.
pub(crate) fn connector(def: &UpstreamDef) -> Connector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(def.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(def))
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
    builder.enable_http2().wrap_connector(GatheringTcp(tcp))
}

/// How new HTTP/1.1 connections of one upstream are opened: TCP within
/// the connect timeout, then rustls (ALPN `http/1.1`) for `https://`
/// endpoints, with the same roots and name rules as [`connector`].
pub(crate) struct H1Dialer {
    connect_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for H1Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Dialer")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl H1Dialer {
    pub(crate) fn new(def: &UpstreamDef) -> Self {
        let mut config = tls_config(def);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        H1Dialer {
            connect_timeout: def.connect_timeout,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Opens a connection to `authority` (`host:port`); `sni`, the name
    /// a TLS endpoint is verified against, for `https://`.
    pub(crate) async fn open(
        &self,
        authority: &str,
        sni: Option<&ServerName<'static>>,
        endpoint: &Arc<str>,
    ) -> Result<Conn, SendError> {
        let connect_error = |source: BoxError| SendError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let tcp =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority)).await {
                Err(_) => {
                    let timed_out =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                    return Err(connect_error(timed_out.into()));
                }
                Ok(Err(e)) => return Err(connect_error(e.into())),
                Ok(Ok(tcp)) => tcp,
            };
        let _ = tcp.set_nodelay(true);
        let Some(name) = sni else {
            return Ok(Conn::new(Io::Plain(Gathered(tcp))));
        };
        match self.tls.connect(name.clone(), Gathered(tcp)).await {
            Ok(tls) => Ok(Conn::new(Io::Tls(Box::new(tls)))),
            Err(e) => Err(SendError::Tls {
                endpoint: endpoint.clone(),
                source: e.into(),
            }),
        }
    }
}

/// The name a TLS endpoint is verified against and sent as SNI:
/// `tls.server_name`, else the endpoint's host.
pub(crate) fn server_name(
    def: &UpstreamDef,
    base: Option<&http::uri::Authority>,
) -> Option<ServerName<'static>> {
    let configured = def.tls.as_ref().and_then(|t| t.server_name.clone());
    let host = configured.or_else(|| {
        base.map(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
    })?;
    ServerName::try_from(host).ok()
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
) -> Result<MaybeHttpsStream<TokioIo<Gathered<TcpStream>>>, SendError> {
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

/// Why an HTTP/1.1 exchange failed after the connection was made.
pub(crate) fn h1_fault(endpoint: Arc<str>, e: H1Error) -> SendError {
    match e {
        H1Error::RequestBody(e) => body_fault(&*e).unwrap_or(SendError::ClientBody),
        H1Error::Request(_) => SendError::ClientBody,
        e => SendError::Reset {
            endpoint,
            source: e.into(),
        },
    }
}

/// Why an h2 exchange failed after the connection was made.
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
