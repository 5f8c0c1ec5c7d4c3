//! Comparing the outputs of two builds of the same job: which files differ, and where.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files larger than this are compared by digest only (no first-difference search).
const MAX_DIFF_BYTES: u64 = 64 * 1024 * 1024;

/// Where two versions of a file first differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FirstDifference {
    /// Both are text: the first differing line (1-based) and the two lines.
    Line { line: usize, a: String, b: String },
    /// Binary: the first differing byte offset.
    Byte { offset: u64 },
}

/// One file that is not the same in both builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    pub sha256_a: Option<String>,
    pub sha256_b: Option<String>,
    pub size_a: Option<u64>,
    pub size_b: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<FirstDifference>,
}

/// The comparison of two builds' outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Files identical in both builds, with their sha256.
    pub identical: BTreeMap<String, String>,
    pub differing: Vec<Difference>,
}

impl Comparison {
    #[must_use]
    pub fn reproducible(&self) -> bool {
        self.differing.is_empty() && !self.identical.is_empty()
    }
}

/// Every regular file at or below `rel` in `root`, relative to `root`, sorted.
fn files(root: &Path, rel: &str) -> Vec<String> {
    let start = root.join(rel);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if let Ok(r) = p.strip_prefix(root) {
            out.push(r.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn digest(path: &Path) -> Option<(String, u64)> {
    maestro_sign::sha256_file(path)
        .ok()
        .map(|(d, n)| (hex::encode(d), n))
}

fn clip(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// Where `a` and `b` first differ: a line for text, an offset for binary content.
#[must_use]
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<FirstDifference> {
    let text = |x: &[u8]| !x.contains(&0) && std::str::from_utf8(x).is_ok();
    if text(a) && text(b) {
        let (ta, tb) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
        let mut la = ta.split('\n');
        let mut lb = tb.split('\n');
        let mut line = 0;
        loop {
            line += 1;
            match (la.next(), lb.next()) {
                (None, None) => return None,
                (x, y) if x == y => {}
                (x, y) => {
                    return Some(FirstDifference::Line {
                        line,
                        a: clip(x.unwrap_or("<end of file>")),
                        b: clip(y.unwrap_or("<end of file>")),
                    });
                }
            }
        }
    }
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.len().min(b.len()));
    (a != b).then_some(FirstDifference::Byte {
        offset: offset as u64,
    })
}

/// Compares `outputs` (files or directories, relative paths) between two build roots.
#[must_use]
pub fn compare(root_a: &Path, root_b: &Path, outputs: &[String]) -> Comparison {
    let mut all: Vec<String> = Vec::new();
    for o in outputs {
        all.extend(files(root_a, o));
        all.extend(files(root_b, o));
        if !root_a.join(o).exists() && !root_b.join(o).exists() {
            all.push(o.clone());
        }
    }
    all.sort();
    all.dedup();
    let mut cmp = Comparison::default();
    for rel in all {
        let (pa, pb): (PathBuf, PathBuf) = (root_a.join(&rel), root_b.join(&rel));
        let (da, db) = (digest(&pa), digest(&pb));
        match (&da, &db) {
            (Some((x, _)), Some((y, _))) if x == y => {
                cmp.identical.insert(rel, x.clone());
            }
            _ => {
                let small = |d: &Option<(String, u64)>| {
                    d.as_ref().is_some_and(|(_, n)| *n <= MAX_DIFF_BYTES)
                };
                let first = if small(&da) && small(&db) {
                    match (std::fs::read(&pa), std::fs::read(&pb)) {
                        (Ok(a), Ok(b)) => first_difference(&a, &b),
                        _ => None,
                    }
                } else {
                    None
                };
                cmp.differing.push(Difference {
                    path: rel,
                    sha256_a: da.as_ref().map(|(d, _)| d.clone()),
                    sha256_b: db.as_ref().map(|(d, _)| d.clone()),
                    size_a: da.map(|(_, n)| n),
                    size_b: db.map(|(_, n)| n),
                    first,
                });
            }
        }
    }
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_differences_name_the_line() {
        let d = first_difference(b"a\nbuilt 10:00\nc\n", b"a\nbuilt 10:01\nc\n");
        assert_eq!(
            d,
            Some(FirstDifference::Line {
                line: 2,
                a: "built 10:00".into(),
                b: "built 10:01".into()
            })
        );
        let d = first_difference(b"a\n", b"a\nb\n");
        assert!(
            matches!(d, Some(FirstDifference::Line { line: 2, .. })),
            "{d:?}"
        );
        assert_eq!(first_difference(b"same", b"same"), None);
    }

    #[test]
    fn binary_differences_name_the_offset() {
        let d = first_difference(b"\x1f\x8b\x08\x00\x01", b"\x1f\x8b\x08\x00\x02");
        assert_eq!(d, Some(FirstDifference::Byte { offset: 4 }));
        let d = first_difference(b"\x00ab", b"\x00a");
        assert_eq!(d, Some(FirstDifference::Byte { offset: 2 }));
    }

    #[test]
    fn directories_are_compared_file_by_file() {
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        for (root, stamp) in [(a.path(), "1"), (b.path(), "2")] {
            std::fs::create_dir_all(root.join("dist/lib")).expect("mkdir");
            std::fs::write(root.join("dist/lib/same.txt"), "same").expect("write");
            std::fs::write(root.join("dist/stamp.txt"), stamp).expect("write");
        }
        std::fs::write(a.path().join("dist/only-a"), "x").expect("write");
        let c = compare(
            a.path(),
            b.path(),
            &["dist".to_owned(), "missing.bin".to_owned()],
        );
        assert_eq!(
            c.identical.keys().collect::<Vec<_>>(),
            ["dist/lib/same.txt"]
        );
        let paths: Vec<&str> = c.differing.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["dist/only-a", "dist/stamp.txt", "missing.bin"]);
        assert!(c.differing[0].sha256_b.is_none());
        assert!(!c.reproducible());
    }
}
