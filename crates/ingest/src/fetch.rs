//! Safe fetching of merchant-controlled image URLs.
//!
//! Every URL is hostile until proven otherwise:
//! - only `http` and `https`, and no credentials in the URL;
//! - the destination address is checked after DNS resolution (a custom resolver drops forbidden
//!   addresses, so the connection can only go to a checked address) and for IP-literal hosts,
//!   including decimal/octal/hex IPv4 spellings and IPv4-mapped IPv6, which the URL parser
//!   normalises;
//! - every redirect hop is checked the same way, and their number is bounded;
//! - the body is read in chunks and abandoned past `max_bytes`, whatever Content-Length says;
//! - one overall deadline covers connect, headers and body (slow-drip servers time out);
//! - transient failures (connect errors, timeouts, 5xx, 429) are retried with exponential
//!   backoff, honouring `Retry-After` up to the backoff cap.
//!
//! Loopback, private, link-local (including cloud metadata at 169.254.169.254), CGNAT,
//! multicast and unspecified addresses are refused unless listed in `allowed_networks`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Fetch limits and policy.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Largest body accepted.
    pub max_bytes: usize,
    /// Deadline for one attempt: connect, headers and body.
    pub timeout: Duration,
    /// Deadline for the TCP/TLS connect.
    pub connect_timeout: Duration,
    /// Most redirects followed.
    pub max_redirects: usize,
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub backoff_initial: Duration,
    /// Largest backoff delay (also caps `Retry-After`).
    pub backoff_max: Duration,
    /// Networks allowed despite being private/loopback/link-local (e.g. `127.0.0.0/8` in tests).
    pub allowed_networks: Vec<IpNet>,
    /// User-Agent header.
    pub user_agent: String,
    /// Most requests in flight at once, across all listings (bounds sockets and body memory:
    /// at most `max_concurrent × max_bytes` of bodies are being read).
    pub max_concurrent: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 20 << 20,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_redirects: 3,
            max_attempts: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            allowed_networks: Vec::new(),
            user_agent: format!("listing-guard/{}", env!("CARGO_PKG_VERSION")),
            max_concurrent: 64,
        }
    }
}

/// Why an image could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Not a URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// Not http/https.
    #[error("scheme {0:?} is not allowed (http and https only)")]
    ForbiddenScheme(String),
    /// user:password@ in the URL.
    #[error("credentials in URLs are not allowed")]
    Credentials,
    /// Destination address refused.
    #[error("destination {0} is a forbidden address")]
    ForbiddenAddress(String),
    /// Too many redirects, or a redirect to a refused URL.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// Non-success HTTP status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// Over `max_bytes`.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Could not connect (refused, DNS failure, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke while reading.
    #[error("transfer failed: {0}")]
    Transfer(String),
}

impl FetchError {
    /// Stable error class, used as the image failure class and in metrics.
    pub fn class(&self) -> String {
        match self {
            FetchError::InvalidUrl(_) => "invalid_url".into(),
            FetchError::ForbiddenScheme(_) => "forbidden_scheme".into(),
            FetchError::Credentials => "credentials_in_url".into(),
            FetchError::ForbiddenAddress(_) => "forbidden_address".into(),
            FetchError::Redirect(_) => "redirect_refused".into(),
            FetchError::Status(s) => format!("http_{s}"),
            FetchError::TooLarge { .. } => "too_large".into(),
            FetchError::Timeout(_) => "fetch_timeout".into(),
            FetchError::Connect(_) => "connect_error".into(),
            FetchError::Transfer(_) => "transfer_error".into(),
        }
    }

    /// Worth another attempt?
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(s) => *s == 429 || *s == 408 || (500..600).contains(s),
            FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Transfer(_) => true,
            _ => false,
        }
    }
}

/// A fetched body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The bytes.
    pub bytes: Bytes,
    /// Content-Type as the server claimed (informational only; the bytes decide).
    pub content_type: Option<String>,
    /// Attempts used.
    pub attempts: u32,
}

