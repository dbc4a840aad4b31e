//! The party simulator: virtual processes driving the real `party-proto` machines over
//! virtual locks, pipes and an in-memory store, all from one seed.
//!
//! Nothing here reads the clock, the OS random source or the filesystem, so a seed always
//! replays the same run.

pub mod lock_oracle;
