use super::*;
use crate::money::MAX_PAYMENT_MINOR_UNITS;
use crate::routing::{AccountId, Partitioner};

fn request(amount: &str) -> String {
    format!(
        r#"{{"version":1,"id":"p-1","payer":"alice","payee":"bob","amount":{amount},"currency":"EUR","method":"card","details":{{"pan":"4242"}}}}"#
    )
}

fn code_of(body: &str) -> Code {
    decode(body.as_bytes()).err().map_or(Code::Ok, |refusal| refusal.code)
}

#[test]
fn decodes_a_valid_request() {
    let decoded = decode(request("1250").as_bytes()).expect("valid");
    assert_eq!(decoded.amount, 1250);
    assert_eq!(decoded.currency.code(), "EUR");
    assert_eq!(decoded.details.get("pan").map(String::as_str), Some("4242"));
}

#[test]
fn amounts_outside_the_range_or_not_integers_are_refused() {
    assert_eq!(code_of(&request("0")), Code::AmountOutOfRange);
    assert_eq!(code_of(&request("-5")), Code::AmountOutOfRange);
    assert_eq!(code_of(&request("9007199254740991")), Code::Ok);
    assert_eq!(code_of(&request("9007199254740992")), Code::AmountOutOfRange);
    assert_eq!(code_of(&request("18446744073709551616")), Code::AmountOutOfRange);
    assert_eq!(code_of(&request("1e30")), Code::AmountOutOfRange);
    assert_eq!(code_of(&request("12.5")), Code::InvalidRequest);
    assert_eq!(code_of(&request("-0.5")), Code::InvalidRequest);
    assert_eq!(code_of(&request("1e3")), Code::InvalidRequest);
    assert_eq!(code_of(&request("\"100\"")), Code::InvalidRequest);
}

