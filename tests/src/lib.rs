//! Helpers shared by party's cross-crate integration tests live here; the tests themselves
//! are in `tests/tests/`.
