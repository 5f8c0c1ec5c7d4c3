//! Verification: recompute the tree from the entries, compare every stored hash, check
//! every signed checkpoint, and say where the log first goes wrong.

use std::collections::BTreeSet;

use serde::Serialize;
use tlog_tiles::Hash;

use crate::backend::{Backend, Stored};
use crate::entry::{Entry, Outcome};
use crate::keys::Trust;
use crate::tree::Frontier;
use crate::{AuditError, b64};

/// Problems listed before verification stops reporting (the first is what matters).
const MAX_PROBLEMS: usize = 20;
const PAGE: usize = 8192;

/// One thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The first entry affected, when it can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    pub message: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub origin: Option<String>,
    pub size: u64,
    /// Signed checkpoints whose signature and tree head both checked out.
    pub checkpoints: u64,
    /// Checkpoints an auditor supplied that were checked against the log.
    pub external: u64,
    /// Keys whose signatures verified (`name+id`).
    pub signers: BTreeSet<String>,
    /// Every key the log introduced by a rotation, trusted from then on: the entry and the
    /// verifier key. A rotation counts only when the checkpoint covering it is signed by
    /// the key trusted before it and by the new key.
    pub key_introductions: Vec<KeyIntroduction>,
    /// The root hash of the whole log (base64).
    pub root: String,
    pub problems: Vec<Problem>,
}

/// A key the log rotated to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyIntroduction {
    pub index: u64,
    pub vkey: String,
}

impl Report {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The lowest entry index named by any problem.
    #[must_use]
    pub fn first_bad_index(&self) -> Option<u64> {
        self.problems.iter().filter_map(|p| p.index).min()
    }
}

/// A checkpoint an auditor kept (from an earlier export, a witness, a release bundle).
struct External {
    label: String,
    size: u64,
    root: Hash,
}

/// What is checked of one entry on its own: parsing, canonical form, its time, its leaf
/// hash, and (in a store) the query columns against the entry.
pub(crate) struct Pre {
    parsed: Result<Parsed, String>,
    leaf: Hash,
    column_problems: Vec<String>,
}

struct Parsed {
    index: u64,
    time: String,
    time_us: Result<i64, String>,
    rotates_to: Option<String>,
}

impl Pre {
    pub(crate) fn of(body: &[u8], stored: Option<&Stored>) -> Pre {
        let leaf = tlog_tiles::record_hash(body);
        let mut column_problems = Vec::new();
        let parsed = Entry::parse(body).map(|e| {
            let time_us = e.time_us();
            if let Some(s) = stored {
                columns(s, &e, time_us.as_ref().ok().copied(), &mut column_problems);
            }
            Parsed {
                index: e.index,
                rotates_to: (e.action == "key.rotate" && e.result == Outcome::Success)
                    .then(|| {
                        e.params
                            .get("vkey")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned)
                    })
                    .flatten(),
                time: e.time,
                time_us,
            }
        });
        Pre {
            parsed,
            leaf,
            column_problems,
        }
    }
}

