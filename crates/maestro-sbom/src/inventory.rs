//! The ecosystem-neutral model every reader produces and every writer renders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The package ecosystem a component comes from; it decides version semantics in SCA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Cargo,
    Npm,
    PyPI,
    Go,
}

impl Ecosystem {
    /// The name OSV uses (`affected[].package.ecosystem`).
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::Cargo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
        }
    }

    /// The purl type.
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Cargo => "cargo",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "pypi",
            Ecosystem::Go => "golang",
        }
    }

    /// The ecosystem of a purl, by its type.
    pub fn of_purl(purl: &str) -> Option<Ecosystem> {
        let ty = purl.strip_prefix("pkg:")?.split('/').next()?;
        [
            Ecosystem::Cargo,
            Ecosystem::Npm,
            Ecosystem::PyPI,
            Ecosystem::Go,
        ]
        .into_iter()
        .find(|e| e.purl_type() == ty)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// The CycloneDX spelling (`SHA-256`).
    pub fn cyclonedx(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    /// The SPDX spelling (`SHA256`).
    pub fn spdx(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA1",
            HashAlg::Sha256 => "SHA256",
            HashAlg::Sha384 => "SHA384",
            HashAlg::Sha512 => "SHA512",
        }
    }

    /// Parses `sha256`, `SHA-256`, `sha512`… (as lockfiles spell them).
    pub fn parse(s: &str) -> Option<HashAlg> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Some(HashAlg::Sha1),
            "sha256" => Some(HashAlg::Sha256),
            "sha384" => Some(HashAlg::Sha384),
            "sha512" => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Length of the digest in hex characters.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 40,
            HashAlg::Sha256 => 64,
            HashAlg::Sha384 => 96,
            HashAlg::Sha512 => 128,
        }
    }
}

/// A digest of a package archive, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash {
    pub alg: HashAlg,
    pub hex: String,
}

impl Hash {
    /// A hash from hex text; `None` unless it is hex of the algorithm's length.
    pub fn from_hex(alg: HashAlg, hex: &str) -> Option<Hash> {
        (hex.len() == alg.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Hash {
            alg,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

/// Whether a component ships with the subject or is only needed to build or test it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Required,
    /// Development-only (npm `dev`, poetry's non-main groups).
    Dev,
    /// Optional at run time (npm `optional`, poetry `optional`).
    Optional,
}

/// One distribution file of a package (a wheel, an sdist) with its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub file: String,
    pub hashes: Vec<Hash>,
}

/// One resolved package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub ecosystem: Ecosystem,
    /// The name as the ecosystem writes it (`@babel/core`, `github.com/x/y`).
    pub name: String,
    /// `None` only for unpinned requirements.
    pub version: Option<String>,
    /// The identifier; unique within an inventory.
    pub purl: String,
    /// Digests of the package archive (Cargo's `.crate`, npm's tarball).
    pub hashes: Vec<Hash>,
    /// Python packages publish several files; each keeps its own hashes.
    pub distributions: Vec<Distribution>,
    /// The declared license as an SPDX expression (or the raw string if it is not one).
    pub license: Option<String>,
    /// Where the package was downloaded from, when the lockfile says.
    pub download: Option<String>,
    pub scope: Scope,
    /// Purls of the components this one depends on.
    pub depends_on: BTreeSet<String>,
    /// Extra facts, as `maestro:`-prefixed CycloneDX properties.
    pub properties: BTreeMap<String, String>,
}

impl Component {
    pub fn new(ecosystem: Ecosystem, name: &str, version: Option<&str>, purl: String) -> Self {
        Component {
            ecosystem,
            name: name.to_owned(),
            version: version.map(str::to_owned),
            purl,
            hashes: Vec::new(),
            distributions: Vec::new(),
            license: None,
            download: None,
            scope: Scope::Required,
            depends_on: BTreeSet::new(),
            properties: BTreeMap::new(),
        }
    }
}

/// What the SBOM describes: the project the lockfiles belong to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub name: String,
    pub version: Option<String>,
    pub purl: Option<String>,
    /// Purls of its direct dependencies (for a Cargo workspace: its members).
    pub depends_on: BTreeSet<String>,
}

impl Subject {
    /// The reference other entries use for it: its purl, else a name-based one.
    pub fn bom_ref(&self) -> String {
        self.purl
            .clone()
            .unwrap_or_else(|| format!("maestro:subject:{}", self.name))
    }
}

/// Everything read from one or more lockfiles.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub subject: Subject,
    /// Sorted by purl, one per purl.
    pub components: Vec<Component>,
    /// The lockfiles read.
    pub sources: Vec<PathBuf>,
    /// Things a user should know (unpinned requirements, skipped entries).
    pub warnings: Vec<String>,
}

impl Inventory {
    /// Puts components in purl order, merges duplicates (union of edges and hashes),
    /// and drops edges to components the inventory does not hold.
    pub fn finish(&mut self) {
        let mut by_purl: BTreeMap<String, Component> = BTreeMap::new();
        for c in self.components.drain(..) {
            match by_purl.get_mut(&c.purl) {
                Some(have) => {
                    have.depends_on.extend(c.depends_on);
                    for h in c.hashes {
                        if !have.hashes.contains(&h) {
                            have.hashes.push(h);
                        }
                    }
                    if have.license.is_none() {
                        have.license = c.license;
                    }
                    // Required anywhere wins over dev/optional.
                    if c.scope == Scope::Required {
                        have.scope = Scope::Required;
                    }
                }
                None => {
                    by_purl.insert(c.purl.clone(), c);
                }
            }
        }
        let known: BTreeSet<String> = by_purl.keys().cloned().collect();
        for c in by_purl.values_mut() {
            c.depends_on.retain(|d| known.contains(d) && *d != c.purl);
            c.hashes.sort();
        }
        let subject_ref = self.subject.purl.clone();
        self.subject
            .depends_on
            .retain(|d| known.contains(d) && Some(d) != subject_ref.as_ref());
        // The subject itself is not one of its components.
        if let Some(p) = &subject_ref {
            by_purl.remove(p);
        }
        self.components = by_purl.into_values().collect();
    }

    /// Adds another inventory's components under this one's subject: the other subject's
    /// direct dependencies become this subject's.
    pub fn merge(&mut self, other: Inventory) {
        self.subject.depends_on.extend(other.subject.depends_on);
        self.components.extend(other.components);
        self.sources.extend(other.sources);
        self.warnings.extend(other.warnings);
        self.finish();
    }

    pub fn get(&self, purl: &str) -> Option<&Component> {
        self.components
            .binary_search_by(|c| c.purl.as_str().cmp(purl))
            .ok()
            .map(|i| &self.components[i])
    }
}

impl Inventory {
    /// Leaves out development-only components (npm `dev`, poetry's non-main groups) and the
    /// edges to them: the SBOM of what ships.
    pub fn without_dev(mut self) -> Inventory {
        let dev: BTreeSet<String> = self
            .components
            .iter()
            .filter(|c| c.scope == Scope::Dev)
            .map(|c| c.purl.clone())
            .collect();
        self.components.retain(|c| !dev.contains(&c.purl));
        for c in &mut self.components {
            c.depends_on.retain(|d| !dev.contains(d));
        }
        self.subject.depends_on.retain(|d| !dev.contains(d));
        self
    }
}
