#![cfg(not(loom))]
//! Values through the codecs, on a follower: what goes in comes out exactly.

use party_core::Json;
use proptest::prelude::*;

mod common;

/// An empty value is a value: read through a codec it is `Some` of the empty value, not
/// an absent key, on both roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_value_reads_back_through_a_codec_as_present() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = common::pair(dir.path()).await;
    for db in [&leader, &follower] {
        let strings = db.with_codec(party_core::Utf8);
        strings.put("empty", &String::new()).await.unwrap();
        assert_eq!(strings.get("empty").await.unwrap(), Some(String::new()));
        let raw = db.with_codec(party_core::Raw);
        assert_eq!(raw.get("empty").await.unwrap(), Some(Vec::new()));
        assert_eq!(raw.get("absent").await.unwrap(), None);
    }
    leader.close().await.unwrap();
}

/// JSON numbers are decimal text; a double must parse back to the very same bits, which
/// serde_json does only with its `float_roundtrip` feature.
#[test]
fn any_finite_double_survives_json_through_a_follower() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = runtime.block_on(common::pair(dir.path()));
    let follower = follower.with_codec(Json::<f64>::default());
    proptest!(ProptestConfig::with_cases(2000), |(value in any::<f64>().prop_filter("JSON has no NaN or infinity", |v| v.is_finite()))| {
        let back = runtime.block_on(async {
            follower.put("x", &value).await.unwrap();
            follower.get("x").await.unwrap()
        });
        prop_assert_eq!(back.map(f64::to_bits), Some(value.to_bits()));
    });
    runtime.block_on(leader.close()).unwrap();
}
