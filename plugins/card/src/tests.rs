use std::collections::BTreeMap;

use wasmpay_sdk::{Config, FeeBearer, Money, Payment, Plugin, Refund, RefundFee, RefundedPayment, Rejection};

use super::*;

/// 2026-11-26T00:00:00Z.
const NOW_MS: u64 = 1_795_651_200_000;

fn payment(minor_units: u64, currency: &str, details: &[(&str, &str)]) -> Payment {
    Payment {
        id: "p1".into(),
        payer: "alice".into(),
        payee: "shop".into(),
        amount: Money::new(minor_units, currency),
        method: "card".into(),
        details: details.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        metadata: BTreeMap::new(),
        received_at_ms: NOW_MS,
    }
}

fn code(result: Result<(), Rejection>) -> Option<String> {
    result.err().map(|r| r.code)
}

const VISA: &str = "4242 4242 4242 4242";

#[test]
fn luhn_known_vectors() {
    assert!(luhn_valid("4242424242424242"));
    assert!(luhn_valid("79927398713"));
    assert!(luhn_valid("378282246310005"));
    assert!(!luhn_valid("4242424242424241"));
    assert!(!luhn_valid("79927398710"));
    assert!(!luhn_valid(""));
    assert!(!luhn_valid("4242a24242424242"));
}

#[test]
fn brands_from_bin() {
    assert_eq!(Brand::from_pan("4242424242424242"), Some(Brand::Visa));
    assert_eq!(Brand::from_pan("5555555555554444"), Some(Brand::Mastercard));
    assert_eq!(Brand::from_pan("2223003122003222"), Some(Brand::Mastercard));
    assert_eq!(Brand::from_pan("378282246310005"), Some(Brand::Amex));
    assert_eq!(Brand::from_pan("6011111111111117"), Some(Brand::Discover));
    assert_eq!(Brand::from_pan("3530111333300000"), None);
}

#[test]
fn a_good_card_is_approved() {
    let config = Config::default();
    assert_eq!(code(Card::validate(&payment(1_000, "EUR", &[("pan", VISA), ("expiry", "12/30")]), &config)), None);
    let token = [("token", "tok_abcdefgh1234"), ("brand", "visa"), ("expiry", "11/26")];
    assert_eq!(code(Card::validate(&payment(1_000, "EUR", &token), &config)), None);
}

#[test]
fn bad_cards_are_declined_with_stable_codes() {
    let config = Config::default();
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("pan", "4242424242424241"), ("expiry", "12/30")], "invalid_card_number"),
        (&[("pan", "3530111333300000"), ("expiry", "12/30")], "unsupported_card_brand"),
        (&[("pan", VISA), ("expiry", "10/26")], "card_expired"),
        (&[("pan", VISA), ("expiry", "2030-12")], "invalid_expiry"),
        (&[("expiry", "12/30")], "missing_card_details"),
        (&[("pan", VISA), ("token", "tok_abcdefgh"), ("expiry", "12/30")], "missing_card_details"),
        (&[("token", "tok_abcdefgh"), ("brand", "diners"), ("expiry", "12/30")], "unsupported_card_brand"),
    ];
    for (details, expected) in cases {
        assert_eq!(code(Card::validate(&payment(1_000, "EUR", details), &config)).as_deref(), Some(expected));
    }
}

#[test]
fn limits_come_from_config_per_currency() {
    let details = [("pan", VISA), ("expiry", "12/30")];
    let config = Config::from_pairs([("limit.EUR", "500")]);
    assert_eq!(code(Card::validate(&payment(500, "EUR", &details), &config)), None);
    assert_eq!(code(Card::validate(&payment(501, "EUR", &details), &config)).as_deref(), Some("amount_over_limit"));
    assert_eq!(code(Card::validate(&payment(1, "SEK", &details), &config)).as_deref(), Some("unsupported_currency"));
    let sek = Config::from_pairs([("limit.SEK", "500")]);
    assert_eq!(code(Card::validate(&payment(1, "SEK", &details), &sek)), None);
}

