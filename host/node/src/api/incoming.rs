//! Reading what a request says: its path (percent-decoded), its bearer token, its JSON body
//! (bounded in size and time, strict about repeated keys).

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use wasmpay_protocol::MAX_MESSAGE_BYTES;

use super::{Body, problem};

/// How long a client may take to send a request body once its headers are in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The path's segments, each percent-decoded (`x%3Acard` is `x:card`); `None` if a segment
/// does not decode to UTF-8. Splitting comes first, so `%2F` stays inside its segment.
pub fn path_segments(path: &str) -> Option<Vec<String>> {
    path.trim_matches('/').split('/').map(percent_decode).collect()
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Whether the request carries `Authorization: Bearer <expected>` (the scheme in any case,
/// RFC 9110), compared in constant time so timing does not reveal a prefix.
/// The query string's parameters, percent-decoded (`+` is a space); `None` if one is not valid
/// percent-encoded UTF-8 or a name repeats.
pub fn query_parameters(query: Option<&str>) -> Option<std::collections::BTreeMap<String, String>> {
    let mut parameters = std::collections::BTreeMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| percent_decode(&text.replace('+', " "));
        if parameters.insert(decode(name)?, decode(value)?).is_some() {
            return None;
        }
    }
    Some(parameters)
}

pub fn authorized(expected: Option<&str>, request: &Request<Incoming>) -> bool {
    let Some(expected) = expected else { return false };
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let presented = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim_start_matches(' '),
        _ => return false,
    };
    presented.len() == expected.len()
        && presented.bytes().zip(expected.bytes()).fold(0_u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// The `Idempotency-Key` header, if sent: a command sent again with the same key is made
/// once. It follows the rule of payment ids (1-64 characters of `[A-Za-z0-9_.:-]`).
pub fn idempotency_key(request: &Request<Incoming>) -> Result<Option<String>, &'static str> {
    let Some(value) = request.headers().get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(key) if wasmpay_protocol::PaymentId::new(key).is_ok() => Ok(Some(key.to_owned())),
        _ => Err("`Idempotency-Key` must be 1-64 characters of A-Z a-z 0-9 _ - . :"),
    }
}

/// The body as strict JSON: at most 64 KiB, within [`BODY_READ_TIMEOUT`], no repeated keys.
pub async fn read_json(request: Request<Incoming>) -> Result<serde_json::Value, Response<Body>> {
    read_json_up_to(request, MAX_MESSAGE_BYTES).await
}

/// The body as strict JSON of at most `limit` bytes (a plugin upload), within
/// [`BODY_READ_TIMEOUT`].
pub async fn read_json_up_to(request: Request<Incoming>, limit: usize) -> Result<serde_json::Value, Response<Body>> {
    let too_large = format!("body over {limit} bytes or unreadable");
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(request.into_body(), limit).collect())
        .await
        .map_err(|_| problem(StatusCode::REQUEST_TIMEOUT, "invalid_request", "the body did not arrive in time"))?
        .map_err(|_| problem(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", &too_large))?;
    wasmpay_protocol::json::parse(&collected.to_bytes())
        .map_err(|error| problem(StatusCode::BAD_REQUEST, "invalid_request", &format!("not valid JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_decoded_after_splitting() {
        let decoded = path_segments("/v1/payments/x%3Acard%3A1").expect("valid");
        assert_eq!(decoded, ["v1", "payments", "x:card:1"]);
        assert_eq!(path_segments("/v1/accounts/a%2Db").expect("valid"), ["v1", "accounts", "a-b"]);
        assert_eq!(path_segments("/v1/accounts/a%2Fb").expect("valid"), ["v1", "accounts", "a/b"]);
        for bad in ["/v1/%zz", "/v1/%4", "/v1/%ff%fe", "/v1/%+A"] {
            assert_eq!(path_segments(bad), None, "{bad}");
        }
    }
}
