//! Outbound HTTP of a skill: the decision, the address check, the credential injection and
//! the connection, in that order, for every request a skill sends (`wasi:http`).
//!
//! Invariants:
//! - A request leaves only when the call's [`Capabilities`] route it (a grant names its
//!   scheme, host, port, path and method); everything else is refused before any name is
//!   resolved.
//! - The name is resolved once, every address is checked (loopback, private, link-local,
//!   metadata, IPv4-mapped and other non-public ranges are refused unless the route allows
//!   them), and the connection goes to an address that was checked: a DNS answer that
//!   changes between the check and the connection (rebinding) cannot redirect it.
//! - Credentials are added after the decision and the address check, in the host; the
//!   guest never sees the request after it handed it over. When credentials were added,
//!   the response (headers and body, read whole up to a cap, asked for and accepted only
//!   uncompressed) is masked before the guest reads it, so an upstream that echoes the
//!   credential cannot hand it to the skill.
//! - Redirects are not followed here: a follow-up request is a new request, decided anew.
//!
//! Threat: a skill (or a prompt steering it) reaching internal services or cloud metadata,
//! DNS rebinding, credentials sent to a host they were not granted for, and credentials
//! echoed back into the sandbox.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};
use zeroize::Zeroizing;

/// Largest response body read whole (to be masked) when credentials were injected.
pub const MASKED_BODY_MAX: usize = 16 * 1024 * 1024;
/// Connect timeout when the guest sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First-byte timeout when the guest sets none.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The destination of one outbound request, as the decision sees it.
#[derive(Debug, Clone)]
pub struct Destination<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Lower-case host name or IP literal (no brackets).
    pub host: &'a str,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
    /// The path (without the query).
    pub path: &'a str,
}

/// How a request was allowed.
#[derive(Debug, Clone)]
pub struct Route {
    /// Which grant allowed it (opaque to the runtime; handed back to `inject`).
    pub grant: usize,
    /// Whether non-public addresses may be connected to.
    pub allow_private: bool,
    /// Whether credentials will be added (the response is then masked).
    pub injects: bool,
}

/// Why a secret was not revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealRefusal {
    /// No grant lets this skill read it (or the vault cannot open it now).
    Denied,
    /// Granted, but not set.
    NotFound,
}

/// What one call may reach beyond its sandbox. The gateway builds one per call from the
/// grants in force for the skill in the caller's environment; the runtime asks it before
/// every outbound request and every reveal.
pub trait Capabilities: Send + Sync {
    /// Whether a grant allows this request (`Err` with the reason otherwise).
    fn route(&self, destination: &Destination<'_>) -> Result<Route, String>;
    /// Adds the route's credentials to the request (`Err` with the reason refuses it).
    fn inject(&self, route: &Route, request: &mut http::request::Parts) -> Result<(), String>;
    /// The value of a secret the skill may read itself.
    fn reveal(&self, name: &str) -> Result<Zeroizing<String>, RevealRefusal>;
    /// `bytes` with every secret this call used masked, or `None` if none occurs.
    fn mask(&self, bytes: &[u8]) -> Option<Vec<u8>>;
    /// Records a request the runtime refused after routing (e.g. a non-public address).
    fn refused(&self, destination: &Destination<'_>, reason: &str);
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Decides, checks, injects and sends one request.
pub async fn send(
    skill: &str,
    caps: &Arc<dyn Capabilities>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.clone();
    let scheme = match uri.scheme_str() {
        Some("https") => "https",
        Some("http") => "http",
        _ => return Err(Error::HttpRequestUriInvalid),
    };
    let host = uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let destination = Destination {
        method: parts.method.as_str(),
        scheme,
        host: &host,
        port,
        path: uri.path(),
    };
    let route = match caps.route(&destination) {
        Ok(route) => route,
        Err(reason) => {
            tracing::info!(skill, host = %host, port, reason = %reason, "outbound request denied");
            return Err(Error::HttpRequestDenied);
        }
    };
    let addresses = resolve(&host, port).await?;
    if !route.allow_private
        && let Some(bad) = addresses.iter().find(|a| is_non_public(a.ip()))
    {
        let reason = if host.parse::<IpAddr>().is_ok() {
            format!("{} is not a public address", bad.ip())
        } else {
            format!("the name resolves to {}, not a public address", bad.ip())
        };
        tracing::info!(skill, host = %host, port, reason = %reason, "outbound request denied");
        caps.refused(&destination, &reason);
        return Err(Error::DestinationIpProhibited);
    }
    if let Err(reason) = caps.inject(&route, &mut parts) {
        tracing::info!(skill, host = %host, port, reason = %reason, "outbound request refused");
        return Err(Error::HttpRequestDenied);
    }
    if route.injects {
        // The response is masked before the skill reads it: ask for it uncompressed, so an
        // echo of the credential cannot hide inside a compressed body.
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    let options = options.unwrap_or_default();
    let stream = connect(
        &addresses,
        options.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
    )
    .await?;
    // The origin-form target, from the request as injection left it (a query parameter
    // may have been added).
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let request = http::Request::from_parts(parts, body);
    let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT);
    let response = if scheme == "https" {
        let tls = tls_connector();
        let name = server_name(&host)?;
        let stream = tls.connect(name, stream).await.map_err(Error::Tls)?;
        exchange(TokioIo::new(stream), request, first_byte).await?
    } else {
        exchange(TokioIo::new(stream), request, first_byte).await?
    };
    let response = if route.injects {
        masked(caps, response).await?
    } else {
        response.map(|b| b.map_err(Error::from).boxed_unsync())
    };
    Ok((response, Box::new(async { Ok(()) })))
}

/// Every address of `host` (an IP literal is its own address).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addresses: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(_)) => return Err(Error::DestinationNotFound),
            Err(_) => return Err(Error::DnsTimeout),
        };
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addresses)
}