#[test]
fn fee_is_percentage_plus_fixed_rounded_half_up_borne_by_payee() {
    let quote = Card::quote_fee(&payment(1_050, "EUR", &[]), &Config::default()).expect("quote");
    assert_eq!(quote.bearer(), FeeBearer::Payee);
    assert_eq!(quote.total(), 30 + 25); // 2.9 % of 10.50 = 0.3045 -> 0.30, plus 0.25
    let quote = Card::quote_fee(&payment(1_550, "USD", &[]), &Config::default()).expect("quote");
    assert_eq!(quote.total(), 45 + 30); // 0.4495 -> 0.45, plus 0.30
    let custom = Config::from_pairs([("fee.bps", "100"), ("fee.fixed.EUR", "0")]);
    assert_eq!(Card::quote_fee(&payment(50, "EUR", &[]), &custom).map(|q| q.total()), Ok(1));
}

#[test]
fn fee_never_exceeds_the_amount() {
    let quote = Card::quote_fee(&payment(10, "EUR", &[]), &Config::default()).expect("quote");
    assert_eq!(quote.total(), 10);
}

fn paid(amount: u64, fee: u64, refunded: u64, fee_reversed: u64) -> RefundedPayment {
    RefundedPayment {
        id: "p1".into(),
        payer: "alice".into(),
        payee: "shop".into(),
        amount: Money::new(amount, "EUR"),
        method: "card".into(),
        metadata: BTreeMap::new(),
        received_at_ms: NOW_MS,
        fee,
        fee_bearer: FeeBearer::Payee,
        refunded,
        fee_reversed,
    }
}

fn refund(amount: u64) -> Refund {
    Refund { id: "r1".into(), amount: Money::new(amount, "EUR"), received_at_ms: NOW_MS }
}

#[test]
fn a_refund_gives_back_the_percentage_part_of_the_fee_and_keeps_the_fixed_part() {
    // 100.00 EUR paid 2.90 + 0.25; refunding 40.00 gives back 2.9 % of it.
    let fee = Card::quote_refund_fee(&paid(10_000, 315, 0, 0), &refund(4_000), &Config::default());
    assert_eq!(fee, Ok(RefundFee::Reverse(116)));
    // Never above the host's bound, whatever the configuration says.
    let generous = Config::from_pairs([("fee.bps", "10000")]);
    assert_eq!(
        Card::quote_refund_fee(&paid(10_000, 315, 0, 0), &refund(4_000), &generous),
        Ok(RefundFee::Reverse(126))
    );
    let keep = Config::from_pairs([("refund.reverse", "none")]);
    assert_eq!(Card::quote_refund_fee(&paid(10_000, 315, 0, 0), &refund(4_000), &keep), Ok(RefundFee::Keep));
    // Many small refunds give back the percentage part of what they refunded in all, not each
    // one's share rounded up: 18 refunded of 1000 is 0.52, then 36 is 1.04, ...
    let (mut payment, mut back) = (paid(1_000, 54, 0, 0), 0);
    while payment.refunded < 1_000 {
        let small = refund(18.min(1_000 - payment.refunded));
        let Ok(RefundFee::Reverse(fee)) = Card::quote_refund_fee(&payment, &small, &Config::default()) else {
            panic!("the card reverses");
        };
        payment.refunded += small.amount.minor_units();
        payment.fee_reversed += fee;
        back += fee;
    }
    assert_eq!(back, 29, "2.9 % of 10.00, the fixed 0.25 kept");
    let wrong = Config::from_pairs([("refund.reverse", "all")]);
    let refused = Card::quote_refund_fee(&paid(10_000, 315, 0, 0), &refund(4_000), &wrong);
    assert_eq!(refused.map_err(|rejection| rejection.code), Err("plugin_misconfigured".to_owned()));
}
