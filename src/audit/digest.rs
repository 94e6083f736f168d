//! The arguments digest an audit record keeps instead of raw tool arguments: secrets
//! redacted, every size capped. Pure: a value in, a value out. It does not decide what
//! is audited or where the digest goes.

use serde_json::{Map, Value};

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";
/// Longest string (and object key) kept, in characters; longer ones are cut and marked.
pub const MAX_STRING_CHARS: usize = 256;
/// Most array items kept; a marker string stands for the rest.
pub const MAX_ARRAY_ITEMS: usize = 32;
/// Most object members kept; a marker member stands for the rest.
pub const MAX_OBJECT_KEYS: usize = 64;
/// Deepest nesting kept (the top-level value is depth 1).
pub const MAX_DEPTH: usize = 8;
/// Most values kept in the whole digest, so one record stays small whatever the shape.
pub const MAX_NODES: usize = 512;
/// Replaces a value nested deeper than [`MAX_DEPTH`].
pub const DEPTH_MARKER: &str = "[depth limit]";
/// Replaces values once [`MAX_NODES`] have been kept.
pub const BUDGET_MARKER: &str = "[size limit]";
/// The key of the marker member added to an object with more than [`MAX_OBJECT_KEYS`].
pub const MORE_KEYS_MARKER: &str = "[more keys]";

/// Fragments of key names whose values are secrets. A key matches when, lowercased and
/// with `-`, `_` and `.` removed, it contains one of these. Matching is deliberately
/// broad (`max_tokens` is redacted too): a redacted number costs less than a leaked key.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "apikey",
    "cookie",
    "credential",
    "privatekey",
];

/// True when the value of an object member named `key` must not be recorded.
pub fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEY_PARTS.iter().any(|part| folded.contains(part))
}

/// The digest of a request's arguments: the same shape, with the value of every member
/// whose key [`is_secret_key`] replaced by [`REDACTED`], strings and keys cut to
/// [`MAX_STRING_CHARS`] (`"abc…[truncated, 1000 chars]"`), arrays cut to
/// [`MAX_ARRAY_ITEMS`] plus a `"[+N more items]"` string, objects cut to
/// [`MAX_OBJECT_KEYS`] members (in their stored order) plus a [`MORE_KEYS_MARKER`] member
/// whose value is `"+N"`, values deeper than [`MAX_DEPTH`] replaced by
/// [`DEPTH_MARKER`], and at most [`MAX_NODES`] values in all: a container being filled
/// when the budget runs out ends with a [`BUDGET_MARKER`] item (or a member of that
/// name) and nothing after it.
pub fn digest_args(args: &Value) -> Value {
    let mut budget = MAX_NODES;
    digest(args, 1, &mut budget)
}

fn digest(value: &Value, depth: usize, budget: &mut usize) -> Value {
    if *budget == 0 {
        return Value::String(BUDGET_MARKER.to_string());
    }
    *budget -= 1;
    if depth > MAX_DEPTH {
        return Value::String(DEPTH_MARKER.to_string());
    }
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        Value::String(s) => Value::String(cap_string(s)),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items.iter().take(MAX_ARRAY_ITEMS) {
                if *budget == 0 {
                    out.push(Value::String(BUDGET_MARKER.to_string()));
                    break;
                }
                out.push(digest(item, depth + 1, budget));
            }
            if items.len() > out.len() && *budget > 0 {
                let more = items.len() - out.len();
                out.push(Value::String(format!("[+{more} more items]")));
            }
            Value::Array(out)
        }
        Value::Object(members) => {
            let mut out = Map::new();
            for (key, member) in members.iter().take(MAX_OBJECT_KEYS) {
                if *budget == 0 {
                    out.insert(BUDGET_MARKER.to_string(), Value::Bool(true));
                    break;
                }
                let kept = if is_secret_key(key) {
                    Value::String(REDACTED.to_string())
                } else {
                    digest(member, depth + 1, budget)
                };
                out.insert(cap_string(key), kept);
            }
            if members.len() > MAX_OBJECT_KEYS && *budget > 0 {
                out.insert(
                    MORE_KEYS_MARKER.to_string(),
                    Value::String(format!("+{}", members.len() - MAX_OBJECT_KEYS)),
                );
            }
            Value::Object(out)
        }
    }
}

