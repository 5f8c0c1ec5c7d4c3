//! The weighted reverse proxy in front of a service's releases (the process driver's
//! traffic split).
//!
//! One listener accepts HTTP/1.1 (keep-alive) and HTTP/2 (cleartext, prior knowledge) and
//! forwards each request to the stable or the canary upstream, bodies streamed both ways.
//! The split is deterministic: of every 10,000 consecutive requests exactly
//! `canary_weight` go to the canary, spread evenly, so a small weight sees traffic at once
//! and the measured share never drifts from the configured one. A route change applies to
//! the next request: a rollback is one store of the new route.
//!
//! Each version's golden signals — requests by status, a latency histogram (time to the
//! answer's headers), requests in flight — are counted with atomics and exported in the
//! Prometheus text format; the newest latency samples are kept for the canary's
//! statistical tests. An upstream that cannot be reached or does not answer in time is a
//! 502 or 504 *of that version*.

mod signals;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use signals::{BUCKETS, Counts, SAMPLES, Sample, Signals};

/// Weights are in basis points: 10,000 = all traffic.
pub const ALL: u32 = 10_000;

/// A problem starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid route: {0}")]
    Route(String),
}

/// One release's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The `version` label of its signals (a release id, a digest prefix).
    pub version: String,
    pub addr: SocketAddr,
}

/// Where traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub stable: Upstream,
    pub canary: Option<Upstream>,
    /// The canary's share in basis points (0–10,000); ignored without a canary.
    pub canary_weight: u32,
}

impl Route {
    /// All traffic to one upstream.
    #[must_use]
    pub fn only(stable: Upstream) -> Route {
        Route {
            stable,
            canary: None,
            canary_weight: 0,
        }
    }

    fn check(&self) -> Result<(), ProxyError> {
        if self.canary_weight > ALL {
            return Err(ProxyError::Route(format!(
                "canary weight {} is over {ALL} basis points",
                self.canary_weight
            )));
        }
        if let Some(c) = &self.canary
            && c.version == self.stable.version
        {
            return Err(ProxyError::Route(format!(
                "stable and canary are both version `{}`",
                c.version
            )));
        }
        Ok(())
    }
}

/// Whether request number `n` (0-based) goes to the canary at `weight` basis points: the
/// canary takes request `n` when `⌊(n+1)·w/10000⌋` steps past `⌊n·w/10000⌋`, which spreads
/// exactly `w` of every 10,000 requests evenly (Bresenham's line).
#[must_use]
pub fn to_canary(n: u64, weight: u32) -> bool {
    let w = u128::from(weight.min(ALL));
    let n = u128::from(n);
    (n + 1) * w / u128::from(ALL) > n * w / u128::from(ALL)
}

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `service` label of every signal.
    pub service: String,
    /// How long an upstream may take to send its answer's headers (then 504).
    pub upstream_timeout: Duration,
    /// Speak HTTP/2 (cleartext, prior knowledge) to upstreams instead of HTTP/1.1.
    pub upstream_http2: bool,
    /// How long a client has to send an HTTP/1.1 request's headers, and the longest its
    /// connection idles between requests: a slowloris or a parked socket lives no longer.
    pub client_header_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            service: "service".to_owned(),
            upstream_timeout: Duration::from_secs(30),
            upstream_http2: false,
            client_header_timeout: Duration::from_secs(10),
        }
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Inner {
    options: Options,
    route: RwLock<Arc<Route>>,
    seq: AtomicU64,
    /// Signals by version, never removed (a version's counters must not restart while a
    /// scraper reads them); a handful of versions over a proxy's life.
    versions: RwLock<Vec<(String, Arc<Signals>)>>,
    client: Client<HttpConnector, Incoming>,
    epoch: Instant,
}

