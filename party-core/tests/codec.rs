#![cfg(not(loom))]
//! Values through the codecs, on a follower: what goes in comes out exactly.

use party_core::{open, Json, Options, Role};
use proptest::prelude::*;

/// JSON numbers are decimal text; a double must parse back to the very same bits, which
/// serde_json does only with its `float_roundtrip` feature.
#[test]
fn any_finite_double_survives_json_through_a_follower() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = runtime.block_on(async {
        let leader = open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(leader.ready().await.unwrap(), Role::Leader);
        let follower = open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(follower.ready().await.unwrap(), Role::Follower);
        (leader, follower.with_codec(Json::<f64>::default()))
    });
    proptest!(ProptestConfig::with_cases(2000), |(value in any::<f64>().prop_filter("JSON has no NaN or infinity", |v| v.is_finite()))| {
        let back = runtime.block_on(async {
            follower.put("x", &value).await.unwrap();
            follower.get("x").await.unwrap()
        });
        prop_assert_eq!(back.map(f64::to_bits), Some(value.to_bits()));
    });
    runtime.block_on(leader.close()).unwrap();
}
