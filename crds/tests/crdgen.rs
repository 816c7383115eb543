//! The committed CRD YAML must be exactly what the Rust types generate (`make crds`).

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let path = test_harness::root().join(tradingbot_crds::CRD_YAML_PATH);
    let committed = std::fs::read_to_string(&path).expect("the CRD YAML is committed");
    assert!(
        committed == tradingbot_crds::crd_yaml(),
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn the_charts_copy_is_the_same_crd() {
    let chart_copy = test_harness::root().join("charts/tradingbot-operator/files/tradingbot.crd.yaml");
    let text = std::fs::read_to_string(&chart_copy).expect("the chart carries the CRD");
    assert!(
        text == tradingbot_crds::crd_yaml(),
        "{} is stale: run `make crds`",
        chart_copy.display()
    );
}

#[test]
fn crd_uses_only_what_a_1_20_api_server_accepts() {
    let yaml = tradingbot_crds::crd_yaml();
    // CEL rules do not install on 1.20; cross-field rules live in the operator.
    assert!(!yaml.contains("x-kubernetes-validations"));
    assert!(yaml.contains("subresources:") && yaml.contains("status: {}"));
}

#[test]
fn committed_account_crd_and_the_charts_copy_are_up_to_date() {
    for path in [
        tradingbot_crds::ACCOUNT_CRD_YAML_PATH,
        "charts/tradingbot-operator/files/tradingaccount.crd.yaml",
    ] {
        let file = test_harness::root().join(path);
        let text = std::fs::read_to_string(&file).expect("the TradingAccount CRD is committed");
        assert!(
            text == tradingbot_crds::account_crd_yaml(),
            "{} is stale: run `make crds` and commit the result",
            file.display()
        );
    }
    let yaml = tradingbot_crds::account_crd_yaml();
    assert!(!yaml.contains("x-kubernetes-validations"));
    assert!(yaml.contains("subresources:") && yaml.contains("status: {}"));
}
