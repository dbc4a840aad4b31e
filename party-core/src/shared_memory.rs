//! A file mapped into this process and shared with another one: the one place party-core
//! reads and writes memory through raw pointers, for the ring big answers come through
//! (`value_ring.rs`).
//!
//! Sound as long as the mapping lives and each access stays inside it: the mapping is
//! dropped only with this value, every access is checked against its length, and the file
//! is sealed against shrinking (see [`SharedMemory::map`]), so no access can fault on a
//! page the other process cut off. What the other process writes meanwhile it writes to
//! bytes this one reads only once told they are ready, and the reverse; a peer that breaks
//! that rule gets wrong bytes back, not this process's memory.
#![allow(unsafe_code)]

use std::fs::File;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A whole file, mapped shared, read and write.
#[derive(Debug)]
pub(crate) struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    /// Kept open, so that others can open the file through it in `/proc`.
    file: File,
}

// SAFETY: the mapping is plain memory, valid for the value's life on any thread; every
// access goes through `&self` with the cross-process rule above, or the atomic counter.
unsafe impl Send for SharedMemory {}
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Maps all of `file`, which must be sealed against shrinking and hold at least the
    /// 8-byte counter.
    pub fn map(file: File) -> std::io::Result<SharedMemory> {
        let seals = rustix::fs::fcntl_get_seals(&file)?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(std::io::Error::other("a shared file that can shrink"));
        }
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("a shared file too large to map"))?;
        if len < std::mem::size_of::<AtomicU64>() {
            return Err(std::io::Error::other(
                "a shared file too small for its counter",
            ));
        }
        // SAFETY: a new mapping of a file this value keeps open; nothing else in this
        // process refers to it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("a null map"))?;
        Ok(SharedMemory { ptr, len, file })
    }

    /// The file mapped.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The counter in the file's first 8 bytes, which both processes may touch at once.
    pub fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping starts on a page, so it is aligned for an `AtomicU64`, and
        // `map` checked it holds one; it lives as long as `self`.
        unsafe { self.ptr.cast::<AtomicU64>().as_ref() }
    }

    /// Copies `bytes` to offset `at`; `false`, copying nothing, if they do not fit there.
    pub fn write(&self, at: usize, bytes: &[u8]) -> bool {
        if !self.holds(at, bytes.len()) {
            return false;
        }
        // SAFETY: `at..at + len` lies inside the mapping (checked above), which cannot
        // overlap `bytes`, memory of this process's own.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len());
        }
        true
    }

    /// The `len` bytes at offset `at`; `None` if they lie outside the file.
    pub fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        if !self.holds(at, len) {
            return None;
        }
        let mut bytes = Vec::with_capacity(len);
        // SAFETY: `at..at + len` lies inside the mapping (checked above); `bytes` has room
        // for `len` bytes, every one of them written before the length is set.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), bytes.as_mut_ptr(), len);
            bytes.set_len(len);
        }
        Some(bytes)
    }

    /// Whether the mapping holds the bytes from offset `at` on, the counter's left alone.
    fn holds(&self, at: usize, len: usize) -> bool {
        at >= std::mem::size_of::<AtomicU64>() && at.checked_add(len).is_some_and(|e| e <= self.len)
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping `map` made; nothing refers to it once `self` goes.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
