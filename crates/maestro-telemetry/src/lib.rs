//! Telemetry: the W3C trace context (`traceparent`), spans as Maestro records them, and
//! their export as OTLP/HTTP JSON (the OpenTelemetry protocol's published JSON mapping)
//! to a collector.
//!
//! Only `traceparent` crosses process boundaries: `maestro run` reads `TRACEPARENT` from
//! its environment (a CI system's trace), makes its run span a child of it, and hands each
//! job process a `TRACEPARENT` naming that job's span.

mod context;
pub mod otlp;
mod span;
#[cfg(feature = "testing")]
pub mod testing;

pub use context::{ContextError, SpanId, TraceId, TraceParent};
pub use span::{Attr, Span, SpanKind, Status, now_ns};
