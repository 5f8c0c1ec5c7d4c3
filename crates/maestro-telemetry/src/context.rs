//! W3C Trace Context `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

use std::fmt;

/// 16 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// 8 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    loop {
        // Without randomness there is no unique id; a fixed one would merge traces.
        if getrandom::fill(&mut b).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = (nanos >> ((i % 16) * 8)) as u8 ^ (std::process::id() as u8);
            }
        }
        if b.iter().any(|x| *x != 0) {
            return b;
        }
    }
}

impl TraceId {
    /// A new random trace id.
    #[must_use]
    pub fn random() -> TraceId {
        TraceId(random())
    }
}

impl SpanId {
    /// A new random span id.
    #[must_use]
    pub fn random() -> SpanId {
        SpanId(random())
    }

    /// A span id derived from the trace and a name: the same run computes the same id for
    /// a job in the engine (which hands it to the job's process) and in the tracer (which
    /// records the span), without passing it around.
    #[must_use]
    pub fn derived(trace: TraceId, root: SpanId, name: &str) -> SpanId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(trace.0);
        h.update(root.0);
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        SpanId(id)
    }
}

/// Why a `traceparent` value is not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error(
        "traceparent `{0}` is not `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context); it is ignored"
    )]
    Malformed(String),
    #[error("traceparent has an all-zero trace or parent id; it is ignored")]
    ZeroId,
    #[error("traceparent version ff is forbidden; it is ignored")]
    ForbiddenVersion,
}

/// A parsed `traceparent`: the trace, the parent span, and whether it was sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

fn hex_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl TraceParent {
    /// A new trace, sampled.
    #[must_use]
    pub fn root() -> TraceParent {
        TraceParent {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: 1,
        }
    }

    /// Parses a header or `TRACEPARENT` value. Versions after `00` are read as `00` where
    /// their first four fields parse (the specification's forward compatibility).
    ///
    /// # Errors
    /// [`ContextError`] — the caller starts a new trace instead.
    pub fn parse(value: &str) -> Result<TraceParent, ContextError> {
        let v = value.trim();
        let malformed = || ContextError::Malformed(v.chars().take(80).collect());
        let parts: Vec<&str> = v.split('-').collect();
        if parts.len() < 4 {
            return Err(malformed());
        }
        let version: [u8; 1] = hex_lower(parts[0]).ok_or_else(malformed)?;
        if version[0] == 0xff {
            return Err(ContextError::ForbiddenVersion);
        }
        if version[0] == 0 && (parts.len() != 4 || v.len() != 55) {
            return Err(malformed());
        }
        let trace: [u8; 16] = hex_lower(parts[1]).ok_or_else(malformed)?;
        let span: [u8; 8] = hex_lower(parts[2]).ok_or_else(malformed)?;
        let flags: [u8; 1] = hex_lower(parts[3]).ok_or_else(malformed)?;
        if trace == [0; 16] || span == [0; 8] {
            return Err(ContextError::ZeroId);
        }
        Ok(TraceParent {
            trace_id: TraceId(trace),
            span_id: SpanId(span),
            flags: flags[0],
        })
    }

    /// The same trace with `span` as the parent (what a child process is given).
    #[must_use]
    pub fn with_span(self, span: SpanId) -> TraceParent {
        TraceParent {
            span_id: span,
            ..self
        }
    }

    /// Whether the caller sampled this trace (flag bit 0).
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_round_trips() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).expect("valid");
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.to_string(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.to_string(), s);
    }

    #[test]
    fn invalid_values_are_refused_and_say_so() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert!(
                matches!(TraceParent::parse(bad), Err(ContextError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(ContextError::ZeroId)
        );
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Err(ContextError::ZeroId)
        );
        assert_eq!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(ContextError::ForbiddenVersion)
        );
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let t = TraceParent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .expect("forward compatible");
        assert_eq!(t.span_id.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let t = TraceParent::root();
        let a = SpanId::derived(t.trace_id, t.span_id, "job:unit");
        assert_eq!(a, SpanId::derived(t.trace_id, t.span_id, "job:unit"));
        assert_ne!(a, SpanId::derived(t.trace_id, t.span_id, "job:lint"));
        assert_ne!(t.trace_id, TraceParent::root().trace_id);
    }
}
