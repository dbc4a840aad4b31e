//! What the in-process API tests share.
#![allow(dead_code)] // each test binary uses a different part of this module

use party_core::{open, Db, Options, Role};

/// Two handles on `dir`: the first leads, the second follows it.
pub async fn pair(dir: &std::path::Path) -> (Db, Db) {
    pair_with(dir, Options::default()).await
}

/// Two handles on `dir` opened with `options`: the first leads, the second follows it.
pub async fn pair_with(dir: &std::path::Path, options: Options) -> (Db, Db) {
    let leader = open(dir, options.clone()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir, options).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    (leader, follower)
}