/// `s` when it is short enough, else its first [`MAX_STRING_CHARS`] characters and a
/// marker with the original length in characters.
fn cap_string(s: &str) -> String {
    match s.char_indices().nth(MAX_STRING_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…[truncated, {} chars]", &s[..cut], s.chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_whatever_their_case_or_shape() {
        let args = json!({
            "Password": "hunter2", "client_secret": "s", "access_token": "t",
            "AUTHORIZATION": "Bearer x", "api_key": "k", "ApiKey": "k", "x-api-key": "k",
            "Cookie": "c", "credentials": {"user": "u"}, "private_key": ["pem"],
            "privateKey": "pem", "query": "SELECT 1", "limit": 5
        });
        let d = digest_args(&args);
        for key in [
            "Password",
            "client_secret",
            "access_token",
            "AUTHORIZATION",
            "api_key",
            "ApiKey",
            "x-api-key",
            "Cookie",
            "credentials",
            "private_key",
            "privateKey",
        ] {
            assert_eq!(d[key], json!(REDACTED), "{key}");
        }
        assert_eq!(d["query"], json!("SELECT 1"));
        assert_eq!(d["limit"], json!(5));
    }

    #[test]
    fn nested_secrets_are_redacted() {
        let d = digest_args(&json!({"outer": [{"db": {"password": "p", "host": "h"}}]}));
        assert_eq!(
            d,
            json!({"outer": [{"db": {"password": REDACTED, "host": "h"}}]})
        );
    }

    #[test]
    fn long_strings_are_cut_with_their_length() {
        let long = "é".repeat(1000);
        let d = digest_args(&json!({ "text": long }));
        let text = d["text"].as_str().unwrap();
        assert!(text.starts_with(&"é".repeat(MAX_STRING_CHARS)));
        assert!(text.ends_with("…[truncated, 1000 chars]"), "{text}");
        let exact = "a".repeat(MAX_STRING_CHARS);
        assert_eq!(digest_args(&json!(exact)), json!(exact));
    }

    #[test]
    fn long_keys_are_cut() {
        let key = "k".repeat(300);
        let d = digest_args(&json!({ key: 1 }));
        let (kept, _) = d.as_object().unwrap().iter().next().unwrap();
        assert!(kept.ends_with("…[truncated, 300 chars]"));
    }

    #[test]
    fn arrays_are_capped_with_a_count() {
        let d = digest_args(&json!((0..100).collect::<Vec<_>>()));
        let items = d.as_array().unwrap();
        assert_eq!(items.len(), MAX_ARRAY_ITEMS + 1);
        assert_eq!(items[31], json!(31));
        assert_eq!(items[32], json!("[+68 more items]"));
    }

    #[test]
    fn objects_are_capped_with_a_count() {
        let obj: Map<String, Value> = (0..100).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let d = digest_args(&Value::Object(obj));
        let members = d.as_object().unwrap();
        assert_eq!(members.len(), MAX_OBJECT_KEYS + 1);
        assert_eq!(members[MORE_KEYS_MARKER], json!("+36"));
    }

    #[test]
    fn deep_values_are_replaced() {
        let mut v = json!("bottom");
        for _ in 0..20 {
            v = json!([v]);
        }
        let mut d = digest_args(&v);
        for _ in 0..MAX_DEPTH - 1 {
            d = d.as_array().unwrap()[0].clone();
        }
        assert_eq!(d, json!([DEPTH_MARKER]));
    }

    #[test]
    fn the_node_budget_bounds_the_whole_digest() {
        let wide: Vec<Value> = (0..32)
            .map(|_| json!((0..32).collect::<Vec<_>>()))
            .collect();
        let d = digest_args(&json!(wide));
        let text = d.to_string();
        assert!(text.contains(BUDGET_MARKER));
        fn count(v: &Value) -> usize {
            1 + match v {
                Value::Array(a) => a.iter().map(count).sum(),
                Value::Object(o) => o.values().map(count).sum(),
                _ => 0,
            }
        }
        // Kept values plus one marker per container open when the budget ran out.
        assert!(count(&d) <= MAX_NODES + MAX_DEPTH, "{}", count(&d));
    }

    #[test]
    fn scalars_pass_through_and_input_is_untouched() {
        let args = json!({"n": 1.5, "b": true, "z": null, "token": "t"});
        let before = args.clone();
        let d = digest_args(&args);
        assert_eq!(args, before);
        assert_eq!(
            d,
            json!({"n": 1.5, "b": true, "z": null, "token": REDACTED})
        );
    }
}
