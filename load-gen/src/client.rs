//! The HTTP/1.1 client: hyper connections driven directly (measured ~2x faster than reqwest
//! here), a bounded pool of keep-alive connections to one target, and every failure sorted
//! into a kind a person can act on: refused, timeout, reset, dns, other.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    client::conn::http1::SendRequest,
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Semaphore};

use crate::mix::Headers;

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Refused,
    Timeout,
    Reset,
    Dns,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        Self::Refused,
        Self::Timeout,
        Self::Reset,
        Self::Dns,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Dns => "dns",
            Self::Other => "other",
        }
    }

    fn of_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match error.kind() {
            K::ConnectionRefused => Self::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Self::Reset
            }
            K::TimedOut => Self::Timeout,
            _ => Self::Other,
        }
    }

    fn of_hyper(error: &hyper::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Self::of_io(io);
            }
            source = e.source();
        }
        if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
            Self::Reset
        } else {
            Self::Other
        }
    }
}

/// Where requests go: resolved once, so a bad host name fails the run up front.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: url::Url,
    pub address: SocketAddr,
    /// The host as written in the URL (`server.address` of client spans).
    pub host: String,
    pub port: u16,
    host_header: HeaderValue,
    base_path: String,
}

impl Target {
    pub async fn resolve(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw)
            .with_context(|| format!("'{raw}' is not a URL (like http://127.0.0.1:8080)"))?;
        if url.scheme() != "http" {
            bail!("'{raw}': only http:// targets are supported");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!(
                "'{raw}': a target has no query string or fragment (each request's path and query come from the mix)"
            );
        }
        let host = url
            .host_str()
            .with_context(|| format!("'{raw}' has no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        // An IP literal is its own address: `[::1]` is no name to look up.
        let address = match url.host() {
            Some(url::Host::Ipv4(ip)) => std::net::SocketAddr::from((ip, port)),
            Some(url::Host::Ipv6(ip)) => std::net::SocketAddr::from((ip, port)),
            _ => tokio::net::lookup_host((host.as_str(), port))
                .await
                .with_context(|| format!("could not resolve '{host}' (dns)"))?
                .next()
                .with_context(|| format!("'{host}' resolved to no address (dns)"))?,
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let host_header = HeaderValue::from_str(&authority)
            .with_context(|| format!("'{authority}' is not a valid Host"))?;
        let base_path = url.path().trim_end_matches('/').to_owned();
        Ok(Self {
            url,
            address,
            host,
            port,
            host_header,
            base_path,
        })
    }

    /// The full URL of a request to `path_and_query` on this target.
    pub fn full_url(&self, path_and_query: &str) -> String {
        let authority = self.host_header.to_str().unwrap_or_default();
        format!("http://{authority}{}{path_and_query}", self.base_path)
    }
}

/// One request to send.
pub struct Outgoing {
    pub method: hyper::Method,
    pub path_and_query: String,
    pub body: Option<String>,
    pub headers: Headers,
    pub traceparent: Option<HeaderValue>,
}

/// What one exchange gave: the status, and when the request actually went out on a
/// connection (after any wait for one): the start of the service-time view.
pub type Answered = (StatusCode, Instant);

type Sender = SendRequest<Full<Bytes>>;

/// A pooled connection idle longer than this is closed, not reused: servers close idle
/// keep-alive connections after a few seconds (actix: 5 s), and sending on one just as the
/// server closes it fails the request with a reset.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// A bounded set of keep-alive connections to one target (the open model's requests).
pub struct Pool {
    target: Target,
    idle: Mutex<Vec<(Sender, Instant)>>,
    /// Limits open connections; a request waiting here is still "in flight" and its latency,
    /// measured from the intended time, includes the wait.
    slots: Semaphore,
    timeout: Duration,
}

impl Pool {
    pub fn new(target: Target, max_connections: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            target,
            idle: Mutex::default(),
            slots: Semaphore::new(max_connections),
            timeout,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request and reads the whole answer; the timeout covers waiting for a
    /// connection, connecting, sending and reading.
    pub async fn send(&self, request: Outgoing) -> Result<Answered, ErrorKind> {
        let exchange = async {
            let _slot = self.slots.acquire().await.map_err(|_| ErrorKind::Other)?;
            let mut sender = match self.take_idle() {
                Some(sender) => sender,
                None => connect(&self.target).await?,
            };
            let answered = exchange(&mut sender, build(&self.target, request)?).await?;
            if !sender.is_closed() {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((sender, Instant::now()));
            }
            Ok(answered)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(ErrorKind::Timeout))
    }

    /// The most recently used live connection that has not been idle too long.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(sender, since)| since.elapsed() < MAX_IDLE && !sender.is_closed());
        idle.pop().map(|(sender, _)| sender)
    }
}

/// One connection owned by one closed-model worker: no pool, no lock, no shared state.
pub struct Dedicated {
    target: Target,
    sender: Option<Sender>,
    timeout: Duration,
}

impl Dedicated {
    pub fn new(target: Target, timeout: Duration) -> Self {
        Self {
            target,
            sender: None,
            timeout,
        }
    }

    pub async fn send(&mut self, request: Outgoing) -> Result<Answered, ErrorKind> {
        let (target, slot) = (&self.target, &mut self.sender);
        let exchange = async {
            let mut sender = match slot.take().filter(|s| !s.is_closed()) {
                Some(sender) => sender,
                None => connect(target).await?,
            };
            let answered = exchange(&mut sender, build(target, request)?).await?;
            *slot = Some(sender);
            Ok(answered)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(ErrorKind::Timeout))
    }
}

async fn connect(target: &Target) -> Result<Sender, ErrorKind> {
    let stream = TcpStream::connect(target.address)
        .await
        .map_err(|e| ErrorKind::of_io(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ErrorKind::of_hyper(&e))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<Answered, ErrorKind> {
    sender.ready().await.map_err(|e| ErrorKind::of_hyper(&e))?;
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ErrorKind::of_hyper(&e))?;
    let status = response.status();
    discard_body(response.into_body()).await?;
    Ok((status, sent))
}

/// Reads an answer's body to its end and drops each frame as it comes: memory stays flat
/// whatever the server sends (collecting it held a 1 GB answer in memory, whole).
async fn discard_body(mut body: hyper::body::Incoming) -> Result<(), ErrorKind> {
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| ErrorKind::of_hyper(&e))?;
    }
    Ok(())
}

/// The largest answer [`fetch`] reads (Prometheus and admin API answers are a few KiB).
pub const MAX_FETCH_BYTES: usize = 8 * 1024 * 1024;

/// Reads a body into memory, refusing one over [`MAX_FETCH_BYTES`].
async fn read_bounded(mut body: hyper::body::Incoming, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if bytes.len() + data.len() > MAX_FETCH_BYTES {
                bail!("{url} answered more than {MAX_FETCH_BYTES} bytes");
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes)
}

fn build(target: &Target, request: Outgoing) -> Result<Request<Full<Bytes>>, ErrorKind> {
    let uri = if target.base_path.is_empty() {
        request.path_and_query
    } else {
        format!("{}{}", target.base_path, request.path_and_query)
    };
    let mut builder = Request::builder().method(request.method).uri(uri);
    let headers = builder.headers_mut().ok_or(ErrorKind::Other)?;
    headers.insert(header::HOST, target.host_header.clone());
    for (name, value) in request.headers.iter() {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(traceparent) = request.traceparent {
        headers.insert(TRACEPARENT, traceparent);
    }
    builder
        .body(Full::new(request.body.map(Bytes::from).unwrap_or_default()))
        .map_err(|_| ErrorKind::Other)
}

const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");

/// A one-off request outside the load (admin API, Prometheus API): its status and body.
pub async fn fetch(
    method: hyper::Method,
    url: &str,
    body: Option<String>,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, String)> {
    let parsed = url::Url::parse(url).with_context(|| format!("'{url}' is not a URL"))?;
    let mut origin = parsed.clone();
    origin.set_path("");
    origin.set_query(None);
    origin.set_fragment(None);
    let target = Target::resolve(origin.as_str()).await?;
    let path_and_query = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let headers: Headers = match body {
        Some(_) => Arc::from([(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )]),
        None => Arc::from([]),
    };
    let request = build(
        &target,
        Outgoing {
            method,
            path_and_query,
            body,
            headers,
            traceparent: None,
        },
    )
    .map_err(|k| anyhow::anyhow!("could not build a request for {url} ({})", k.as_str()))?;
    let fut = async {
        let stream = TcpStream::connect(target.address)
            .await
            .with_context(|| format!("while connecting to {url}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("while sending to {url}"))?;
        let status = response.status();
        let bytes = read_bounded(response.into_body(), url).await?;
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .with_context(|| format!("{url} did not answer within {timeout:?}"))?
}
