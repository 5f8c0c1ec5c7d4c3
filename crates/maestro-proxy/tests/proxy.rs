//! The proxy between real HTTP clients and real upstream servers on loopback: the split,
//! a rollback taking effect on the next request, streamed bodies both ways, HTTP/2 from
//! clients, hop-by-hop headers, an unreachable and a slow upstream counted against their
//! version, and the Prometheus exposition served for scraping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use maestro_proxy::{ALL, Options, Proxy, Route, Upstream};
use tokio::net::TcpListener;

/// An upstream answering `version` (and what it saw) on every path but `/echo` (the body
/// back) and `/slow` (after 2 s); `status` for `/fail`.
async fn upstream(version: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let seen = format!(
                        "{version} {:?} secret={} xff={}",
                        req.version(),
                        req.headers().contains_key("x-secret"),
                        req.headers()
                            .get("x-forwarded-for")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                    );
                    let body = match path.as_str() {
                        "/echo" => req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default(),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            Bytes::from(seen)
                        }
                        _ => Bytes::from(seen),
                    };
                    let status = if path == "/fail" { 503 } else { 200 };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("connection", "keep-alive")
                            .body(Full::new(body))
                            .expect("response"),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn up(version: &str, addr: SocketAddr) -> Upstream {
    Upstream {
        version: version.to_owned(),
        addr,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

async fn get(agent: &ureq::Agent, url: String) -> (u16, String) {
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut r = agent.get(&url).call().expect("request");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .expect("join")
}

async fn started(route: Route, options: Options) -> Arc<Proxy> {
    Arc::new(
        Proxy::start("127.0.0.1:0".parse().expect("addr"), route, options)
            .await
            .expect("proxy"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_follows_the_route_and_a_rollback_applies_to_the_next_request() {
    let (a, b) = (upstream("v1").await, upstream("v2").await);
    let proxy = started(
        Route {
            stable: up("v1", a),
            canary: Some(up("v2", b)),
            canary_weight: 2_500,
        },
        Options {
            service: "hello-service".into(),
            ..Options::default()
        },
    )
    .await;
    let agent = agent();
    let base = format!("http://{}", proxy.addr());
    let mut to_canary = 0;
    for _ in 0..400 {
        let (status, body) = get(&agent, format!("{base}/greet?name=x")).await;
        assert_eq!(status, 200);
        if body.starts_with("v2") {
            to_canary += 1;
        }
    }
    assert_eq!(to_canary, 100, "exactly 25% of 400");
    assert_eq!(proxy.signals("v2").counts().requests, 100);
    assert_eq!(proxy.signals("v1").counts().requests, 300);

    proxy.set_route(Route::only(up("v1", a))).expect("rollback");
    for _ in 0..50 {
        let (_, body) = get(&agent, format!("{base}/")).await;
        assert!(body.starts_with("v1 "), "{body}");
    }
    // A client's own X-Forwarded-For is extended with the peer.
    let (_, body) = tokio::task::spawn_blocking({
        let agent = agent.clone();
        let url = format!("{base}/");
        move || {
            let mut r = agent
                .get(&url)
                .header("X-Forwarded-For", "203.0.113.7")
                .header("Connection", "x-secret")
                .header("X-Secret", "1")
                .call()
                .expect("request");
            (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        }
    })
    .await
    .expect("join");
    assert!(body.contains("xff=203.0.113.7, 127.0.0.1"), "{body}");
    assert!(
        body.contains("secret=false"),
        "headers named by Connection are hop-by-hop: {body}"
    );

    proxy
        .set_route(Route {
            stable: up("v1", a),
            canary: Some(up("v2", b)),
            canary_weight: ALL,
        })
        .expect("all to the canary");
    let (_, body) = get(&agent, format!("{base}/")).await;
    assert!(body.starts_with("v2 "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_over_http1_and_http2() {
    let a = upstream("v1").await;
    let proxy = started(Route::only(up("v1", a)), Options::default()).await;
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for http2 in [false, true] {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Full<Bytes>>();
        let req = Request::post(format!("http://{}/echo", proxy.addr()))
            .body(Full::new(Bytes::from(payload.clone())))
            .expect("request");
        let resp = client.request(req).await.expect("answer");
        assert_eq!(resp.status(), 200);
        let want = if http2 {
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), payload.len(), "http2={http2}");
        assert!(body == payload, "the same bytes back (http2={http2})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_count_against_the_version_that_failed() {
    let a = upstream("v1").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = started(
        Route {
            stable: up("v1", a),
            canary: Some(up("v2", dead)),
            canary_weight: 5_000,
        },
        Options {
            service: "hello-service".into(),
            upstream_timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let agent = agent();
    let base = format!("http://{}", proxy.addr());
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&agent, format!("{base}/")).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        5,
        "{statuses:?}"
    );
    let v2 = proxy.signals("v2").counts();
    assert_eq!((v2.requests, v2.server_errors), (5, 5));
    assert_eq!(proxy.signals("v1").counts().server_errors, 0);

    proxy.set_route(Route::only(up("v1", a))).expect("route");
    assert_eq!(get(&agent, format!("{base}/slow")).await.0, 504);
    assert_eq!(get(&agent, format!("{base}/fail")).await.0, 503);
    let v1 = proxy.signals("v1").counts();
    assert_eq!(
        v1.codes.iter().find(|(c, _)| *c == 504).map(|(_, n)| *n),
        Some(1)
    );
    assert_eq!(v1.server_errors, 2);
    assert_eq!(v1.in_flight, 0);

    // The exposition, as Prometheus scrapes it.
    let metrics = proxy
        .serve_metrics("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics listener");
    let (status, text) = get(&agent, format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    for line in [
        r#"maestro_proxy_requests_total{service="hello-service",version="v2",code="502"} 5"#,
        r#"maestro_proxy_requests_total{service="hello-service",version="v1",code="503"} 1"#,
        r#"maestro_proxy_request_duration_seconds_count{service="hello-service",version="v1"} 7"#,
        r#"maestro_proxy_in_flight{service="hello-service",version="v1"} 0"#,
        r#"maestro_proxy_route_weight{service="hello-service",version="v1"} 1"#,
        "# TYPE maestro_proxy_request_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    let slow = proxy.signals("v1").samples_since(0);
    assert!(
        slow.iter()
            .any(|s| s.status == 504 && s.latency_us >= 300_000),
        "{slow:?}"
    );
    assert_eq!(get(&agent, format!("http://{metrics}/other")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let a = upstream("v1").await;
    let proxy = started(
        Route {
            stable: up("v1", a),
            canary: None,
            canary_weight: 0,
        },
        Options {
            client_header_timeout: std::time::Duration::from_secs(1),
            ..Options::default()
        },
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    // Closed by the proxy (an error answer, then end of stream), long before this limit.
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the slow client still holds its connection");
}
