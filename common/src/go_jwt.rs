//! The checks MobiledgeX's DME (cookies) and MC (login tokens) made of a JWT before and after its
//! signature (jwt-go v3.2.0 over Go's base64 and encoding/json), with the same error texts, so clients
//! that match on them keep working: the token's form ([`parse_unverified`]) and its times
//! ([`check_times`]).

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

/// What a well-formed token says: its `alg` and its claims.
pub struct Unverified {
    pub alg: String,
    pub claims: Map<String, Value>,
}

/// Splits and decodes `token` without checking its signature.
pub fn parse_unverified(token: &str) -> Result<Unverified, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("token contains an invalid number of segments".into());
    }
    let header = decode_segment(parts[0]).map_err(|e| {
        if token.to_ascii_lowercase().starts_with("bearer ") {
            "tokenstring should not contain 'bearer '".to_string()
        } else {
            e
        }
    })?;
    let header = json_object(&header)?;
    let claims = json_object(&decode_segment(parts[1])?)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err("signing method (alg) is unspecified.".into()),
    };
    const KNOWN: &[&str] = &[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
        "PS384", "PS512", "none",
    ];
    if !KNOWN.contains(&alg.as_str()) {
        return Err("signing method (alg) is unavailable.".into());
    }
    Ok(Unverified { alg, claims })
}

/// The signature error jwt-go gives for `alg` with the DME's HMAC secret, if any.
pub fn method_error(alg: &str) -> Option<&'static str> {
    match alg {
        "HS256" | "HS384" | "HS512" => None,
        "none" => Some("'none' signature type is not allowed"),
        _ => Some("key is of invalid type"),
    }
}

/// `exp`, `iat` and `nbf` against `now` (seconds); when several fail the last check's text wins.
pub fn check_times(claims: &Map<String, Value>, now: i64) -> Result<(), String> {
    let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as i64);
    let mut err = None;
    if let Some(exp) = time("exp").filter(|exp| now > *exp) {
        err = Some(format!("token is expired by {}", go_duration(now - exp)));
    }
    if time("iat").is_some_and(|iat| now < iat) {
        err = Some("Token used before issued".into());
    }
    if time("nbf").is_some_and(|nbf| now < nbf) {
        err = Some("token is not valid yet".into());
    }
    err.map_or(Ok(()), Err)
}

/// Whole seconds as Go's `time.Duration` prints them: `5s`, `1m5s`, `1h0m5s`.
fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// jwt-go's DecodeSegment: pad to a multiple of 4, then Go's base64.URLEncoding, whose errors name the
/// first bad byte.
fn decode_segment(seg: &str) -> Result<Vec<u8>, String> {
    let mut s = seg.as_bytes().to_vec();
    s.resize(s.len().div_ceil(4) * 4, b'=');
    let bad = |i: usize| format!("illegal base64 data at input byte {i}");
    let mut si = 0;
    'quanta: while si < s.len() {
        for j in 0..4 {
            let c = s[si];
            si += 1;
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                continue;
            }
            if c != b'=' {
                return Err(bad(si - 1));
            }
            match j {
                0 | 1 => return Err(bad(si - 1)),
                2 if s.get(si) != Some(&b'=') => return Err(bad(si.min(s.len()))),
                2 => si += 1,
                _ => {}
            }
            if si < s.len() {
                return Err(bad(si));
            }
            break 'quanta;
        }
    }
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(&s).map_err(|_| bad(0))
}

/// Go's json.Unmarshal into a `map[string]interface{}`, with its error texts.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(v) => Err(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            match v {
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                _ => "array",
            }
        )),
        // (Into a JSON value, only syntax errors and serde's own, such as its nesting limit, occur.)
        Err(e) => Err(match crate::go_json::classify(bytes, &e) {
            crate::go_json::GoJsonError::Syntax { message, .. }
            | crate::go_json::GoJsonError::Other(message) => message,
            crate::go_json::GoJsonError::Type { .. } => e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn malformed_tokens_fail_with_jwt_go_texts() {
        let claims = seg(r#"{"exp":1}"#);
        let hs = seg(r#"{"alg":"HS512","typ":"JWT"}"#);
        let cases = [
            (
                "abc",
                "token contains an invalid number of segments".to_string(),
            ),
            (
                "a.b.c.d",
                "token contains an invalid number of segments".into(),
            ),
            (
                "Bearer x!.y.z",
                "tokenstring should not contain 'bearer '".into(),
            ),
            ("ab!d.x.y", "illegal base64 data at input byte 2".into()),
            ("abcde.x.y", "illegal base64 data at input byte 5".into()),
            (
                &format!("{}.x.y", seg("xyz")),
                "invalid character 'x' looking for beginning of value".into(),
            ),
            (
                &format!("{}.x.y", seg("nope")),
                "invalid character 'o' in literal null (expecting 'u')".into(),
            ),
            (
                &format!("{}.x.y", seg("{\"alg\"")),
                "unexpected end of JSON input".into(),
            ),
            (
                &format!("{}.x.y", seg("[1]")),
                "json: cannot unmarshal array into Go value of type map[string]interface {}".into(),
            ),
            (
                &format!("{}.{}.y", seg("{}"), claims),
                "signing method (alg) is unspecified.".into(),
            ),
            (
                &format!("{}.{}.y", seg(r#"{"alg":"XX1"}"#), claims),
                "signing method (alg) is unavailable.".into(),
            ),
            (
                &format!("{hs}.{}.y", seg("{\"key\" 1}")),
                "invalid character '1' after object key".into(),
            ),
        ];
        for (token, want) in cases {
            assert_eq!(
                parse_unverified(token).err().as_deref(),
                Some(want.as_str()),
                "{token}"
            );
        }
        let ok = parse_unverified(&format!("{hs}.{claims}.sig")).unwrap();
        assert_eq!(ok.alg, "HS512");
        assert_eq!(
            method_error("none"),
            Some("'none' signature type is not allowed")
        );
        assert_eq!(method_error("RS256"), Some("key is of invalid type"));
    }

    #[test]
    fn times_fail_as_jwt_go_says_the_last_check_wins() {
        let c = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 100})), 100),
            Ok(())
        );
        for (exp, want) in [(95, "5s"), (35, "1m5s"), (100 - 3605, "1h0m5s")] {
            assert_eq!(
                check_times(&c(serde_json::json!({"exp": exp})), 100),
                Err(format!("token is expired by {want}"))
            );
        }
        assert_eq!(
            check_times(&c(serde_json::json!({"exp": 1, "iat": 200})), 100).unwrap_err(),
            "Token used before issued"
        );
        assert_eq!(
            check_times(
                &c(serde_json::json!({"exp": 1, "iat": 200, "nbf": 300})),
                100
            )
            .unwrap_err(),
            "token is not valid yet"
        );
    }
}
