//! What the simulated callers did and saw: one record per operation, with its virtual
//! invoke and completion times. The checks read this after the run.

use party_proto::{ErrorCode, IterOptions, KeyRange};

/// A caller's operation.
#[derive(Debug, Clone)]
pub enum OpKind {
    Get(Vec<u8>),
    /// Writes these keys atomically (put, del and batch all become this).
    Write(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Clear(KeyRange),
    Iterate(IterOptions),
}

/// How an operation ended, as far as its caller knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer: still pending, or its process crashed first.
    Unknown,
    Read(Option<Vec<u8>>),
    Written,
    /// Every key the iterator delivered, in order.
    Iterated(Vec<Vec<u8>>),
    Failed(ErrorCode),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub process: usize,
    pub kind: OpKind,
    /// Virtual microseconds.
    pub invoke: u64,
    pub complete: Option<u64>,
    pub outcome: Outcome,
}
