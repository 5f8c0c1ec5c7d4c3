//! The content-addressed cache: blobs stored by sha256 ([`cas`]), cache keys computed from
//! explicit ingredients that can be compared to say why a job missed ([`key`]), and the
//! resolution of input globs to files in one walk of the tree ([`inputs`]).

pub mod cas;
pub mod inputs;
pub mod key;

pub use cas::{Cas, CasError};
pub use inputs::{InputError, InputIndex};
pub use key::{Change, Ingredients, KEY_VERSION};

use sha2::{Digest, Sha256};

/// Hex sha256 of bytes.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
