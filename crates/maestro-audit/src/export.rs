//! Exports an auditor can verify offline, with nothing but the log's verifier key.
//!
//! The file is JSON Lines. The first line is the header:
//!
//! ```json
//! {"format":"maestro-audit-export/1","origin":"…","size":42,"from":0,"to":42,"checkpoint":"<signed note>"}
//! ```
//!
//! then one line per entry, in order: `{"index":7,"entry":{…}}`, where `entry` is the
//! entry's canonical bytes exactly as hashed, and — when the export is not the whole log —
//! `"proof":[…]`, its inclusion proof in the signed tree. A whole-log export also carries
//! every signed checkpoint, each on its own line (`{"checkpoint":"…"}`) right after the
//! entry that completes its tree: it is checked by recomputing the tree at every
//! checkpoint (which locates a change to the commit it was in); a partial one entry by
//! entry through the proofs.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::verify::{Checker, Report};
use crate::{AuditError, Log, Trust, b64, unb64};

/// The header's `format`.
pub const FORMAT: &str = "maestro-audit-export/1";
/// The longest line read from an export (an entry is at most 64 KiB; its proof ~2 KiB).
pub const MAX_LINE_BYTES: usize = 256 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    origin: String,
    size: u64,
    from: u64,
    to: u64,
    checkpoint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    proof: Option<Vec<String>>,
    #[serde(default, borrow)]
    entry: Option<&'a RawValue>,
    #[serde(default)]
    checkpoint: Option<String>,
}

fn io(e: std::io::Error) -> AuditError {
    AuditError::Io {
        path: "export".to_owned(),
        source: e,
    }
}

