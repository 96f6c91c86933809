//! One bounded GET: HTTPS (plain HTTP only to a loopback address), no redirects, a
//! size limit on the body, a connect and a total timeout. hyper's one-connection
//! client on tokio and rustls, with nothing pooled: a key set is fetched a few times an
//! hour.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    body::Bytes,
    header::{ACCEPT, CACHE_CONTROL, CONNECTION, HOST, USER_AGENT},
    Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::{io::AsyncRead, io::AsyncWrite, net::TcpStream};

/// The longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// An absolute `https://` URL, or `http://` to a loopback host.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Url {
    text: String,
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `host` names this machine: a loopback address, or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Url {
    /// Parses `text`; refuses user info, fragments, control characters, and plain
    /// HTTP unless `plain_loopback` allows it to a loopback host.
    pub(crate) fn parse(text: &str, plain_loopback: bool) -> Result<Self, String> {
        if text.len() > MAX_URL_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "a URL is printable ASCII, at most {MAX_URL_LEN} bytes"
            ));
        }
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an https:// URL"));
        };
        if text.contains('#') {
            return Err(format!("{text:?} has a fragment"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(format!("{text:?} carries user info"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port: its colons are inside the brackets.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{text:?} has a bad port"))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = !bare.is_empty()
            && (bare.parse::<IpAddr>().is_ok()
                || bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            return Err(format!("{text:?} has a bad host"));
        }
        let plain_ok = plain_loopback && is_loopback_host(host);
        if !(tls || plain_ok) {
            return Err(format!(
                "{text:?} is not HTTPS (plain HTTP only to loopback, with allow_plain_loopback)"
            ));
        }
        let target = if target.is_empty() {
            "/".to_owned()
        } else if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_owned()
        };
        Ok(Self {
            text: text.to_owned(),
            tls,
            host: bare.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// Whether this is a plain-HTTP loopback URL.
    pub(crate) fn is_plain(&self) -> bool {
        !self.tls
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

/// A successful response: its body and how long it may be cached.
pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    pub(crate) max_age: Option<Duration>,
}

/// Why a fetch failed (for logs: never shown to a client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The provider answered with another status than 200.
    Status(u16),
    /// Anything else: DNS, connect, TLS, a timeout, an oversize or broken body.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "answered HTTP {s}"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

fn failed(why: impl fmt::Display) -> FetchError {
    FetchError::Failed(why.to_string())
}

/// The client's limits and TLS configuration.
#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
}

/// The default TLS configuration: the webpki root certificates, aws-lc-rs, TLS 1.2+.
pub(crate) fn default_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Aborts the connection task when the fetch is done or dropped (a stalled provider
/// never keeps a socket open past the fetch).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Parses `max-age` from a `Cache-Control` value; `no-store` / `no-cache` count as 0.
pub(crate) fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            age = arg
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

impl Http {
    /// GETs `url`: `200` with a body of at most `max_bytes`, within the timeouts.
    pub(crate) async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.timeout, self.get_unbounded(url)).await {
            Ok(result) => result,
            Err(_) => Err(failed(format_args!(
                "no complete answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn get_unbounded(&self, url: &Url) -> Result<Fetched, FetchError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.connect(url))
            .await
            .map_err(|_| {
                failed(format_args!(
                    "no connection within {:?}",
                    self.connect_timeout
                ))
            })??;
        match stream {
            Stream::Plain(s) => self.exchange(url, s).await,
            Stream::Tls(s) => self.exchange(url, *s).await,
        }
    }

    async fn connect(&self, url: &Url) -> Result<Stream, FetchError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| failed(format_args!("cannot resolve {}: {e}", url.host)))?
            .collect();
        // Plain HTTP is for loopback only, whatever the name resolves to.
        if url.is_plain() && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(failed("plain HTTP to a host that is not loopback"));
        }
        let mut last = failed(format_args!("{} resolves to no address", url.host));
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    if !url.tls {
                        return Ok(Stream::Plain(tcp));
                    }
                    let name = ServerName::try_from(url.host.clone())
                        .map_err(|e| failed(format_args!("bad server name: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                        .connect(name, tcp)
                        .await
                        .map_err(|e| failed(format_args!("TLS with {}: {e}", url.host)))?;
                    return Ok(Stream::Tls(Box::new(tls)));
                }
                Err(e) => last = failed(format_args!("cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    }

    async fn exchange<S>(&self, url: &Url, io: S) -> Result<Fetched, FetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(failed)?;
        let _conn = AbortOnDrop(tokio::spawn(conn).abort_handle());
        let request = Request::get(url.target.as_str())
            .header(HOST, url.host_header())
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("tenancy-core/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(failed)?;
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        if status != StatusCode::OK {
            // Redirects included: a key set is fetched from where it was configured.
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(response.into_body(), self.max_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    failed(format_args!("the answer is over {} bytes", self.max_bytes))
                } else {
                    failed(e)
                }
            })?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse(
            "https://login.example.com/tenant/.well-known/jwks.json?x=1",
            false,
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("login.example.com", 443));
        assert_eq!(u.target, "/tenant/.well-known/jwks.json?x=1");
        assert_eq!(u.host_header(), "login.example.com");
        let u = Url::parse("http://127.0.0.1:8080", true).unwrap();
        assert_eq!(
            (u.target.as_str(), u.host_header().as_str()),
            ("/", "127.0.0.1:8080")
        );
        assert!(Url::parse("http://[::1]:9000/jwks", true).is_ok());
        assert!(Url::parse("http://localhost/jwks", true).is_ok());
        for bad in [
            "http://login.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/a#frag",
            "https://exa mple.com/",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https:///path",
            "https://exa_mple.com/",
            "https://example.com/\u{7f}",
        ] {
            assert!(Url::parse(bad, true).is_err(), "{bad}");
        }
        // Plain HTTP, even to loopback, only when allowed.
        assert!(Url::parse("http://127.0.0.1:8080/jwks", false).is_err());
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-cache, max-age=600"), Some(Duration::ZERO));
        assert_eq!(max_age("max-age=-1"), None);
        assert_eq!(max_age("private"), None);
    }
}
