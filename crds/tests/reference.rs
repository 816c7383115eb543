//! The committed API reference must be exactly what the CRD schema generates (`make crds`).

#[test]
fn committed_crd_reference_is_up_to_date() {
    let path = test_harness::root().join(tradingbot_crds::reference::MARKDOWN_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == tradingbot_crds::reference::markdown(),
        "{} is stale or missing: run `make crds` and commit the result",
        path.display()
    );
}