#[test]
fn malformed_messages_are_invalid_requests() {
    assert_eq!(code_of("not json"), Code::InvalidRequest);
    assert_eq!(code_of("[]"), Code::InvalidRequest);
    assert_eq!(code_of(r#"{"id":"x"}"#), Code::InvalidRequest);
    assert_eq!(code_of(&request("1").replace("\"payer\":\"alice\"", "\"payer\":\"a.b\"")), Code::InvalidRequest);
    assert_eq!(code_of(&request("1").replace("\"payee\":\"bob\"", "\"payee\":\"alice\"")), Code::InvalidRequest);
    assert_eq!(code_of(&request("1").replace("EUR", "EURO")), Code::InvalidRequest);
    assert_eq!(code_of(&request("1").replace("\"card\"", "\"Card\"")), Code::InvalidRequest);
    assert_eq!(code_of(&request("1").replace("}}", "},\"extra\":1}")), Code::InvalidRequest);
    let huge = format!(r#"{{"version":1,"padding":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
    assert_eq!(code_of(&huge), Code::InvalidRequest);
}

#[test]
fn versions_other_than_one_are_unsupported() {
    assert_eq!(code_of(&request("1").replace("\"version\":1", "\"version\":2")), Code::UnsupportedVersion);
    assert_eq!(code_of(&request("1").replace("\"version\":1", "\"version\":\"1\"")), Code::UnsupportedVersion);
    let refusal = decode(request("1").replace("\"version\":1", "\"version\":2").as_bytes()).expect_err("refused");
    assert_eq!(refusal.id.as_deref(), Some("p-1"));
}

#[test]
fn fingerprint_ignores_map_order_and_sees_every_field() {
    let a = decode(request("1250").as_bytes()).expect("valid");
    let reordered = r#"{"details":{"pan":"4242"},"method":"card","currency":"EUR","amount":1250,"payee":"bob","payer":"alice","id":"p-1","version":1}"#;
    let b = decode(reordered.as_bytes()).expect("valid");
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = decode(request("1251").as_bytes()).expect("valid");
    assert_ne!(a.fingerprint(), c.fingerprint());
}

#[test]
fn every_code_has_one_status_and_its_wire_name() {
    for code in [Code::Ok, Code::InvalidRequest, Code::PluginFailed, Code::InsufficientFunds, Code::WrongPartition] {
        let json = serde_json::to_string(&code).expect("serialize");
        assert_eq!(json, format!("\"{}\"", code.as_str()));
    }
    assert_eq!(Code::PluginDeclined.status(), Status::Declined);
    let lifecycle = [
        (Code::Authorized, Status::Authorized),
        (Code::Captured, Status::Captured),
        (Code::Voided, Status::Voided),
        (Code::Expired, Status::Expired),
        (Code::HoldExpired, Status::Declined),
        (Code::InvalidState, Status::Declined),
        (Code::UnknownPayment, Status::Rejected),
        (Code::ExceedsAuthorized, Status::Rejected),
        (Code::Refunded, Status::Refunded),
        (Code::ExceedsRefundable, Status::Declined),
        (Code::NotRefundable, Status::Rejected),
        (Code::Settled, Status::Settled),
        (Code::UnknownQuote, Status::Rejected),
        (Code::QuoteMismatch, Status::Rejected),
        (Code::QuoteExpired, Status::Declined),
        (Code::QuoteUsed, Status::Declined),
        (Code::Quoted, Status::Quoted),
    ];
    for (code, status) in lifecycle {
        assert_eq!(
            (code.status(), serde_json::to_string(&code).expect("code")),
            (status, format!("\"{}\"", code.as_str()))
        );
        assert_eq!(serde_json::to_string(&status).expect("status"), format!("\"{}\"", status.as_str()));
    }
    assert_eq!(Code::Unavailable.status(), Status::Error);
}

/// The examples in docs/schema are what clients copy: they must decode, and the reply example
/// must be what this host would send for the request example.
#[test]
fn documented_examples_decode() {
    let schema = |name: &str| -> serde_json::Value {
        let path = format!("{}/../../docs/schema/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file")).expect("schema is JSON")
    };
    let requests = schema("payment-request.schema.json");
    let examples = requests["examples"].as_array().expect("request examples");
    assert!(!examples.is_empty());
    for example in examples {
        assert!(decode(example.to_string().as_bytes()).is_ok(), "{example}");
    }
    for example in schema("hold-request.schema.json")["examples"].as_array().expect("hold examples") {
        assert!(matches!(decode_operation(example.to_string().as_bytes()), Ok(Operation::Hold(_))), "{example}");
    }
    for example in schema("refund-request.schema.json")["examples"].as_array().expect("refund examples") {
        assert!(matches!(decode_operation(example.to_string().as_bytes()), Ok(Operation::Refund(_))), "{example}");
    }
    for example in schema("settlement-request.schema.json")["examples"].as_array().expect("settlement examples") {
        assert!(matches!(decode_operation(example.to_string().as_bytes()), Ok(Operation::Settle(_))), "{example}");
    }
    let replies = schema("payment-reply.schema.json");
    for example in replies["examples"].as_array().expect("reply examples") {
        let reply: Reply = serde_json::from_value(example.clone()).expect("reply example parses");
        let payer = AccountId::new("alice").expect("valid");
        let partitioner = Partitioner::new(64).expect("64");
        assert_eq!(reply.partition, Some(partitioner.partition_of(&payer)));
    }
}

/// Decoding is total: arbitrary mutations of a valid request never panic, and whatever is
/// accepted satisfies every documented bound.
#[test]
fn decoding_mutated_requests_never_panics_and_accepts_only_valid_requests() {
    let valid = request("1250").into_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}[]\":,.-+e0123456789 aZ_\\\x00\xff";
    for _ in 0..20_000 {
        let mut body = valid.clone();
        for _ in 0..1 + next() % 4 {
            let position = usize::try_from(next() % u64::try_from(body.len()).unwrap_or(1)).unwrap_or(0);
            let byte = alphabet[usize::try_from(next() % 28).unwrap_or(0)];
            match next() % 3 {
                0 => body[position] = byte,
                1 => body.insert(position, byte),
                _ => {
                    body.remove(position);
                }
            }
        }
        if let Ok(decoded) = decode(&body) {
            assert!((1..=MAX_PAYMENT_MINOR_UNITS).contains(&decoded.amount));
            assert!(AccountId::new(decoded.payer.as_str()).is_ok() && decoded.payer != decoded.payee);
            assert!((1..=64).contains(&decoded.id.as_str().len()));
        }
    }
}

/// Only a client key id as the ledger issues them is taken from the header.
#[test]
fn only_client_key_ids_are_taken_from_the_header() {
    use crate::routing::subjects::client_key_id;
    assert_eq!(client_key_id("ck_0123456789abcdef"), Some("ck_0123456789abcdef"));
    for strange in
        ["", "ck_", "ck_0123456789ABCDEF", "ck_0123456789abcdef0", "wpk_0123456789abcdef", &"x".repeat(100_000)]
    {
        assert_eq!(client_key_id(strange), None, "{}", &strange[..strange.len().min(20)]);
    }
}