/// Connects to the first of the checked addresses that answers.
async fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Result<tokio::net::TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for address in addresses {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    use std::sync::OnceLock;
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| Error::HttpRequestUriInvalid)
}

async fn exchange<S>(
    io: TokioIo<S>,
    request: http::Request<WasiBody>,
    first_byte: Duration,
) -> Result<http::Response<hyper::body::Incoming>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "outbound connection ended with an error");
        }
    });
    match tokio::time::timeout(first_byte, sender.send_request(request)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::ConnectionReadTimeout),
    }
}

/// Reads the whole response (up to [`MASKED_BODY_MAX`]) and masks the secrets of the call
/// in its header values and body.
async fn masked(
    caps: &Arc<dyn Capabilities>,
    response: http::Response<hyper::body::Incoming>,
) -> Result<http::Response<WasiBody>, Error> {
    let (mut parts, body) = response.into_parts();
    // A compressed body cannot be masked: refuse it rather than pass it on unread.
    if let Some(coding) = parts.headers.get(http::header::CONTENT_ENCODING)
        && !coding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(Error::HttpResponseContentCoding(
            coding.to_str().ok().map(str::to_owned),
        ));
    }
    let limited = http_body_util::Limited::new(body, MASKED_BODY_MAX);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                Error::HttpResponseBodySize(Some(MASKED_BODY_MAX as u64))
            } else {
                Error::HttpResponseIncomplete
            });
        }
    };
    for value in parts.headers.values_mut() {
        if let Some(clean) = caps.mask(value.as_bytes()) {
            // A masked value that is no longer a valid header value is replaced whole,
            // never passed on unmasked.
            *value = http::HeaderValue::from_bytes(&clean)
                .unwrap_or_else(|_| http::HeaderValue::from_static("[masked]"));
        }
    }
    let body = match caps.mask(&bytes) {
        Some(clean) => {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Bytes::from(clean)
        }
        None => bytes,
    };
    Ok(http::Response::from_parts(
        parts,
        Full::new(body).map_err(Error::from).boxed_unsync(),
    ))
}

/// Addresses a skill may not reach unless `allow_private` is set: loopback, private,
/// link-local (cloud metadata lives there), unspecified, multicast, shared and reserved
/// ranges, and IPv6 addresses that embed one of those (IPv4-mapped, IPv4-compatible,
/// NAT64, 6to4).
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let o = v6.octets();
            // Addresses that carry an IPv4 address: NAT64 (64:ff9b::/96) and 6to4
            // (2002::/16) reach the embedded one, so it decides.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_non_public(IpAddr::V4([o[12], o[13], o[14], o[15]].into()));
            }
            if s[0] == 0x2002 {
                return is_non_public(IpAddr::V4([o[2], o[3], o[4], o[5]].into()));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[..6] == [0; 6] // IPv4-compatible (deprecated) ::a.b.c.d
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "::127.0.0.1",
            "fec0::1",
            "255.255.255.255",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
