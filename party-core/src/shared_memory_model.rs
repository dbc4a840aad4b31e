//! The ring's shared memory as the loom models see it (`--cfg loom`, `tests/loom.rs`): the
//! methods of `shared_memory.rs`'s mapping, over cells loom tracks, so that a byte the
//! follower still copies out and the leader writes again shows as a race. In the real
//! mapping the two are processes; here they are threads, and loom checks that the counter's
//! orderings, with the socket's frames, keep every value's write apart from its read.
#![allow(unsafe_code)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;

/// Bytes a cell holds: a value's write or read touches each cell it overlaps.
const CELL: usize = 1024;

/// A memory both sides hold, as a mapping shared by two processes.
#[derive(Debug, Clone)]
pub struct SharedMemory(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    counter: AtomicU64,
    cells: Vec<UnsafeCell<[u8; CELL]>>,
    len: usize,
}

impl SharedMemory {
    /// `len` bytes, zeroed, the first eight of them the counter.
    pub fn new(len: usize) -> SharedMemory {
        SharedMemory(Arc::new(Shared {
            counter: AtomicU64::new(0),
            cells: (0..len.div_ceil(CELL))
                .map(|_| UnsafeCell::new([0; CELL]))
                .collect(),
            len,
        }))
    }

    /// The counter in the first 8 bytes, which both sides may touch at once.
    pub fn counter(&self) -> &AtomicU64 {
        &self.0.counter
    }

    /// Copies `bytes` to offset `at`; `false`, copying nothing, if they do not fit there.
    pub fn write(&self, at: usize, bytes: &[u8]) -> bool {
        if !self.holds(at, bytes.len()) {
            return false;
        }
        self.each_cell(at, bytes.len(), |cell, inside, from| {
            // SAFETY: loom tracks this access and fails the model, before it is made,
            // where it could overlap another thread's.
            cell.with_mut(|cell| unsafe { (&mut *cell)[inside].copy_from_slice(&bytes[from]) });
        });
        true
    }

    /// The `len` bytes at offset `at`; `None` if they lie outside the memory.
    pub fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        if !self.holds(at, len) {
            return None;
        }
        let mut bytes = vec![0; len];
        self.each_cell(at, len, |cell, inside, to| {
            // SAFETY: as in `write`.
            cell.with(|cell| bytes[to].copy_from_slice(unsafe { &(&*cell)[inside] }));
        });
        Some(bytes)
    }

    /// Calls `visit` for each cell that `len` bytes from `at` overlap, with the range of the
    /// cell's bytes they cover and the matching range of theirs.
    fn each_cell(
        &self,
        at: usize,
        len: usize,
        mut visit: impl FnMut(&UnsafeCell<[u8; CELL]>, std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let mut done = 0;
        while done < len {
            let offset = at + done;
            let inside = offset % CELL;
            let here = (CELL - inside).min(len - done);
            visit(
                &self.0.cells[offset / CELL],
                inside..inside + here,
                done..done + here,
            );
            done += here;
        }
    }

    /// Whether the memory holds the bytes from offset `at` on, the counter's left alone.
    fn holds(&self, at: usize, len: usize) -> bool {
        at >= std::mem::size_of::<AtomicU64>()
            && at.checked_add(len).is_some_and(|end| end <= self.0.len)
    }
}
