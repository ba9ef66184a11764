use std::collections::BTreeMap;

use wasmpay_sdk::{Config, FeeBearer, Money, Payment, Plugin, Rejection};

use super::*;

fn payment(major: &str, currency: &str, msisdn: &str) -> Payment {
    Payment {
        id: "p1".into(),
        payer: "amina".into(),
        payee: "duka".into(),
        amount: Money::from_major(major, currency).expect("amount"),
        method: "mobile_money".into(),
        details: [("msisdn".to_owned(), msisdn.to_owned())].into(),
        metadata: BTreeMap::new(),
        received_at_ms: 0,
    }
}

fn code(result: Result<(), Rejection>) -> Option<String> {
    result.err().map(|rejection| rejection.code)
}

#[test]
fn numbers_are_split_into_country_and_operator() {
    let number = Msisdn::parse("+255 754 123 456").expect("a Vodacom Tanzania number");
    assert_eq!((number.country.code, number.operator), ("TZ", "vodacom"));
    assert_eq!(Msisdn::parse("+254712345678").map(|number| number.operator), Ok("safaricom"));
    for (bad, expected) in [
        ("255754123456", "invalid_msisdn"),
        ("+25575412345", "invalid_msisdn"),
        ("+2557541234567", "invalid_msisdn"),
        ("+255 75a 123 456", "invalid_msisdn"),
        ("+1 415 555 0100", "unsupported_country"),
        ("+255 999 123 456", "unknown_operator"),
        ("", "invalid_msisdn"),
    ] {
        assert_eq!(Msisdn::parse(bad).map_err(|rejection| rejection.code), Err(expected.to_owned()), "{bad}");
    }
}

#[test]
fn a_payment_is_in_its_countrys_currency_and_within_its_limit() {
    let none = Config::default();
    assert_eq!(code(Mobile::validate(&payment("25000", "TZS", "+255754123456"), &none)), None);
    assert_eq!(
        code(Mobile::validate(&payment("25000", "KES", "+255754123456"), &none)).as_deref(),
        Some("currency_not_of_country")
    );
    assert_eq!(
        code(Mobile::validate(&payment("5000001", "TZS", "+255754123456"), &none)).as_deref(),
        Some("amount_over_limit")
    );
    let lower = Config::from_pairs([("limit.TZS", "100000")]);
    assert_eq!(
        code(Mobile::validate(&payment("100001", "TZS", "+255754123456"), &lower)).as_deref(),
        Some("amount_over_limit")
    );
    let one_and_a_half = Config::from_pairs([("limit.TZS", "1.5")]);
    assert_eq!(code(Mobile::validate(&payment("1", "TZS", "+255754123456"), &one_and_a_half)), None);
    let fractional = Config::from_pairs([("limit.UGX", "1.5")]);
    assert_eq!(
        code(Mobile::validate(&payment("1", "UGX", "+256771234567"), &fractional)).as_deref(),
        Some("plugin_misconfigured")
    );
}

#[test]
fn countries_and_operators_can_be_narrowed_by_configuration() {
    let only_kenya = Config::from_pairs([("countries", "KE")]);
    assert_eq!(
        code(Mobile::validate(&payment("100", "TZS", "+255754123456"), &only_kenya)).as_deref(),
        Some("unsupported_country")
    );
    let no_tigo = Config::from_pairs([("operators.TZ", "vodacom, airtel")]);
    assert_eq!(code(Mobile::validate(&payment("100", "TZS", "+255754123456"), &no_tigo)), None);
    assert_eq!(
        code(Mobile::validate(&payment("100", "TZS", "+255714123456"), &no_tigo)).as_deref(),
        Some("operator_not_supported")
    );
}

#[test]
fn the_sender_pays_one_percent_with_a_minimum_per_currency() {
    let none = Config::default();
    let quote = Mobile::quote_fee(&payment("25000", "TZS", "+255754123456"), &none).expect("quote");
    // 1 % of 25 000.00 TZS is 250.00.
    assert_eq!((quote.total(), quote.bearer()), (25_000, FeeBearer::Payer));
    // 1 % of 50.00 is 0.50, below the 1.00 minimum.
    let small = Mobile::quote_fee(&payment("50", "TZS", "+255754123456"), &none).expect("quote");
    assert_eq!(small.total(), 100);
    // UGX has no minor unit: 1 % of 1 234 is 12.34, rounded to 12, raised to the 100 minimum.
    let shillings = Mobile::quote_fee(&payment("1234", "UGX", "+256771234567"), &none).expect("quote");
    assert_eq!(shillings.total(), 100);
    let custom = Config::from_pairs([("fee.percent", "1.5"), ("fee.minimum.KES", "5")]);
    let kenya = Mobile::quote_fee(&payment("1000", "KES", "+254712345678"), &custom).expect("quote");
    assert_eq!(kenya.total(), 1_500);
}
