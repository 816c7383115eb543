//! The images the bench measures: release builds that tests/bench/bench.sh loads under tags of
//! their own (`BENCH_IMAGE_TAG`), so a test run that reloads the debug images (`:dev`) at the
//! same time can never swap what the bench runs.

use serde_json::{Value, json};

/// The tag bench.sh loaded the release images under.
pub fn tag() -> anyhow::Result<String> {
    std::env::var("BENCH_IMAGE_TAG")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("BENCH_IMAGE_TAG is not set: run the bench through tests/bench/bench.sh (make bench)")
        })
}

/// The bot image the operator gives bots.
pub fn bot_image() -> anyhow::Result<String> {
    Ok(format!("perps-bot:{}", tag()?))
}

/// Chart values for the operator and its bots on the bench's images, with `extra` merged over.
pub fn operator_values(extra: Value) -> anyhow::Result<Value> {
    let mut values = json!({
        "image": {"repository": "tradingbot-operator", "tag": tag()?, "pullPolicy": "Never"},
        "botImage": bot_image()?,
    });
    test_harness::merge_json(&mut values, extra);
    Ok(values)
}
