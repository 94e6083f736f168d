//! JSON-RPC 2.0 messages: bounded decoding that classifies a message by the fields it
//! carries, and encoding. Owns no transport and no MCP semantics: a method name is just
//! a string here.

use std::fmt;

use serde_json::{Map, Value};

/// A JSON-RPC error code. The server's own codes stay outside -32020..=-32099, which
/// MCP 2026-07-28 reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const PARSE_ERROR: Self = Self(-32700);
    pub const INVALID_REQUEST: Self = Self(-32600);
    pub const METHOD_NOT_FOUND: Self = Self(-32601);
    pub const INVALID_PARAMS: Self = Self(-32602);
    pub const INTERNAL_ERROR: Self = Self(-32603);
    /// Rate limit exceeded; `data.retry_after_ms` says when to retry.
    pub const RATE_LIMITED: Self = Self(-32000);
    /// The caller is not authenticated or not allowed (HTTP answers with 401/403 first).
    pub const UNAUTHORIZED: Self = Self(-32001);
    /// The server cannot serve the request now (e.g. the audit log cannot be written).
    pub const UNAVAILABLE: Self = Self(-32004);
    /// A resource that does not exist (the 2025-11-25 code).
    pub const RESOURCE_NOT_FOUND: Self = Self(-32002);
    /// A request the server sent to the client timed out or was cancelled.
    pub const REQUEST_TIMEOUT: Self = Self(-32003);
}

/// A request id: a string or an integer. `null` and fractional numbers are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    Num(i64),
    Str(String),
}

impl Id {
    fn from_value(v: &Value) -> Option<Id> {
        match v {
            Value::String(s) => Some(Id::Str(s.clone())),
            Value::Number(n) => n.as_i64().map(Id::Num),
            _ => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Id::Num(n) => Value::from(*n),
            Id::Str(s) => Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorObject {
    pub code: ErrorCode,
    pub message: String,
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_PARAMS, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("method not found: {}", crate::clip(method, 64)),
        )
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::INTERNAL_ERROR, "internal error")
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::from(self.code.0));
        m.insert("message".into(), Value::String(self.message.clone()));
        if let Some(d) = &self.data {
            m.insert("data".into(), d.clone());
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Id,
    pub outcome: Result<Value, ErrorObject>,
}

/// One decoded message, classified by its fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

/// Bounds applied before and while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Why a message could not be decoded. `id` is the request id when it could be read, so
/// the error response can carry it; a parse error always answers with id `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub id: Option<Id>,
    pub message: String,
}

impl DecodeError {
    fn parse(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::PARSE_ERROR,
            id: None,
            message: message.into(),
        }
    }

    fn invalid(id: Option<Id>, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::INVALID_REQUEST,
            id,
            message: message.into(),
        }
    }

    pub fn to_error(&self) -> ErrorObject {
        ErrorObject::new(self.code, self.message.clone())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one message. The size and nesting depth are checked before JSON parsing.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::invalid(
            None,
            format!(
                "message too large: {} bytes, the limit is {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::parse(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    check_depth(text.as_bytes(), limits.max_depth)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::parse(format!("invalid JSON: {}", json_error_summary(&e))))?;
    classify(value)
}

/// Classifies a parsed JSON value as a request, notification or response.
pub fn classify(value: Value) -> Result<Message, DecodeError> {
    let mut obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(DecodeError::invalid(None, "batch arrays are not supported"));
        }
        _ => {
            return Err(DecodeError::invalid(
                None,
                "a message must be a JSON object",
            ));
        }
    };
    // The id is read first so every later refusal can carry it.
    let raw_id = obj.remove("id");
    let id = match &raw_id {
        None => None,
        Some(v) => match Id::from_value(v) {
            Some(id) => Some(id),
            None => {
                let what = match v {
                    Value::Null => "id must not be null",
                    Value::Number(_) => "id must be an integer or a string",
                    _ => "id must be a string or an integer",
                };
                return Err(DecodeError::invalid(None, what));
            }
        },
    };
    match obj.remove("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        Some(_) => return Err(DecodeError::invalid(id, "jsonrpc must be \"2.0\"")),
        None => return Err(DecodeError::invalid(id, "missing jsonrpc: \"2.0\"")),
    }
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return Err(DecodeError::invalid(id, "method must be a string"));
        };
        if obj.contains_key("result") || obj.contains_key("error") {
            return Err(DecodeError::invalid(
                id,
                "a request must not carry result or error",
            ));
        }
        let params = match obj.remove("params") {
            None => None,
            Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
            Some(_) => {
                return Err(DecodeError::invalid(
                    id,
                    "params must be an object or an array",
                ));
            }
        };
        return Ok(match id {
            Some(id) => Message::Request(Request { id, method, params }),
            None => Message::Notification(Notification { method, params }),
        });
    }
    let Some(id) = id else {
        if raw_id.is_none() && (obj.contains_key("result") || obj.contains_key("error")) {
            return Err(DecodeError::invalid(None, "a response must carry an id"));
        }
        return Err(DecodeError::invalid(None, "missing method"));
    };
    match (obj.remove("result"), obj.remove("error")) {
        (Some(result), None) => Ok(Message::Response(Response {
            id,
            outcome: Ok(result),
        })),
        (None, Some(error)) => {
            let error =
                parse_error_object(error).map_err(|m| DecodeError::invalid(Some(id.clone()), m))?;
            Ok(Message::Response(Response {
                id,
                outcome: Err(error),
            }))
        }
        (Some(_), Some(_)) => Err(DecodeError::invalid(
            Some(id),
            "a response must not carry both result and error",
        )),
        (None, None) => Err(DecodeError::invalid(Some(id), "missing method")),
    }
}

