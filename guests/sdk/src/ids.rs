//! Response ids (`chatcmpl-…`) from `wasi:random/random`.

/// `prefix` followed by 24 random hex digits. Ids only need to be unique,
/// not secret, but the host's random source is the only one a guest has.
pub fn random_id(prefix: &str) -> String {
    use std::fmt::Write as _;
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    for b in wasi::random::random::get_random_bytes(12) {
        let _ = write!(id, "{b:02x}");
    }
    id
}
