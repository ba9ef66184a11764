//! `wasmpay.toml` reaches the plugins: configured pipelines and plugin configuration, read by the
//! real components through the WIT `config` import.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use wasmpay_node::config::Config;
use wasmpay_plugin_host::{MethodSettings, PluginSettings};
use wasmpay_protocol::money::FeeBearer;
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Harness, card};

#[tokio::test]
async fn configured_pipelines_and_plugin_config_decide_payments() {
    let mut config = Config::default();
    let card_config = [("limit.EUR", "5000"), ("fee.bps", "100"), ("fee.fixed.EUR", "0")];
    config.plugins.insert(
        "card".into(),
        PluginSettings {
            path: None,
            config: card_config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        },
    );
    // A method of our own: card rules, wallet pricing.
    config.methods.insert("card-plus".into(), MethodSettings { validators: vec!["card".into()], fee: "wallet".into() });
    let harness = Harness::start_with(config, None).await;
    harness.open_pair("alice", "shop", 100_000).await;

    let over = harness.pay(&card("c-over", "alice", "shop", 5_001)).await;
    assert_eq!((over.code, over.reason.as_deref()), (Code::PluginDeclined, Some("amount_over_limit")), "{over:?}");
    let priced = harness.pay(&card("c-ok", "alice", "shop", 5_000)).await;
    assert_eq!((priced.status, priced.fee), (Status::Approved, Some(50)), "1 % and no fixed part: {priced:?}");

    let mut mixed = card("mixed", "alice", "shop", 1_050);
    mixed["method"] = json!("card-plus");
    let reply = harness.pay(&mixed).await;
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
    assert_eq!((reply.fee, reply.fee_bearer), (Some(11), Some(FeeBearer::Payer)));
    assert_eq!(reply.plugins, ["card@0.1.0", "wallet@0.1.0"]);
}