pub(crate) fn write(
    log: &mut Log,
    out: &mut dyn Write,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<(u64, u64), AuditError> {
    let (size, checkpoint) = log
        .checkpoint()?
        .ok_or_else(|| AuditError::NotFound("the audit log is empty: nothing to export".into()))?;
    let origin = log.origin()?.unwrap_or_default();
    let from = from.unwrap_or(0);
    let to = to.unwrap_or(size).min(size);
    if from > to {
        return Err(AuditError::NotFound(format!(
            "--from {from} is after --to {to}"
        )));
    }
    let whole = from == 0 && to == size;
    let header = Header {
        format: FORMAT.to_owned(),
        origin,
        size,
        from,
        to,
        checkpoint,
    };
    serde_json::to_writer(&mut *out, &header).map_err(|e| AuditError::Export(e.to_string()))?;
    out.write_all(b"\n").map_err(io)?;
    let mut next = from;
    let mut checkpoints: std::collections::VecDeque<(u64, String)> = Default::default();
    let mut cp_after = None;
    while next < to {
        let page = log.backend().entries(next, 4096)?;
        if page.is_empty() {
            break;
        }
        for s in page {
            if s.index >= to {
                next = to;
                break;
            }
            write!(out, "{{\"index\":{}", s.index).map_err(io)?;
            if !whole {
                let p = log.prove(s.index, Some(size))?;
                let proof = serde_json::to_string(&p.proof)
                    .map_err(|e| AuditError::Export(e.to_string()))?;
                write!(out, ",\"proof\":{proof}").map_err(io)?;
            }
            out.write_all(b",\"entry\":").map_err(io)?;
            out.write_all(&s.body).map_err(io)?;
            out.write_all(b"}\n").map_err(io)?;
            next = s.index + 1;
            if whole {
                if checkpoints.is_empty() {
                    let page = log.backend().checkpoints(cp_after, 4096)?;
                    cp_after = page.last().map(|(s, _)| *s).or(cp_after);
                    checkpoints.extend(page);
                }
                while checkpoints.front().is_some_and(|(sz, _)| *sz <= next) {
                    if let Some((sz, note)) = checkpoints.pop_front()
                        && sz == next
                    {
                        serde_json::to_writer(&mut *out, &serde_json::json!({"checkpoint": note}))
                            .map_err(|e| AuditError::Export(e.to_string()))?;
                        out.write_all(b"\n").map_err(io)?;
                    }
                }
            }
        }
    }
    out.flush().map_err(io)?;
    Ok((to - from, size))
}

/// Verifies an export offline against trusted keys (and checkpoints kept earlier).
///
/// # Errors
/// When the export cannot be read at all (not an export, a line too long); what is wrong
/// with its contents is in the report.
pub fn verify(
    input: &mut dyn BufRead,
    trust: &Trust,
    external: &[(String, String)],
) -> Result<Report, AuditError> {
    let mut line = Vec::new();
    let mut n = 0usize;
    let mut read = |line: &mut Vec<u8>| -> Result<bool, AuditError> {
        line.clear();
        let got = std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', line)
            .map_err(io)?;
        n += 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditError::Export(format!(
                "line {n} is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(got > 0)
    };
    if !read(&mut line)? {
        return Err(AuditError::Export("the export is empty".to_owned()));
    }
    let header: Header = serde_json::from_slice(&line).map_err(|e| {
        AuditError::Export(format!(
            "line 1 is not a {FORMAT} header ({e}); write exports with `maestro audit export`"
        ))
    })?;
    if header.format != FORMAT {
        return Err(AuditError::Export(format!(
            "line 1: format `{}` is not `{FORMAT}`",
            header.format
        )));
    }
    let whole = header.from == 0 && header.to == header.size;
    if !whole && !external.is_empty() {
        return Err(AuditError::Export(format!(
            "this export holds entries {}..{} of {}: kept checkpoints can only be compared with a whole-log export",
            header.from, header.to, header.size
        )));
    }
    let mut c = Checker::new(trust, external);
    let signed = match trust.verify(&header.checkpoint) {
        Ok(v) if v.size == header.size && v.origin == header.origin => Some(v),
        Ok(v) => {
            c.problem(
                None,
                format!(
                    "the header says log `{}` of {} entries; its checkpoint is for `{}` of {}",
                    header.origin, header.size, v.origin, v.size
                ),
            );
            None
        }
        Err(e) => {
            c.problem(None, format!("the export's checkpoint: {e}"));
            None
        }
    };
    let mut expected = header.from;
    let mut lineno = 1usize;
    let mut last_checkpoint = None;
    while read(&mut line)? {
        lineno += 1;
        if line.is_empty() {
            continue;
        }
        let l: Line<'_> = match serde_json::from_slice(&line) {
            Ok(l) => l,
            Err(e) => {
                c.problem(
                    Some(expected),
                    format!("line {lineno} is not an export entry: {e}"),
                );
                expected += 1;
                continue;
            }
        };
        if let Some(note) = &l.checkpoint {
            if whole {
                c.checkpoint(note, Some(&header.origin));
                last_checkpoint = Some(c.frontier.size());
            }
            continue;
        }
        let (Some(index), Some(entry)) = (l.index, l.entry) else {
            c.problem(
                Some(expected),
                format!("line {lineno} is neither an entry nor a checkpoint"),
            );
            expected += 1;
            continue;
        };
        if index != expected {
            c.problem(
                Some(expected.min(index)),
                format!(
                    "line {lineno} holds entry {index}, expected {expected}: entries were removed or reordered"
                ),
            );
        }
        let body = entry.get().as_bytes();
        c.entry(expected, body);
        if !whole {
            match (&signed, &l.proof) {
                (Some(v), Some(proof)) => {
                    let leaf = tlog_tiles::record_hash(body);
                    let ok = proof
                        .iter()
                        .map(|s| unb64(s))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            tlog_tiles::check_record(&p, v.size, v.root, index, leaf)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = ok {
                        c.problem(
                            Some(index),
                            format!("entry {index} is not in the signed tree: {e}"),
                        );
                    }
                }
                (_, None) => c.problem(
                    Some(index),
                    format!(
                        "entry {} has no inclusion proof (a partial export needs one per entry)",
                        index
                    ),
                ),
                (None, Some(_)) => {}
            }
        }
        expected += 1;
    }
    if expected != header.to {
        c.problem(
            Some(expected.min(header.to)),
            format!(
                "the export should hold entries {}..{} but ends at {expected}",
                header.from, header.to
            ),
        );
    }
    let mut report = if whole {
        // The header's checkpoint is the last one; check it unless its line did.
        if signed.is_some()
            && c.frontier.size() == header.size
            && last_checkpoint != Some(header.size)
        {
            c.checkpoint(&header.checkpoint, Some(&header.origin));
        }
        c.finish(Some(header.origin.clone()))
    } else {
        let mut r = c.finish(Some(header.origin.clone()));
        if let Some(v) = &signed {
            r.checkpoints = 1;
            r.signers.extend(v.signers.iter().cloned());
            r.root = b64(&v.root);
        }
        r
    };
    report.size = header.size;
    Ok(report)
}