impl Inner {
    fn signals(&self, version: &str) -> Arc<Signals> {
        {
            let v = self
                .versions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, s)) = v.iter().find(|(name, _)| name == version) {
                return Arc::clone(s);
            }
        }
        let mut v = self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, s)) = v.iter().find(|(name, _)| name == version) {
            return Arc::clone(s);
        }
        let s = Arc::new(Signals::default());
        v.push((version.to_owned(), Arc::clone(&s)));
        s
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A running proxy. Dropping it stops the listener (requests in flight finish).
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("service", &self.inner.options.service)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Listens on `listen` (port 0: any free port) and starts forwarding by `route`.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound or the route is invalid.
    pub async fn start(
        listen: SocketAddr,
        route: Route,
        options: Options,
    ) -> Result<Proxy, ProxyError> {
        route.check()?;
        let (listener, addr) = bind(listen).await?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .http2_only(options.upstream_http2)
            .build(connector);
        let inner = Arc::new(Inner {
            options,
            route: RwLock::new(Arc::new(route)),
            seq: AtomicU64::new(0),
            versions: RwLock::new(Vec::new()),
            client,
            epoch: Instant::now(),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, Arc::clone(&inner), stopped));
        Ok(Proxy { inner, addr, stop })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends the next requests by `route`.
    ///
    /// # Errors
    /// When the route is invalid (the current one stays).
    pub fn set_route(&self, route: Route) -> Result<(), ProxyError> {
        route.check()?;
        *self
            .inner
            .route
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(route);
        Ok(())
    }

    /// The route now.
    #[must_use]
    pub fn route(&self) -> Route {
        Route::clone(
            &self
                .inner
                .route
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// A version's signals (created empty when it has had no traffic yet).
    #[must_use]
    pub fn signals(&self, version: &str) -> Arc<Signals> {
        self.inner.signals(version)
    }

    /// Milliseconds since the proxy started: the clock of [`Sample::at_ms`].
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    /// Every version's signals and the route's weights, in the Prometheus text format.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let service = &self.inner.options.service;
        let mut families = signals::Families::default();
        let versions: Vec<(String, Arc<Signals>)> = self
            .inner
            .versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (version, s) in &versions {
            s.render(service, version, &mut families);
        }
        let route = self.route();
        let mut weights = vec![(
            route.stable.version.clone(),
            ALL - route.canary.as_ref().map_or(0, |_| route.canary_weight),
        )];
        if let Some(c) = &route.canary {
            weights.push((c.version.clone(), route.canary_weight));
        }
        let route_lines: String = weights
            .iter()
            .map(|(v, w)| {
                format!(
                    "maestro_proxy_route_weight{{service=\"{}\",version=\"{}\"}} {}\n",
                    signals::escape(service),
                    signals::escape(v),
                    f64::from(*w) / f64::from(ALL)
                )
            })
            .collect();
        families.finish(&route_lines)
    }

    /// Serves [`Proxy::render_metrics`] at `GET /metrics` on `listen`, for a Prometheus
    /// server to scrape; stops with the proxy. Returns the address bound.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn serve_metrics(
        self: &Arc<Self>,
        listen: SocketAddr,
    ) -> Result<SocketAddr, ProxyError> {
        let (listener, addr) = bind(listen).await?;
        let me = Arc::downgrade(self);
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stopped.changed() => return,
                };
                let Ok((stream, _)) = conn else { continue };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move {
                            let resp = match (me.upgrade(), req.uri().path()) {
                                (Some(p), "/metrics") => Response::builder()
                                    .header(
                                        header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )
                                    .body(Full::new(Bytes::from(p.render_metrics()))),
                                _ => Response::builder()
                                    .status(StatusCode::NOT_FOUND)
                                    .body(Full::new(Bytes::from_static(b"not found\n"))),
                            };
                            Ok::<_, Infallible>(resp.unwrap_or_default())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `listen`, with the address actually bound (port 0 picks one).
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), ProxyError> {
    let err = |source| ProxyError::Listen {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

async fn accept(listener: TcpListener, inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(inner.options.client_header_timeout);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stopped.changed() => return,
        };
        let Ok((stream, peer)) = conn else {
            // Out of file descriptors or similar: breathe, then go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inner = Arc::clone(&inner);
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = Arc::clone(&inner);
                async move { Ok::<_, Infallible>(forward(&inner, req, peer).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Hop-by-hop headers (RFC 9110, section 7.6.1): never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(h);
    }
}

fn answer(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn forward(
    inner: &Inner,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let route = Arc::clone(
        &inner
            .route
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let upstream = match &route.canary {
        Some(c)
            if to_canary(
                inner.seq.fetch_add(1, Ordering::Relaxed),
                route.canary_weight,
            ) =>
        {
            c
        }
        _ => &route.stable,
    };
    let signals = inner.signals(&upstream.version);
    signals.started();
    let started = Instant::now();

    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let uri: Result<Uri, _> = format!("http://{}{path}", upstream.addr).parse();
    let Ok(uri) = uri else {
        signals.finished(400, 0, inner.now_ms());
        return answer(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    *req.uri_mut() = uri;
    *req.version_mut() = if inner.options.upstream_http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", v);
    }

    let sent =
        tokio::time::timeout(inner.options.upstream_timeout, inner.client.request(req)).await;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            signals.finished(parts.status.as_u16(), latency_us, inner.now_ms());
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(_)) => {
            signals.finished(502, latency_us, inner.now_ms());
            answer(
                StatusCode::BAD_GATEWAY,
                "the upstream could not be reached\n",
            )
        }
        Err(_) => {
            signals.finished(504, latency_us, inner.now_ms());
            answer(
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream did not answer in time\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_exact_and_even() {
        for w in [0, 1, 500, 2_500, 5_000, 9_999, ALL] {
            let n = (0..10_000).filter(|&n| to_canary(n, w)).count();
            assert_eq!(n, w as usize, "weight {w}");
        }
        // 5%: one request in twenty, never two in a row.
        let picks: Vec<u64> = (0..100).filter(|&n| to_canary(n, 500)).collect();
        assert_eq!(picks, [19, 39, 59, 79, 99]);
    }

    #[test]
    fn routes_are_checked() {
        let up = |v: &str| Upstream {
            version: v.to_owned(),
            addr: "127.0.0.1:1".parse().expect("addr"),
        };
        let bad = Route {
            stable: up("a"),
            canary: Some(up("b")),
            canary_weight: ALL + 1,
        };
        assert!(bad.check().is_err());
        let same = Route {
            stable: up("a"),
            canary: Some(up("a")),
            canary_weight: 10,
        };
        assert!(same.check().is_err());
    }
}