/// The fetcher: one pooled HTTP client with the address policy built in.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    client: reqwest::Client,
    cfg: Arc<FetchConfig>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl ImageFetcher {
    /// Builds the client.
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        let cfg = Arc::new(cfg);
        let policy_cfg = Arc::clone(&cfg);
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > policy_cfg.max_redirects {
                let msg = format!("more than {} redirects", policy_cfg.max_redirects);
                return attempt.error(FetchError::Redirect(msg));
            }
            match check_url(attempt.url(), &policy_cfg.allowed_networks) {
                Ok(()) => attempt.follow(),
                Err(e) => {
                    let msg = format!("to {}: {e}", attempt.url());
                    attempt.error(FetchError::Redirect(msg))
                }
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirect)
            .dns_resolver(Arc::new(CheckedResolver {
                allowed: cfg.allowed_networks.clone(),
            }))
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .user_agent(cfg.user_agent.clone())
            .pool_max_idle_per_host(8)
            .no_proxy()
            .build()
            .map_err(|e| FetchError::Connect(format!("building HTTP client: {e}")))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)));
        Ok(Self { client, cfg, slots })
    }

    /// Fetches `url` with retries.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        check_url(&parsed, &self.cfg.allowed_networks)?;
        let mut attempt = 1;
        loop {
            match self.attempt(parsed.clone()).await {
                Ok((bytes, content_type)) => {
                    return Ok(Fetched {
                        bytes,
                        content_type,
                        attempts: attempt,
                    })
                }
                Err((e, retry_after)) if e.is_transient() && attempt < self.cfg.max_attempts => {
                    let backoff = self
                        .cfg
                        .backoff_initial
                        .saturating_mul(1 << (attempt - 1).min(16));
                    let delay = retry_after.unwrap_or(backoff).min(self.cfg.backoff_max);
                    tracing::debug!(%url, attempt, error = %e, ?delay, "transient fetch error; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        url: Url,
    ) -> Result<(Bytes, Option<String>), (FetchError, Option<Duration>)> {
        let deadline = self.cfg.timeout;
        let _slot = self.slots.acquire().await.expect("never closed");
        match tokio::time::timeout(deadline, self.attempt_inner(url)).await {
            Ok(r) => r,
            Err(_) => Err((FetchError::Timeout(deadline), None)),
        }
    }

    async fn attempt_inner(
        &self,
        url: Url,
    ) -> Result<(Bytes, Option<String>), (FetchError, Option<Duration>)> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| (map_reqwest(e, self.cfg.timeout), None))?;
        let status = resp.status();
        if status.is_redirection() {
            // The client returns a redirect it will not follow (e.g. to a non-HTTP scheme).
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            let msg = format!("HTTP {} to {location} is not followed", status.as_u16());
            return Err((FetchError::Redirect(msg), None));
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err((FetchError::Status(status.as_u16()), retry_after));
        }
        let limit = self.cfg.max_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err((FetchError::TooLarge { limit }, None));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = BytesMut::with_capacity(
            resp.content_length().unwrap_or(64 * 1024).min(limit as u64) as usize,
        );
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| (map_reqwest(e, self.cfg.timeout), None))?
        {
            if body.len() + chunk.len() > limit {
                return Err((FetchError::TooLarge { limit }, None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), content_type))
    }
}

fn map_reqwest(e: reqwest::Error, timeout: Duration) -> FetchError {
    // Errors raised by our own redirect policy or resolver come back wrapped.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(fe) = s.downcast_ref::<FetchError>() {
            return fe.clone();
        }
        src = s.source();
    }
    if e.is_timeout() {
        FetchError::Timeout(timeout)
    } else if e.is_redirect() {
        FetchError::Redirect(e.to_string())
    } else if e.is_connect() {
        FetchError::Connect(error_chain(&e))
    } else {
        FetchError::Transfer(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Checks scheme, credentials and IP-literal hosts. Host names are checked at resolution.
pub fn check_url(url: &Url, allowed: &[IpNet]) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(FetchError::ForbiddenScheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Credentials);
    }
    match url.host() {
        None => Err(FetchError::InvalidUrl("URL has no host".into())),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allowed),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allowed),
        Some(Host::Domain(d)) => {
            // A trailing dot is the same name, fully qualified.
            let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                // Resolves to loopback by definition (RFC 6761); refuse before asking DNS.
                check_ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), allowed)
            } else {
                Ok(())
            }
        }
    }
}