fn parse_error_object(v: Value) -> Result<ErrorObject, &'static str> {
    let Value::Object(mut o) = v else {
        return Err("error must be an object");
    };
    let code = o
        .get("code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok())
        .ok_or("error.code must be an integer")?;
    let Some(Value::String(message)) = o.remove("message") else {
        return Err("error.message must be a string");
    };
    Ok(ErrorObject {
        code: ErrorCode(code),
        message,
        data: o.remove("data"),
    })
}

/// Refuses JSON nested deeper than `max_depth` without parsing it. Strings are skipped,
/// escapes included, so brackets inside them do not count.
pub fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::invalid(
                        None,
                        format!("JSON nested deeper than {max_depth} levels (at byte {i})"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn json_error_summary(e: &serde_json::Error) -> String {
    // serde_json's messages quote at most a short fragment; the position is what helps.
    let kind = match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid value",
        serde_json::error::Category::Io => "read error",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

// ---------------------------------------------------------------------------------------
// Encoding. Written by hand around serde_json so the envelope costs no intermediate map.

fn push_id(out: &mut Vec<u8>, id: &Id) {
    match id {
        // Writing into a Vec cannot fail.
        Id::Num(n) => serde_json::to_writer(&mut *out, n).expect("serializing a number"),
        Id::Str(s) => push_str(out, s),
    }
}

fn push_json(out: &mut Vec<u8>, v: &Value) {
    // Writing a Value into a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("serializing a JSON value into memory");
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("serializing a string into memory");
}

/// Encodes a successful response.
pub fn encode_result(id: &Id, result: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    push_id(&mut out, id);
    out.extend_from_slice(b",\"result\":");
    push_json(&mut out, result);
    out.push(b'}');
    out
}

/// Encodes an error response; `id` is `None` when the request's id could not be read.
pub fn encode_error(id: Option<&Id>, error: &ErrorObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    match id {
        Some(id) => push_id(&mut out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":");
    push_json(&mut out, &error.to_value());
    out.push(b'}');
    out
}

fn encode_call(id: Option<&Id>, method: &str, params: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",");
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\":");
        push_id(&mut out, id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"method\":");
    push_str(&mut out, method);
    if let Some(p) = params {
        out.extend_from_slice(b",\"params\":");
        push_json(&mut out, p);
    }
    out.push(b'}');
    out
}

/// Encodes any message; `decode(&encode(m))` gives `m` back.
pub fn encode(message: &Message) -> Vec<u8> {
    match message {
        Message::Request(r) => encode_call(Some(&r.id), &r.method, r.params.as_ref()),
        Message::Notification(n) => encode_call(None, &n.method, n.params.as_ref()),
        Message::Response(Response { id, outcome: Ok(v) }) => encode_result(id, v),
        Message::Response(Response {
            id,
            outcome: Err(e),
        }) => encode_error(Some(id), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(s: &str) -> Result<Message, DecodeError> {
        decode(s.as_bytes(), &Limits::default())
    }

    fn code(s: &str) -> i32 {
        dec(s).unwrap_err().code.0
    }

    #[test]
    fn ids_are_encoded_as_json() {
        let result = serde_json::json!({"ok": true});
        let ids = [
            (Id::Num(-5), serde_json::json!(-5)),
            (Id::Num(i64::MAX), serde_json::json!(i64::MAX)),
            (
                Id::Str("a\"b\n\u{1}é".into()),
                serde_json::json!("a\"b\n\u{1}é"),
            ),
        ];
        for (id, json_id) in ids {
            let expected = serde_json::json!({"jsonrpc": "2.0", "id": json_id, "result": result});
            let got: Value = serde_json::from_slice(&encode_result(&id, &result)).unwrap();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn classifies_by_fields() {
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Message::Request(_))
        ));
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","method":"x"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            dec(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(_))
        ));
        let Ok(Message::Response(r)) =
            dec(r#"{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"m"}}"#)
        else {
            panic!()
        };
        assert_eq!(r.outcome.unwrap_err().code, ErrorCode(-1));
    }

    #[test]
    fn error_codes() {
        assert_eq!(code("{"), -32700);
        assert_eq!(code("not json"), -32700);
        assert_eq!(code("[]"), -32600);
        assert_eq!(
            code(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            -32600
        );
        assert_eq!(code("42"), -32600);
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            -32600
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            -32600
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#),
            -32600
        );
    }

    #[test]
    fn invalid_request_keeps_the_id() {
        let e = dec(r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#).unwrap_err();
        assert_eq!(e.id, Some(Id::Str("x".into())));
        assert_eq!(dec("{").unwrap_err().id, None);
    }

    #[test]
    fn bounds() {
        let limits = Limits {
            max_bytes: 10,
            max_depth: 3,
        };
        assert_eq!(
            decode(br#"{"jsonrpc":"2.0"}"#, &limits).unwrap_err().code,
            ErrorCode::INVALID_REQUEST
        );
        let limits = Limits {
            max_bytes: 1000,
            max_depth: 3,
        };
        let deep = r#"{"jsonrpc":"2.0","method":"x","params":{"a":[[1]]}}"#;
        assert_eq!(
            decode(deep.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::INVALID_REQUEST
        );
        let ok = r#"{"jsonrpc":"2.0","method":"x","params":{"a":"[[[[[["}}"#;
        assert!(decode(ok.as_bytes(), &limits).is_ok());
        assert_eq!(
            decode(&[b'{', 0xff, b'}'], &limits).unwrap_err().code,
            ErrorCode::PARSE_ERROR
        );
        let very_deep = "[".repeat(100_000);
        assert_eq!(
            decode(very_deep.as_bytes(), &Limits::default())
                .unwrap_err()
                .code,
            ErrorCode::INVALID_REQUEST
        );
    }

    #[test]
    fn round_trip() {
        let msgs = [
            Message::Request(Request {
                id: Id::Num(-3),
                method: "tools/call".into(),
                params: Some(json!({"a":[1,"é\n"]})),
            }),
            Message::Request(Request {
                id: Id::Str("q\"".into()),
                method: "ping".into(),
                params: None,
            }),
            Message::Notification(Notification {
                method: "n".into(),
                params: Some(json!([])),
            }),
            Message::Response(Response {
                id: Id::Num(1),
                outcome: Ok(json!({})),
            }),
            Message::Response(Response {
                id: Id::Str("s".into()),
                outcome: Err(
                    ErrorObject::new(ErrorCode::INVALID_PARAMS, "bad").with_data(json!({"x":1}))
                ),
            }),
        ];
        for m in msgs {
            assert_eq!(dec(std::str::from_utf8(&encode(&m)).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn error_with_null_id() {
        let out = encode_error(None, &ErrorObject::new(ErrorCode::PARSE_ERROR, "p"));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"p"}}"#
        );
    }
}
