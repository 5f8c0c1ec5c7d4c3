//! Each request's trace: its context is task-local while it is served, so every log line
//! written for it carries `trace_id` and `span_id`; and when `OTEL_EXPORTER_OTLP_*`
//! configures an exporter, each sampled request becomes a server span, batched (512
//! spans or `OTEL_BSP_SCHEDULE_DELAY`, 5 s) and sent by a task of its own. A full queue drops spans and counts them
//! rather than slowing requests; an unreachable collector is logged, never fatal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use maestro_telemetry::otlp::Exporter;
use maestro_telemetry::{Span, TraceParent};
use serde_json::json;

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// Serves `f` with `context` as the current request's trace.
pub async fn scope<F: std::future::Future>(context: TraceParent, f: F) -> F::Output {
    CURRENT.scope(context, f).await
}

/// The trace and span id of the request being served, if any.
#[must_use]
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|c| *c).ok()
}

/// The most spans waiting for export; more are dropped (and counted).
const QUEUE: usize = 8_192;
/// Spans per export request.
const BATCH: usize = 512;
/// The longest a span waits for export by default (OpenTelemetry's
/// `OTEL_BSP_SCHEDULE_DELAY`, 5 s).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

/// Where finished request spans go.
#[derive(Debug, Clone)]
pub struct Spans {
    tx: tokio::sync::mpsc::Sender<Span>,
    dropped: Arc<AtomicU64>,
}

impl Spans {
    /// Starts the export task for `exporter` on the current runtime: a batch leaves when
    /// it is full or `delay` after the last one.
    #[must_use]
    pub fn start(exporter: Exporter, delay: Duration) -> Spans {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(export(exporter, delay, rx, Arc::clone(&dropped)));
        Spans { tx, dropped }
    }

    /// Queues a span; never waits.
    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn export(
    exporter: Exporter,
    delay: Duration,
    mut rx: tokio::sync::mpsc::Receiver<Span>,
    dropped: Arc<AtomicU64>,
) {
    let exporter = Arc::new(exporter);
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    let mut open = true;
    while open {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(s) => batch.push(s),
                    None => { open = false; break; }
                },
                () = &mut deadline => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let e = Arc::clone(&exporter);
        let sent = tokio::task::spawn_blocking(move || e.export(&spans)).await;
        let lost = dropped.swap(0, Ordering::Relaxed);
        match sent {
            Ok(Ok(())) if lost == 0 => {}
            Ok(Ok(())) => crate::log::event(
                "warn",
                "spans dropped: the export queue was full",
                &[("dropped", json!(lost))],
            ),
            Ok(Err(err)) => crate::log::event(
                "warn",
                "spans not exported",
                &[("error", json!(err.to_string())), ("dropped", json!(lost))],
            ),
            Err(err) => crate::log::event(
                "error",
                "span export task failed",
                &[("error", json!(err.to_string()))],
            ),
        }
    }
}