/// Refuses addresses that reach the platform's own network, unless explicitly allowed.
pub fn check_ip(ip: IpAddr, allowed: &[IpNet]) -> Result<(), FetchError> {
    if allowed.iter().any(|n| n.contains(&ip)) {
        return Ok(());
    }
    if is_forbidden(ip) {
        Err(FetchError::ForbiddenAddress(ip.to_string()))
    } else {
        Ok(())
    }
}

fn is_forbidden(ip: IpAddr) -> bool {
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
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking 198.18/15
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64: may embed a private v4
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || seg[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
        }
    }
}

/// Resolves host names with the system resolver and drops forbidden addresses, so the
/// connection can only be made to an address that passed the check.
#[derive(Debug)]
struct CheckedResolver {
    allowed: Vec<IpNet>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(FetchError::Connect(format!(
                        "DNS lookup of {host} failed: {e}"
                    ))) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            let ok: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| check_ip(a.ip(), &allowed).is_ok())
                .collect();
            if ok.is_empty() {
                let shown = addrs
                    .first()
                    .map_or_else(|| host.clone(), |a| format!("{host} ({})", a.ip()));
                return Err(Box::new(FetchError::ForbiddenAddress(shown))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Result<(), &str>) {
        let got = Url::parse(url)
            .map_err(|e| FetchError::InvalidUrl(e.to_string()))
            .and_then(|u| check_url(&u, &[]));
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(class)) => assert_eq!(e.class(), class, "{url}: {e}"),
            (got, exp) => panic!("{url}: got {got:?}, expected {exp:?}"),
        }
    }

    #[test]
    fn url_table() {
        check("https://img.example.com/a.jpg", Ok(()));
        check("http://93.184.216.34/a.jpg", Ok(()));
        check("file:///etc/passwd", Err("forbidden_scheme"));
        check("gopher://x/", Err("forbidden_scheme"));
        check("ftp://x/a.jpg", Err("forbidden_scheme"));
        check(
            "https://user:pw@img.example.com/a.jpg",
            Err("credentials_in_url"),
        );
        check("http://127.0.0.1/", Err("forbidden_address"));
        check("http://localhost:8080/", Err("forbidden_address"));
        check("http://a.localhost/", Err("forbidden_address"));
        check("http://10.1.2.3/", Err("forbidden_address"));
        check("http://172.16.0.1/", Err("forbidden_address"));
        check("http://192.168.1.1/", Err("forbidden_address"));
        check(
            "http://169.254.169.254/latest/meta-data/",
            Err("forbidden_address"),
        );
        check("http://100.64.0.1/", Err("forbidden_address"));
        check("http://0.0.0.0/", Err("forbidden_address"));
        check("http://2130706433/", Err("forbidden_address")); // decimal 127.0.0.1
        check("http://0177.0.0.1/", Err("forbidden_address")); // octal
        check("http://0x7f.1/", Err("forbidden_address")); // hex, short form
        check("http://[::1]/", Err("forbidden_address"));
        check("http://[::ffff:127.0.0.1]/", Err("forbidden_address"));
        check("http://[::ffff:a9fe:a9fe]/", Err("forbidden_address")); // mapped 169.254.169.254
        check("http://[fd00::1]/", Err("forbidden_address"));
        check("http://[fe80::1]/", Err("forbidden_address"));
        check("http://[2606:4700::1111]/", Ok(()));
        check("not a url", Err("invalid_url"));
    }

    #[test]
    fn allow_list_makes_exceptions() {
        let allowed: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(check_ip("127.0.0.1".parse().unwrap(), &allowed).is_ok());
        assert!(check_ip("10.0.0.1".parse().unwrap(), &allowed).is_err());
    }

    #[test]
    fn transient_classes() {
        assert!(FetchError::Status(503).is_transient());
        assert!(FetchError::Status(429).is_transient());
        assert!(!FetchError::Status(404).is_transient());
        assert!(!FetchError::ForbiddenAddress("x".into()).is_transient());
        assert!(FetchError::Connect("refused".into()).is_transient());
    }
}
