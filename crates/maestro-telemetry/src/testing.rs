//! For tests (feature `testing`): a local OTLP/HTTP endpoint that accepts exports and
//! hands each over as (path, content type, body).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;

/// Listens on a loopback port; returns its base URL (`http://127.0.0.1:N`, for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) and the exports as they arrive. Every export is
/// answered `200 {}`.
///
/// # Panics
/// When no loopback port can be bound.
#[must_use]
pub fn receiver() -> (String, mpsc::Receiver<(String, String, String)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let base = format!(
        "http://{}",
        listener.local_addr().expect("the bound address")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let Some(export) = read(&conn) else { continue };
            let mut conn = conn;
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
            let _ = tx.send(export);
        }
    });
    (base, rx)
}

fn read(conn: &std::net::TcpStream) -> Option<(String, String, String)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (mut len, mut ctype) = (0usize, String::new());
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok()?,
                "content-type" => v.trim().clone_into(&mut ctype),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((path, ctype, String::from_utf8(body).ok()?))
}
