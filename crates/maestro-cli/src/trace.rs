//! `maestro run`'s spans: the run, one per gate, one per job, built from the engine's
//! events and exported over OTLP/HTTP when the environment configures an endpoint.
//!
//! The run continues the trace of `TRACEPARENT` when the caller (a CI system) gives one;
//! the engine hands each job process a `TRACEPARENT` naming that job's span, so what the
//! job traces nests under it.

use std::collections::{BTreeMap, HashMap};

use maestro_engine::run::{gate_span, job_span};
use maestro_engine::{Event, Reporter};
use maestro_telemetry::{Attr, Span, SpanId, SpanKind, Status, TraceParent, now_ns};

/// Collects the spans of one run.
pub(crate) struct Tracer {
    /// The run's own span (trace id and span id).
    pub(crate) run: TraceParent,
    /// The caller's span, when `TRACEPARENT` named one.
    parent: Option<SpanId>,
    start_ns: u64,
    pipeline: String,
    run_id: Option<i64>,
    started: HashMap<String, u64>,
    jobs: Vec<Span>,
    /// Gate name → (first start, last end, failed).
    gates: BTreeMap<String, (u64, u64, bool)>,
}

impl Tracer {
    /// A tracer continuing `traceparent` (the `TRACEPARENT` value), or starting a trace.
    /// A malformed value is reported in `warning` and ignored, as the specification says.
    pub(crate) fn new(traceparent: Option<&str>) -> (Tracer, Option<String>) {
        let (run, parent, warning) = match traceparent.filter(|v| !v.trim().is_empty()) {
            None => (TraceParent::root(), None, None),
            Some(v) => match TraceParent::parse(v) {
                Ok(caller) => (
                    caller.with_span(SpanId::random()),
                    Some(caller.span_id),
                    None,
                ),
                Err(e) => (TraceParent::root(), None, Some(format!("TRACEPARENT: {e}"))),
            },
        };
        (
            Tracer {
                run,
                parent,
                start_ns: now_ns(),
                pipeline: String::new(),
                run_id: None,
                started: HashMap::new(),
                jobs: Vec::new(),
                gates: BTreeMap::new(),
            },
            warning,
        )
    }

    /// Every span of the run, the run's own first, once the run is over.
    pub(crate) fn finish(mut self, status: &str) -> Vec<Span> {
        let end = now_ns();
        let mut spans = Vec::with_capacity(self.jobs.len() + self.gates.len() + 1);
        let mut attrs = vec![
            (
                "maestro.pipeline".to_owned(),
                Attr::from(self.pipeline.as_str()),
            ),
            ("maestro.run.status".to_owned(), Attr::from(status)),
        ];
        if let Some(id) = self.run_id {
            attrs.push(("maestro.run.id".to_owned(), Attr::Int(id)));
        }
        spans.push(Span {
            trace_id: self.run.trace_id,
            span_id: self.run.span_id,
            parent: self.parent,
            name: format!("maestro run {}", self.pipeline),
            kind: SpanKind::Internal,
            start_ns: self.start_ns,
            end_ns: end,
            attributes: attrs,
            status: if status == "succeeded" {
                Status::Ok
            } else {
                Status::Error(format!("the run {status}"))
            },
        });
        for (gate, (start, stop, failed)) in &self.gates {
            spans.push(Span {
                trace_id: self.run.trace_id,
                span_id: gate_span(self.run, gate),
                parent: Some(self.run.span_id),
                name: format!("gate {gate}"),
                kind: SpanKind::Internal,
                start_ns: *start,
                end_ns: *stop,
                attributes: vec![("maestro.gate".to_owned(), Attr::from(gate.as_str()))],
                status: if *failed {
                    Status::Error(format!("gate {gate} is red"))
                } else {
                    Status::Ok
                },
            });
        }
        spans.append(&mut self.jobs);
        spans
    }
}

impl Reporter for Tracer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Started {
                run_id, pipeline, ..
            } => {
                self.run_id = Some(run_id);
                self.pipeline.clone_from(&pipeline.name);
            }
            Event::JobStarted { job, .. } => {
                // Retries extend the job's span: it starts with the first attempt.
                self.started.entry(job.name.clone()).or_insert_with(now_ns);
            }
            Event::JobFinished { job, row } => {
                let end = now_ns();
                let duration = u64::try_from(row.duration_ms).unwrap_or(0) * 1_000_000;
                let start = self
                    .started
                    .get(&job.name)
                    .copied()
                    .unwrap_or_else(|| end.saturating_sub(duration));
                let failed = matches!(row.status.as_str(), "failed" | "timed-out" | "error");
                let parent = match &row.gate {
                    Some(g) => {
                        let e = self.gates.entry(g.clone()).or_insert((start, end, false));
                        e.0 = e.0.min(start);
                        e.1 = e.1.max(end);
                        e.2 |= failed;
                        gate_span(self.run, g)
                    }
                    None => self.run.span_id,
                };
                let mut attributes = vec![
                    ("maestro.job".to_owned(), Attr::from(job.name.as_str())),
                    (
                        "maestro.job.status".to_owned(),
                        Attr::from(row.status.as_str()),
                    ),
                    ("maestro.cache".to_owned(), Attr::from(row.cache.as_str())),
                    (
                        "maestro.job.attempts".to_owned(),
                        Attr::Int(i64::try_from(row.attempts.len()).unwrap_or(0)),
                    ),
                ];
                if let Some(code) = row.exit_code {
                    attributes.push(("process.exit.code".to_owned(), Attr::Int(code.into())));
                }
                self.jobs.push(Span {
                    trace_id: self.run.trace_id,
                    span_id: job_span(self.run, &job.name),
                    parent: Some(parent),
                    name: format!("job {}", job.name),
                    kind: SpanKind::Internal,
                    start_ns: start,
                    end_ns: end,
                    attributes,
                    status: match (failed, &row.reason) {
                        (true, Some(r)) => Status::Error(r.clone()),
                        (true, None) => Status::Error(row.status.clone()),
                        (false, _) if row.status == "succeeded" => Status::Ok,
                        _ => Status::Unset,
                    },
                });
            }
            Event::GateRed { .. } | Event::Interrupted => {}
        }
    }
}

/// Sends events to two reporters.
pub(crate) struct Both<'a, A: Reporter, B: Reporter>(pub &'a mut A, pub &'a mut B);

impl<A: Reporter, B: Reporter> Reporter for Both<'_, A, B> {
    fn event(&mut self, event: Event<'_>) {
        self.0.event(event);
        self.1.event(event);
    }
}
