//! JUnit XML reports (the de-facto format: `<testsuites>`/`<testsuite>`/`<testcase>` with
//! `<failure>`, `<error>` and `<skipped>` children), read with a size limit.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Largest report read.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// One test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    pub suite: String,
    pub classname: String,
    pub name: String,
    /// `passed`, `failed`, `error` or `skipped`.
    pub status: &'static str,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// Report parsing failures.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    #[error("report is larger than {} MiB", MAX_REPORT_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("malformed JUnit XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .filter_map(Result::ok)
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn seconds_to_ms(s: Option<String>) -> i64 {
    s.and_then(|t| t.trim().replace(',', "").parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map_or(0, |t| {
            #[expect(clippy::cast_possible_truncation, reason = "test durations fit easily")]
            let ms = (t * 1000.0).round() as i64;
            ms
        })
}

/// Parses a JUnit XML document.
///
/// # Errors
/// When the document is too large or not well-formed XML.
pub fn parse(xml: &[u8]) -> Result<Vec<TestCase>, JunitError> {
    if xml.len() as u64 > MAX_REPORT_BYTES {
        return Err(JunitError::TooLarge);
    }
    let mut reader = Reader::from_reader(xml);
    let mut suites: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| JunitError::Xml {
                position: reader.buffer_position(),
                message: e.to_string(),
            })?;
        match ev {
            Event::Start(e) if e.name().as_ref() == "testsuite" => {
                suites.push(attr(&e, "name").unwrap_or_default());
            }
            Event::End(e) if e.name().as_ref() == "testsuite" => {
                suites.pop();
            }
            Event::Start(e) if e.name().as_ref() == "testcase" => {
                current = Some(case(&e, &suites));
            }
            Event::Empty(e) if e.name().as_ref() == "testcase" => {
                out.push(case(&e, &suites));
            }
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), "failure" | "error" | "skipped") =>
            {
                if let Some(c) = current.as_mut() {
                    let kind = e.name().as_ref().to_owned();
                    c.status = match kind.as_str() {
                        "failure" => "failed",
                        "error" => "error",
                        _ if c.status == "passed" => "skipped",
                        _ => c.status,
                    };
                    if c.message.is_none() {
                        c.message = attr(&e, "message").map(|m| truncate(&m));
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == "testcase" => {
                if let Some(c) = current.take() {
                    out.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn case(e: &BytesStart<'_>, suites: &[String]) -> TestCase {
    TestCase {
        suite: suites.last().cloned().unwrap_or_default(),
        classname: attr(e, "classname").unwrap_or_default(),
        name: attr(e, "name").unwrap_or_default(),
        status: "passed",
        duration_ms: seconds_to_ms(attr(e, "time")),
        message: None,
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statuses_suites_and_times() {
        let xml = br#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="unit" tests="4">
    <testcase classname="app.Test" name="ok" time="0.012"/>
    <testcase classname="app.Test" name="bad" time="1.5"><failure message="expected 2, got 3">trace</failure></testcase>
    <testcase classname="app.Test" name="boom"><error message="KeyError"/></testcase>
    <testcase classname="app.Test" name="later"><skipped/></testcase>
  </testsuite>
</testsuites>"#;
        let cases = parse(xml).expect("parse");
        let got: Vec<(&str, &str, i64)> = cases
            .iter()
            .map(|c| (c.name.as_str(), c.status, c.duration_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("ok", "passed", 12),
                ("bad", "failed", 1500),
                ("boom", "error", 0),
                ("later", "skipped", 0)
            ]
        );
        assert_eq!(cases[1].message.as_deref(), Some("expected 2, got 3"));
        assert_eq!(cases[0].suite, "unit");
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        assert!(parse(b"<testsuite><testcase name='x'></testsuite>").is_err());
    }
}
