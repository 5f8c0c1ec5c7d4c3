//! The published RFC 6962 test vectors (certificate-transparency's reference test data:
//! eight leaves, the root of every prefix, and inclusion and consistency proofs), run
//! through the log's tree code and the proof checks it relies on.

use std::cell::RefCell;

use maestro_audit::tree::Frontier;
use tlog_tiles::{
    Hash, HashReader, check_record, check_tree, prove_record, prove_tree, record_hash,
};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path).
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency proof).
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hash(s: &str) -> Hash {
    Hash(unhex(s).try_into().expect("32 bytes"))
}

struct Mem(RefCell<Vec<Hash>>);

impl HashReader for Mem {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let v = self.0.borrow();
        indexes
            .iter()
            .map(|&i| {
                v.get(usize::try_from(i).map_err(|_| tlog_tiles::Error::IndexesNotInTree)?)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn tree() -> (Mem, Vec<Hash>) {
    let mem = Mem(RefCell::new(Vec::new()));
    let mut f = Frontier::new();
    let mut roots = Vec::new();
    for leaf in LEAVES {
        mem.0.borrow_mut().extend(f.push(&unhex(leaf)));
        roots.push(f.root());
    }
    (mem, roots)
}

#[test]
fn roots_match_the_published_vectors() {
    let (_, roots) = tree();
    for (i, (got, want)) in roots.iter().zip(ROOTS).enumerate() {
        assert_eq!(*got, hash(want), "root of {} leaves", i + 1);
    }
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let (mem, roots) = tree();
    for &(index, size, path) in INCLUSION {
        let want: Vec<Hash> = path.iter().map(|h| hash(h)).collect();
        let got = prove_record(size, index, &mem).expect("prove");
        assert_eq!(got, want, "PATH({index}, D[{size}])");
        let root = roots[usize::try_from(size - 1).expect("size")];
        let leaf = record_hash(&unhex(LEAVES[usize::try_from(index).expect("index")]));
        check_record(&want, size, root, index, leaf).expect("checks");
        let wrong = record_hash(b"not a leaf");
        assert!(check_record(&want, size, root, index, wrong).is_err());
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let (mem, roots) = tree();
    for &(old, new, path) in CONSISTENCY {
        let want: Vec<Hash> = path.iter().map(|h| hash(h)).collect();
        let got = prove_tree(new, old, &mem).expect("prove");
        assert_eq!(got, want, "PROOF({old}, D[{new}])");
        let (a, b) = (
            roots[usize::try_from(old - 1).expect("old")],
            roots[usize::try_from(new - 1).expect("new")],
        );
        check_tree(&want, new, b, old, a).expect("checks");
        if old != new {
            assert!(check_tree(&want, new, b, old, b).is_err());
        }
    }
}
