//! The partition function against the NATS server's own `{{partition(P,1)}}` mapping, using
//! the sample configuration shipped in `examples/nats-server.conf`.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use wasmpay_protocol::Status;
use wasmpay_protocol::routing::{AccountId, Partitioner};
use wasmpay_tests::{Harness, NatsServer, WAIT, card, mapping_config, parse};

#[tokio::test]
async fn the_server_mapping_computes_the_same_partition_as_the_host() {
    let nats = NatsServer::start(Some(&mapping_config())).expect("nats-server with the mapping");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut mapped = client.subscribe("wasmpay.pay.>").await.unwrap();
    client.flush().await.unwrap();
    let partitioner = Partitioner::new(64).unwrap();
    let accounts: Vec<String> = (0..50)
        .map(|i| format!("acct-{i}"))
        .chain(["alice", "Z", "a_b-c", &"x".repeat(64)].map(String::from))
        .collect();
    for account in &accounts {
        client.publish(format!("wasmpay.submit.{account}"), "{}".into()).await.unwrap();
    }
    for account in &accounts {
        let message = tokio::time::timeout(WAIT, mapped.next()).await.unwrap().unwrap();
        let partition = partitioner.partition_of(&AccountId::new(account.as_str()).unwrap());
        assert_eq!(message.subject.as_str(), format!("wasmpay.pay.{partition}.{account}"));
    }
}

#[tokio::test]
async fn a_payment_mapped_by_the_server_is_approved() {
    let harness = Harness::start_with(Default::default(), Some(&mapping_config())).await;
    harness.open_pair("alice", "shop", 1_000).await;
    let reply = parse(
        &harness.request("wasmpay.submit.alice", card("m-1", "alice", "shop", 100).to_string().into_bytes()).await,
    );
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
}