/// [`Pre::of`] for a page of stored entries, on every core.
fn pre_page(page: &[Stored]) -> Vec<Pre> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if threads < 2 || page.len() < 256 {
        return page.iter().map(|s| Pre::of(&s.body, Some(s))).collect();
    }
    let chunk = page.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = page
            .chunks(chunk)
            .map(|c| {
                scope.spawn(move || {
                    c.iter()
                        .map(|s| Pre::of(&s.body, Some(s)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Feeds entries in order and checks them as they come.
pub(crate) struct Checker {
    trust: Trust,
    pub(crate) frontier: Frontier,
    last_time: Option<i64>,
    /// `key.rotate` entries not yet covered by a trusted checkpoint.
    pending_keys: Vec<(u64, String)>,
    /// Size of the last checkpoint that verified and matched.
    last_good: u64,
    /// Lowest index a per-entry check flagged since `last_good`.
    flagged: Option<u64>,
    externals: Vec<External>,
    next_external: usize,
    pub(crate) report: Report,
}

impl Checker {
    pub(crate) fn new(trust: &Trust, external: &[(String, String)]) -> Checker {
        let mut report = Report::default();
        let mut externals = Vec::new();
        for (label, note) in external {
            match trust.verify(note) {
                Ok(v) => externals.push(External {
                    label: label.clone(),
                    size: v.size,
                    root: v.root,
                }),
                Err(e) => report.problems.push(Problem {
                    index: None,
                    message: format!("checkpoint {label}: {e}"),
                }),
            }
        }
        externals.sort_by_key(|e| e.size);
        Checker {
            trust: trust.clone(),
            frontier: Frontier::new(),
            last_time: None,
            pending_keys: Vec::new(),
            last_good: 0,
            flagged: None,
            externals,
            next_external: 0,
            report,
        }
    }

    pub(crate) fn problem(&mut self, index: Option<u64>, message: String) {
        if let Some(i) = index {
            self.flagged = Some(self.flagged.map_or(i, |f| f.min(i)));
        }
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(Problem { index, message });
        }
    }

    /// Checks the entry at `position` and adds it to the tree; returns the hashes it
    /// adds to the stored tree.
    pub(crate) fn entry(&mut self, position: u64, body: &[u8]) -> Vec<Hash> {
        self.checked(position, Pre::of(body, None))
    }

    /// [`Checker::entry`] for an entry whose independent checks were done already
    /// (possibly on another thread).
    pub(crate) fn checked(&mut self, position: u64, pre: Pre) -> Vec<Hash> {
        match &pre.parsed {
            Err(why) => self.problem(
                Some(position),
                format!(
                    "entry {position} is not a valid entry ({why}): it was changed after it was written"
                ),
            ),
            Ok(p) => {
                if p.index != position {
                    self.problem(
                        Some(position.min(p.index)),
                        format!(
                            "entry at position {position} says it is entry {}: entries were reordered or removed",
                            p.index
                        ),
                    );
                }
                match p.time_us {
                    Ok(t) => {
                        if self.last_time.is_some_and(|l| t < l) {
                            self.problem(
                                Some(position),
                                format!(
                                    "entry {position} is dated {}, earlier than the entry before it",
                                    p.time
                                ),
                            );
                        }
                        self.last_time = Some(t);
                    }
                    Err(ref why) => {
                        self.problem(Some(position), format!("entry {position}: {why}"));
                    }
                }
                if let Some(v) = &p.rotates_to {
                    self.pending_keys.push((position, v.clone()));
                }
            }
        }
        for c in pre.column_problems {
            self.problem(Some(position), c);
        }
        let stored = self.frontier.push_hash(pre.leaf);
        self.check_externals();
        stored
    }

    fn check_externals(&mut self) {
        let size = self.frontier.size();
        while let Some(x) = self.externals.get(self.next_external) {
            if x.size > size {
                break;
            }
            if x.size == size {
                if x.root == self.frontier.root() {
                    self.report.external += 1;
                } else {
                    let (label, from) = (x.label.clone(), self.last_good);
                    self.problem(
                        Some(self.flagged.unwrap_or(from)),
                        format!(
                            "fork: checkpoint {label} for size {size} has a different tree head than this log at that size: the log was rewritten after that checkpoint was issued"
                        ),
                    );
                }
            }
            self.next_external += 1;
        }
    }

    /// Checks a signed checkpoint for the current size.
    pub(crate) fn checkpoint(&mut self, note: &str, origin: Option<&str>) {
        let size = self.frontier.size();
        let v = match self.trust.verify(note) {
            Ok(v) => v,
            Err(e) => {
                self.problem(None, format!("checkpoint for size {size}: {e}"));
                return;
            }
        };
        if v.size != size {
            self.problem(
                None,
                format!(
                    "the checkpoint stored for size {size} is for size {}",
                    v.size
                ),
            );
            return;
        }
        if origin.is_some_and(|o| o != v.origin) {
            self.problem(
                None,
                format!("checkpoint for size {size} is for log `{}`", v.origin),
            );
        }
        if v.root != self.frontier.root() {
            let from = self.last_good;
            let first = self.flagged.unwrap_or(from);
            let range = if size - from <= 1 {
                format!("entry {from}")
            } else {
                format!("entries {from}..{}", size - 1)
            };
            self.problem(
                Some(first),
                format!(
                    "the signed checkpoint for size {size} does not match the log: {range} were changed, removed or reordered (or the key signed a different tree: a fork)"
                ),
            );
            return;
        }
        self.report.checkpoints += 1;
        self.report.signers.extend(v.signers);
        self.last_good = size;
        self.flagged = None;
        let (now, later): (Vec<_>, Vec<_>) =
            self.pending_keys.drain(..).partition(|(i, _)| *i < size);
        self.pending_keys = later;
        for (i, vkey) in now {
            // The checkpoint covering a rotation is signed by the new key too (it verified
            // with a key trusted before it): an entry appended with the old key alone does
            // not introduce anything.
            let cosigned = crate::Trust::new(&[vkey.as_str()]).map(|t| t.verify(note).is_ok());
            match cosigned {
                Err(e) => self.problem(Some(i), format!("entry {i} rotates to a bad key: {e}")),
                Ok(false) => self.problem(
                    Some(i),
                    format!(
                        "entry {i} is a key rotation the new key never signed (the checkpoint covering it is signed by the old key alone): a planted rotation, not trusted"
                    ),
                ),
                Ok(true) => match self.trust.add(&vkey) {
                    Ok(()) => self
                        .report
                        .key_introductions
                        .push(KeyIntroduction { index: i, vkey }),
                    Err(e) => {
                        self.problem(Some(i), format!("entry {i} rotates to a bad key: {e}"));
                    }
                },
            }
        }
    }

    pub(crate) fn finish(mut self, origin: Option<String>) -> Report {
        let size = self.frontier.size();
        for x in &self.externals[self.next_external..] {
            let message = format!(
                "checkpoint {} is for size {}, but the log holds only {size} entries: entries were removed from its end",
                x.label, x.size
            );
            if self.report.problems.len() < MAX_PROBLEMS {
                self.report.problems.push(crate::Problem {
                    index: Some(size),
                    message,
                });
            }
        }
        self.report.origin = origin;
        self.report.size = size;
        self.report.root = b64(&self.frontier.root());
        self.report
    }
}

/// Verifies a log in a store.
pub(crate) fn store(
    b: &mut dyn Backend,
    trust: &Trust,
    external: &[(String, String)],
) -> Result<Report, AuditError> {
    let origin = b.meta("origin")?;
    let mut c = Checker::new(trust, external);
    let mut next = 0u64;
    let mut hashes: std::collections::VecDeque<(u64, Hash)> = Default::default();
    let mut next_hash = 0u64;
    let mut checkpoints: std::collections::VecDeque<(u64, String)> = Default::default();
    let mut cp_after: Option<u64> = None;
    let fetch_checkpoints = |b: &mut dyn Backend,
                             q: &mut std::collections::VecDeque<(u64, String)>,
                             after: &mut Option<u64>|
     -> Result<(), AuditError> {
        if q.is_empty() {
            let page = b.checkpoints(*after, PAGE)?;
            if let Some((s, _)) = page.last() {
                *after = Some(*s);
            }
            q.extend(page);
        }
        Ok(())
    };
    fetch_checkpoints(b, &mut checkpoints, &mut cp_after)?;
    let mut page = b.entries(next, PAGE)?;
    while let Some(last) = page.last() {
        // Check this page on the other cores while this thread reads the next one: the
        // store's round trips overlap with parsing and hashing.
        let from = last.index + 1;
        let (pres, following) = std::thread::scope(|scope| {
            let checking = scope.spawn(|| pre_page(&page));
            let following = b.entries(from, PAGE);
            (checking.join().unwrap_or_default(), following)
        });
        if pres.len() != page.len() {
            return Err(AuditError::Corrupt(
                "a verification thread failed".to_owned(),
            ));
        }
        for (s, pre) in page.iter().zip(pres) {
            let position = c.frontier.size();
            if s.index != next {
                c.problem(
                    Some(next),
                    format!(
                        "entry {next} is missing (deleted after it was written); the next stored entry is {}",
                        s.index
                    ),
                );
            }
            next = s.index + 1;
            let produced = c.checked(position, pre);
            // The stored tree must hold exactly the hashes the entries produce.
            let mut differs = false;
            for h in produced {
                if hashes.is_empty() {
                    hashes.extend(b.hashes(next_hash, PAGE)?);
                }
                match hashes.pop_front() {
                    Some((ix, stored)) if ix == next_hash && stored == h => {}
                    _ => differs = true,
                }
                next_hash += 1;
            }
            if differs {
                c.problem(
                    Some(position),
                    format!(
                        "entry {position} does not match the stored tree: it (or the tree) was changed after it was written"
                    ),
                );
                // Realign with the stored hashes for the next entry.
                hashes.retain(|(ix, _)| *ix >= next_hash);
            }
            fetch_checkpoints(b, &mut checkpoints, &mut cp_after)?;
            while checkpoints
                .front()
                .is_some_and(|(sz, _)| *sz <= c.frontier.size())
            {
                if let Some((sz, note)) = checkpoints.pop_front() {
                    if sz == c.frontier.size() {
                        c.checkpoint(&note, origin.as_deref());
                    } else {
                        c.problem(
                            None,
                            format!("the checkpoint for size {sz} was found out of order"),
                        );
                    }
                }
                fetch_checkpoints(b, &mut checkpoints, &mut cp_after)?;
            }
        }
        page = following?;
    }
    let size = c.frontier.size();
    if let Some((sz, _)) = checkpoints.front() {
        c.problem(
            Some(size),
            format!(
                "a checkpoint was signed for size {sz}, but the log holds only {size} entries: entries were removed from its end"
            ),
        );
    } else if c.report.checkpoints > 0 || size > 0 {
        let covered = c.last_good;
        if covered < size && c.report.problems.is_empty() {
            c.problem(
                Some(covered),
                format!(
                    "entries {covered}..{} are not covered by any signed checkpoint (written around Maestro?)",
                    size - 1
                ),
            );
        }
    }
    if !b.hashes(next_hash, 1)?.is_empty() {
        c.problem(
            Some(size),
            "the stored tree has hashes beyond the last entry: entries were removed from the end"
                .to_owned(),
        );
    }
    if size > 0 && c.report.checkpoints == 0 && c.report.problems.is_empty() {
        c.problem(None, "no checkpoint verified".to_owned());
    }
    Ok(c.finish(origin))
}

/// The columns kept beside an entry for queries must say what the entry says.
fn columns(s: &Stored, e: &Entry, time_us: Option<i64>, out: &mut Vec<String>) {
    let time_ok = time_us == Some(s.time_us);
    let checks = [
        (
            "actor",
            s.actor == e.actor.id,
            &s.actor,
            e.actor.id.as_str(),
        ),
        ("action", s.action == e.action, &s.action, e.action.as_str()),
        ("target", s.target == e.target, &s.target, e.target.as_str()),
        (
            "result",
            s.result == e.result.as_str(),
            &s.result,
            e.result.as_str(),
        ),
        ("tenant", s.tenant == e.tenant(), &s.tenant, e.tenant()),
    ];
    for (name, same, stored, said) in checks {
        if !same {
            out.push(format!(
                "entry {}: the stored `{name}` column says `{stored}`, the entry says `{said}` (edited to mislead queries)",
                s.index
            ));
        }
    }
    if !time_ok {
        out.push(format!(
            "entry {}: the stored time column differs from the entry's time `{}`",
            s.index, e.time
        ));
    }
    if s.run != e.links.run || s.artifact != e.links.artifact {
        out.push(format!(
            "entry {}: the stored links differ from the entry's",
            s.index
        ));
    }
}
