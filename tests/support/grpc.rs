//! A real gRPC stack for the proxy's gRPC tests, with no `protoc`: messages
//! are hand-written prost structs; the upstream is tonic's server codec
//! (`tonic::server::Grpc`) behind a hyper HTTP/2 server, h2c or TLS with
//! ALPN, that records the wire it saw (`:authority`, `host`, `te`); the
//! client is tonic's `Channel` dialled through a connector of our own
//! (plain TCP or TLS with ALPN `h2`), so the `:authority` it sends is any
//! name the test picks.
//!
//! The service `test.Echo` has four methods, one per kind of call. Each
//! answer's text starts with the upstream's name (`v1:...`).

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

/// The one message type of `test.Echo`, requests and answers alike.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Echoed back, after the upstream's name.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Echoed back as is (the 4 MiB test).
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// How long the upstream waits before it answers.
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
    /// How many answers a server-streaming call gets.
    #[prost(uint32, tag = "4")]
    pub count: u32,
    /// End the call with FAILED_PRECONDITION, details and a custom trailer.
    #[prost(bool, tag = "5")]
    pub fail: bool,
}

impl Msg {
    pub fn text(text: &str) -> Msg {
        Msg {
            text: text.into(),
            ..Msg::default()
        }
    }
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const SERVER_STREAM: &str = "/test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
pub const BIDI: &str = "/test.Echo/Bidi";

/// The details and the custom trailer of a failed call.
pub const DETAILS: &[u8] = b"\x08\x2a details as bytes";
pub const WHY: &str = "x-why";

/// The largest message either side accepts (tonic's default is 4 MiB,
/// which a 4 MiB payload plus its framing passes).
pub const MAX_MESSAGE: usize = 8 << 20;

// === upstream ===

/// What the upstream saw of one call.
#[derive(Debug, Clone)]
pub struct Wire {
    pub path: String,
    /// `:authority` (the URI's authority on the server side).
    pub authority: Option<String>,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// A running gRPC upstream.
#[derive(Debug, Clone)]
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub seen: Arc<Mutex<Vec<Wire>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
}

impl GrpcUpstream {
    pub fn last(&self) -> Wire {
        self.seen.lock().unwrap().last().cloned().expect("a call")
    }
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An h2c (prior knowledge) gRPC upstream named `name`.
pub async fn upstream(name: &'static str) -> GrpcUpstream {
    serve_upstream(name, None, false).await
}

/// [`upstream`] that closes each connection (GOAWAY, then close) once its
/// first call is answered.
pub async fn one_call_per_connection(name: &'static str) -> GrpcUpstream {
    serve_upstream(name, None, true).await
}

/// A gRPC upstream over TLS (ALPN `h2`) with certificate `cert_pem` and key
/// `key_pem`.
pub async fn tls_upstream(name: &'static str, cert_pem: &str, key_pem: &str) -> GrpcUpstream {
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(pointsman::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_upstream(name, Some(acceptor), false).await
}

async fn serve_upstream(
    name: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    one_call: bool,
) -> GrpcUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = GrpcUpstream {
        addr: listener.local_addr().unwrap(),
        name,
        seen: Arc::default(),
        connections: Arc::default(),
    };
    let u = up.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            u.connections.fetch_add(1, Ordering::SeqCst);
            let (u, tls) = (u.clone(), tls.clone());
            tokio::spawn(async move {
                let io: Io = match tls {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
                        Box::new(tls)
                    }
                    None => Box::new(tcp),
                };
                serve_h2(u, io, one_call).await;
            });
        }
    });
    up
}

