//! `requestState` of `input_required` results: the server's memory of an unfinished
//! request, handed to the client and echoed back on the retry. The client cannot read
//! it usefully nor change it: it is HMAC-SHA256 signed with a server key and bound to
//! the caller (principal key), the request (method, target, a digest of its arguments)
//! and an expiry. Pure: the key and `now` are arguments.
//!
//! Wire form: `base64url(payload JSON) "." base64url(tag)`, where the tag is computed
//! over the first part. A retry with a state that fails any check is refused with
//! -32602; the handler never sees it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::ErrorObject;

use crate::crypto::{hmac_sha256, hmac_sha256_verify, sha256};

/// How long a client may take to answer an `input_required` result.
pub const STATE_LIFETIME_SECS: u64 = 600;

/// Longest state accepted from a client (the server issues far shorter ones).
const MAX_STATE_CHARS: usize = 64 * 1024;

/// What a state is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// `Principal::key()` of the caller.
    pub principal: &'a str,
    pub method: &'a str,
    /// The tool or prompt name, or the resource URI.
    pub target: &'a str,
    /// `params.arguments` of the request (`Value::Null` when absent).
    pub arguments: &'a Value,
}

fn digest(arguments: &Value) -> String {
    // serde_json maps are ordered by key, so equal arguments serialize equally.
    let canonical = match arguments {
        Value::Null => "{}".to_string(),
        v => v.to_string(),
    };
    URL_SAFE_NO_PAD.encode(sha256(&[canonical.as_bytes()]))
}

/// Signs `state` for `binding`, valid until `now_secs + STATE_LIFETIME_SECS`.
pub fn seal(key: &[u8], binding: &Binding<'_>, state: &Value, now_secs: u64) -> String {
    let payload = json!({
        "v": 1,
        "p": binding.principal,
        "m": binding.method,
        "t": binding.target,
        "a": digest(binding.arguments),
        "x": now_secs + STATE_LIFETIME_SECS,
        "s": state,
    });
    let payload_b64 = URL_SAFE_NO_PAD.encode(payload.to_string());
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, &[payload_b64.as_bytes()]));
    format!("{payload_b64}.{sig}")
}

fn refused(why: &str) -> ErrorObject {
    ErrorObject::invalid_params(format!("params.requestState was refused: {why}"))
}

/// Checks a state the client echoed and returns what the server sealed in it.
pub fn open(
    key: &[u8],
    binding: &Binding<'_>,
    sealed: &str,
    now_secs: u64,
) -> Result<Value, ErrorObject> {
    if sealed.len() > MAX_STATE_CHARS {
        return Err(refused("too long"));
    }
    let (payload_b64, sig_b64) = sealed.split_once('.').ok_or_else(|| refused("malformed"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| refused("malformed"))?;
    if !hmac_sha256_verify(key, &[payload_b64.as_bytes()], &sig) {
        return Err(refused("integrity check failed"));
    }
    let payload: Value = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("malformed"))?;
    let bound = payload["v"] == 1
        && payload["p"] == binding.principal
        && payload["m"] == binding.method
        && payload["t"] == binding.target
        && payload["a"] == digest(binding.arguments).as_str();
    if !bound {
        return Err(refused("it was issued for another caller or request"));
    }
    if payload["x"].as_u64().is_none_or(|x| now_secs > x) {
        return Err(refused("it has expired; start the request again"));
    }
    Ok(payload["s"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn binding<'a>(args: &'a Value) -> Binding<'a> {
        Binding {
            principal: "local/alice",
            method: "tools/call",
            target: "deploy",
            arguments: args,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let args = json!({ "env": "prod", "n": 1 });
        let b = binding(&args);
        let s = seal(KEY, &b, &json!({ "step": 2 }), 1000);
        assert_eq!(open(KEY, &b, &s, 1001).unwrap(), json!({ "step": 2 }));
        // Tampering anywhere, another key, another caller, tool or arguments, expiry.
        let code = |r: Result<Value, ErrorObject>| r.unwrap_err().code.0;
        assert_eq!(code(open(KEY, &b, &format!("{s}-TAMPERED"), 1001)), -32602);
        let mut flipped = s.clone().into_bytes();
        flipped[3] ^= 1;
        assert!(open(KEY, &b, &String::from_utf8(flipped).unwrap(), 1001).is_err());
        assert!(open(b"another key", &b, &s, 1001).is_err());
        assert!(
            open(
                KEY,
                &Binding {
                    principal: "local/mallory",
                    ..b
                },
                &s,
                1001
            )
            .is_err()
        );
        assert!(
            open(
                KEY,
                &Binding {
                    target: "other",
                    ..b
                },
                &s,
                1001
            )
            .is_err()
        );
        let other_args = json!({ "env": "dev", "n": 1 });
        assert!(open(KEY, &binding(&other_args), &s, 1001).is_err());
        assert!(open(KEY, &b, &s, 1000 + STATE_LIFETIME_SECS + 1).is_err());
        assert!(open(KEY, &b, "no-dot", 1001).is_err());
        assert!(open(KEY, &b, "", 1001).is_err());
    }

    #[test]
    fn absent_and_empty_arguments_bind_alike() {
        let none = Value::Null;
        let empty = json!({});
        let s = seal(KEY, &binding(&none), &Value::Null, 5);
        assert!(open(KEY, &binding(&empty), &s, 6).is_ok());
    }
}
