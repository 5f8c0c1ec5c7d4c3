//! Every input from outside is bounded: a client that sends its headers or body too slowly,
//! or parks an idle connection, is cut off; connections beyond the cap are closed at once
//! while the ones in service go on; an unknown HTTP method does not become a metric label;
//! a GraphQL document cannot ask for unbounded log text.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Backend, Server};
use maestro_server::Settings;
use serde_json::json;

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (`Ok` with what it sent), or fails when it
/// keeps it open for `patience`.
fn until_closed(c: &mut TcpStream, patience: Duration) -> Result<String, String> {
    c.set_read_timeout(Some(patience)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&got).into_owned());
            }
            Err(e) => return Err(format!("still open after {patience:?} ({e}); read {got:?}")),
        }
    }
}

#[test]
fn slow_headers_slow_bodies_and_idle_connections_are_cut_off() {
    let s = Server::configured(
        &Backend::Sqlite,
        Settings {
            header_timeout_seconds: Some(1),
            body_timeout_seconds: Some(1),
            ..Settings::default()
        },
    );
    // A slowloris: headers that never end.
    let mut slow = TcpStream::connect(addr(&s)).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        .expect("write");
    until_closed(&mut slow, Duration::from_secs(60)).expect("the slow headers are cut off");

    // A keep-alive connection: answered, then closed when it idles.
    let mut idle = TcpStream::connect(addr(&s)).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let answered = until_closed(&mut idle, Duration::from_secs(60)).expect("closed when idle");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // A body that stops halfway: the request is answered with an error, not held.
    let (token, _) = s.token(&["developer"], &["runs:write"]);
    let mut body = TcpStream::connect(addr(&s)).expect("connect");
    write!(
        body,
        "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pipeline\":"
    )
    .expect("write");
    let answer = until_closed(&mut body, Duration::from_secs(60)).expect("answered, then closed");
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a refusal for the body that did not arrive: {answer}"
    );
    assert!(
        s.store().list_runs(None, 10).expect("runs").is_empty(),
        "nothing was opened"
    );
}

#[test]
fn connections_beyond_the_cap_are_closed_and_the_rest_are_served() {
    let s = Server::configured(
        &Backend::Sqlite,
        Settings {
            max_clients: Some(8),
            header_timeout_seconds: Some(600),
            ..Settings::default()
        },
    );
    // Eight parked connections hold every slot…
    let parked: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr(&s)).expect("connect"))
        .collect();
    // …so the ninth is closed at once, with no answer, once the eight are accepted.
    let t = Instant::now();
    loop {
        let mut ninth = TcpStream::connect(addr(&s)).expect("connect");
        let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        match until_closed(&mut ninth, Duration::from_secs(5)) {
            Ok(got) if got.is_empty() => break,
            // Served: the eight were not all accepted yet.
            Ok(_) | Err(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "the ninth is always served"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // The parked ones leave; the conductor serves again.
    drop(parked);
    let t = Instant::now();
    loop {
        let mut c = TcpStream::connect(addr(&s)).expect("connect");
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if until_closed(&mut c, Duration::from_secs(5)).is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unknown_methods_do_not_become_metric_labels() {
    let s = Server::start(&Backend::Sqlite, None);
    for m in ["BREW", "PROPFIND", "X-FLOOD-1", "X-FLOOD-2"] {
        let mut c = TcpStream::connect(addr(&s)).expect("connect");
        write!(
            c,
            "{m} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        until_closed(&mut c, Duration::from_secs(60)).expect("answered");
    }
    let (token, _) = s.token(&["operator"], &["metrics:read"]);
    let (status, _, text) = s.get_text("/metrics", &token, None);
    assert_eq!(status, 200, "{text}");
    for m in ["BREW", "PROPFIND", "X-FLOOD"] {
        assert!(!text.contains(m), "{m} is a label value: {text}");
    }
    assert!(text.contains("method=\"_OTHER\""), "{text}");
}

#[test]
fn a_graphql_document_cannot_ask_for_unbounded_log_text() {
    let s = Server::with(&Backend::Sqlite, None, Some("development"));
    let (token, _) = s.token(&["viewer"], &["runs:read"]);
    // 80 bytes that asked for every job's last 1,000 log lines of 500 runs.
    let (status, body) = s.graphql(
        &token,
        &json!({"query": "{ runs(limit: 500) { jobs { name logTail(lines: 1000) } } }"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().to_lowercase().contains("complex"),
        "refused for its cost: {body}"
    );
    // A bounded one runs.
    let (status, body) = s.graphql(
        &token,
        &json!({"query": "{ runs(limit: 10) { jobs { name logTail(lines: 50) } } }"}),
    );
    assert_eq!(status, 200, "{body}");
}