/// Serves one connection; with `one_call`, shuts it down gracefully
/// (GOAWAY, then close) once the first call has been answered.
async fn serve_h2(u: GrpcUpstream, io: Io, one_call: bool) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let svc = hyper::service::service_fn(move |req| {
        let (u, done_tx) = (u.clone(), done_tx.clone());
        async move {
            let answer = route(u, req).await;
            if let Some(tx) = done_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        Ok(()) = done_rx, if one_call => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

type Codec = ProstCodec<Msg, Msg>;

fn server() -> tonic::server::Grpc<Codec> {
    tonic::server::Grpc::new(Codec::default())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Records the call, then hands it to the method its path names.
async fn route(u: GrpcUpstream, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    u.seen.lock().unwrap().push(Wire {
        path: req.uri().path().to_string(),
        authority: req.uri().authority().map(|a| a.to_string()),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let name = u.name;
    match req.uri().path() {
        UNARY => server().unary(Echo(name), req).await,
        SERVER_STREAM => server().server_streaming(Echo(name), req).await,
        CLIENT_STREAM => server().client_streaming(Echo(name), req).await,
        BIDI => server().streaming(Echo(name), req).await,
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// `test.Echo`, answering as upstream `.0`.
#[derive(Clone, Copy)]
struct Echo(&'static str);

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type Answers = ReceiverStream<Result<Msg, Status>>;

fn failure() -> Status {
    let mut meta = tonic::metadata::MetadataMap::new();
    meta.insert(WHY, "because".parse().unwrap());
    Status::with_details_and_metadata(
        Code::FailedPrecondition,
        "nope",
        Bytes::from_static(DETAILS),
        meta,
    )
}

impl Echo {
    fn answer(self, m: &Msg) -> Msg {
        Msg {
            text: format!("{}:{}", self.0, m.text),
            data: m.data.clone(),
            ..Msg::default()
        }
    }
}

impl tonic::server::UnaryService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let me = *self;
        Box::pin(async move {
            let m = req.into_inner();
            tokio::time::sleep(Duration::from_millis(m.delay_ms.into())).await;
            if m.fail {
                return Err(failure());
            }
            Ok(Response::new(me.answer(&m)))
        })
    }
}

impl tonic::server::ServerStreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = Answers;
    type Future = BoxFut<Answers>;
    /// `count` answers `NAME:TEXT-i`, then the failure if `fail`.
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let me = *self;
        Box::pin(async move {
            let m = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..m.count {
                    let _ = tx
                        .send(Ok(me.answer(&Msg::text(&format!("{}-{i}", m.text)))))
                        .await;
                }
                if m.fail {
                    let _ = tx.send(Err(failure())).await;
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

impl tonic::server::ClientStreamingService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    /// One answer: the texts joined with `+`, the data lengths summed.
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let me = *self;
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (mut texts, mut len) = (Vec::new(), 0usize);
            while let Some(m) = stream.message().await? {
                texts.push(m.text);
                len += m.data.len();
            }
            Ok(Response::new(Msg {
                count: u32::try_from(len).unwrap(),
                ..me.answer(&Msg::text(&texts.join("+")))
            }))
        })
    }
}

impl tonic::server::StreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = Answers;
    type Future = BoxFut<Answers>;
    /// One answer per message, as soon as it arrives.
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let me = *self;
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(m)) = stream.message().await {
                    if tx.send(Ok(me.answer(&m))).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

// === client ===

/// tonic's client on a channel.
pub type Client = tonic::client::Grpc<tonic::transport::Channel>;

/// A connector that dials the proxy whatever the URI names (the URI's
/// authority is what the client sends as `:authority`), over TLS when
/// `tls` is set (ALPN `h2`, verified as `server_name`).
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, &'static str)>,
}

type Io = Box<dyn IoStream>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

impl tower_service::Service<Uri> for Dial {
    type Response = TokioIo<Io>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<Io>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let Some((config, name)) = this.tls else {
                return Ok(TokioIo::new(Box::new(tcp) as Io));
            };
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Ok(TokioIo::new(Box::new(tls) as Io))
        })
    }
}

/// A client that dials `proxy` and sends `:authority` `authority`.
pub async fn client(proxy: SocketAddr, authority: &str) -> Client {
    connect(proxy, authority, None).await
}

/// [`client`] over TLS, the proxy verified against `ca_pem` as `sni`.
pub async fn tls_client(proxy: SocketAddr, sni: &'static str, ca_pem: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(pointsman::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    connect(proxy, sni, Some((Arc::new(config), sni))).await
}

async fn connect(
    addr: SocketAddr,
    authority: &str,
    tls: Option<(Arc<rustls::ClientConfig>, &'static str)>,
) -> Client {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let channel = tonic::transport::Endpoint::from_shared(format!("{scheme}://{authority}"))
        .unwrap()
        .connect_with_connector(Dial { addr, tls })
        .await
        .expect("channel");
    tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

/// `test.Echo/Unary` with `metadata` (name, value) pairs.
pub async fn unary(
    c: &mut Client,
    m: Msg,
    metadata: &[(&'static str, &str)],
) -> Result<Response<Msg>, Status> {
    let mut req = Request::new(m);
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    c.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    c.unary(req, path(UNARY), Codec::default()).await
}

/// `test.Echo/ServerStream`: every answer's text, then how the call ended.
pub async fn server_stream(c: &mut Client, m: Msg) -> (Vec<String>, Result<(), Status>) {
    c.ready().await.unwrap();
    let mut stream = match c
        .server_streaming(Request::new(m), path(SERVER_STREAM), Codec::default())
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return (Vec::new(), Err(s)),
    };
    let mut texts = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => texts.push(m.text),
            Ok(None) => return (texts, Ok(())),
            Err(s) => return (texts, Err(s)),
        }
    }
}

/// `test.Echo/ClientStream` over `msgs`.
pub async fn client_stream(c: &mut Client, msgs: Vec<Msg>) -> Result<Msg, Status> {
    c.ready().await.unwrap();
    let stream = tokio_stream::iter(msgs);
    c.client_streaming(Request::new(stream), path(CLIENT_STREAM), Codec::default())
        .await
        .map(Response::into_inner)
}

/// Opens `test.Echo/Bidi`: a sender for requests and the answers' stream.
pub async fn bidi(c: &mut Client) -> (tokio::sync::mpsc::Sender<Msg>, Streaming<Msg>) {
    c.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let answers = c
        .streaming(
            Request::new(ReceiverStream::new(rx)),
            path(BIDI),
            Codec::default(),
        )
        .await
        .expect("bidi call")
        .into_inner();
    (tx, answers)
}

/// One gRPC frame (uncompressed) of `m`, as an HTTP body carries it.
pub fn frame(m: &Msg) -> Vec<u8> {
    let body = prost::Message::encode_to_vec(m);
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}
