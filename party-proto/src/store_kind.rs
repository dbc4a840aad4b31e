//! One store per data directory. A directory holds the store of one kind (fjall, sled, …),
//! recorded by its first leader; a process configured for another kind is refused both as
//! a follower (the leader reads the kind in its hello) and as a would-be leader (its driver
//! reads the directory's record before opening a store). Otherwise such a process would
//! follow while reporting its own kind, and on the next failover lead from an empty store
//! of its own, where all the data would seem lost.

use crate::error::ErrorCode;

/// Whether a process configured for the store `wanted` may be served from, or open, the
/// directory's store: `found` is the kind the leader serves, or the kind the directory
/// records (`None` for a directory that records none yet, which the caller then claims
/// for `wanted`).
pub fn admit_store(found: Option<&str>, wanted: &str) -> Result<(), ErrorCode> {
    match found {
        Some(found) if found != wanted => Err(ErrorCode::WrongStore {
            found: found.to_owned(),
            wanted: wanted.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directorys_own_kind_is_admitted() {
        assert_eq!(admit_store(None, "sled"), Ok(()));
        assert_eq!(admit_store(Some("sled"), "sled"), Ok(()));
        assert_eq!(
            admit_store(Some("fjall"), "sled"),
            Err(ErrorCode::WrongStore {
                found: "fjall".into(),
                wanted: "sled".into()
            })
        );
    }
}
