//! The proxy's cost (`bench/proxy`): wrk on loopback against a small upstream directly and
//! through the proxy (stable plus a canary at 5%, both the same upstream program), in the
//! same run. A saturating load gives throughput (the ratio is what the proxy costs), a
//! paced load the latency a client sees; the proxy's added latency is the difference of
//! the p50s (target ≤ 0.3 ms).
//!
//! The upstreams and the proxy each run on a single-threaded runtime of their own, so
//! with wrk the two cores are shared as they would be on a small VM.
//!
//! `--duration S` (default 5), `--connections N` (default 50), `--rounds N` (default 3),
//! `--rate R` (default 2000).

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use maestro_bench::{Load, Script, Wrk, middle};
use maestro_proxy::{Options, Proxy, Route, Upstream};

/// A runtime on a thread of its own, kept alive for the benchmark.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An upstream answering a small JSON greeting, on its own thread.
fn upstream() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"{\"message\":\"Hello, world!\",\"lang\":\"en\"}",
                            ))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("upstream address")
}

fn row(label: &str, direct: Load, proxied: Load, saturated: bool) {
    let last = if saturated {
        format!("{:.2}", proxied.rps / direct.rps)
    } else {
        format!("+{:.3} ms", proxied.p50_ms - direct.p50_ms)
    };
    println!(
        "{label:<28} {:>10.0} {:>8.3} {:>8.3} | {:>10.0} {:>8.3} {:>8.3} | {last:>10}",
        direct.rps, direct.p50_ms, direct.p99_ms, proxied.rps, proxied.p50_ms, proxied.p99_ms
    );
    if direct.errors + proxied.errors > 0 {
        println!(
            "  ({} failed requests direct, {} through the proxy)",
            direct.errors, proxied.errors
        );
    }
}

fn main() {
    let flags = maestro_bench::Flags::from_env();
    let a = maestro_bench::LoadArgs::parse(&flags, 5, 50, 2000);
    if !maestro_bench::wrk_installed() {
        println!("wrk is not installed: apt-get install wrk");
        std::process::exit(2);
    }
    let (stable, canary) = (upstream(), upstream());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let proxy = Proxy::start(
                "127.0.0.1:0".parse().expect("addr"),
                Route {
                    stable: Upstream {
                        version: "v1".into(),
                        addr: stable,
                    },
                    canary: Some(Upstream {
                        version: "v2".into(),
                        addr: canary,
                    }),
                    canary_weight: 500,
                },
                Options {
                    service: "bench".into(),
                    ..Options::default()
                },
            )
            .await
            .expect("proxy");
            tx.send(proxy.addr()).expect("send");
            std::future::pending::<()>().await;
        });
    });
    let proxy = rx.recv().expect("proxy address");
    let urls = [
        format!("http://{stable}/greet?name=bench"),
        format!("http://{proxy}/greet?name=bench"),
    ];
    let load = Wrk {
        threads: 1,
        connections: a.connections,
        duration_s: a.duration,
        headers: Vec::new(),
    };
    let warm = Wrk {
        duration_s: 1,
        ..load.clone()
    };
    for url in &urls {
        let _ = warm.saturate(url);
    }
    println!(
        "proxy: wrk -t1 -c{} -d{}s, saturating (median of {} alternating rounds) and paced at {} req/s; upstream and proxy on one thread each; canary weight 5%",
        a.connections, a.duration, a.rounds, a.rate
    );
    println!(
        "{:<28} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>10}",
        "load", "direct r/s", "p50 ms", "p99 ms", "proxy r/s", "p50 ms", "p99 ms", "ratio/added"
    );
    let mut rounds: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..a.rounds {
        for (i, url) in urls.iter().enumerate() {
            rounds[i].push(load.saturate(url));
        }
    }
    row("saturating", middle(&rounds[0]), middle(&rounds[1]), true);
    let script = Script::paced();
    let mut paced: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..a.rounds {
        for (i, url) in urls.iter().enumerate() {
            paced[i].push(load.paced(url, a.rate, &script));
        }
    }
    row(
        &format!("paced {} req/s", a.rate),
        middle(&paced[0]),
        middle(&paced[1]),
        false,
    );
    println!(
        "ratio = proxied ÷ direct throughput; added = proxied p50 − direct p50 (target ≤ 0.3 ms)"
    );
}
