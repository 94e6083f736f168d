//! The 2026-07-28 per-request envelope: `params._meta` (protocol version, client
//! capabilities, client info, log level) and, on HTTP, the routing headers that must
//! agree with the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`). Pure: takes
//! the decoded request and the header values, returns the envelope or the error to send.
//! Which methods exist is decided by the caller, after the envelope passed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::{ErrorCode, ErrorObject, Request};

use crate::mcp::protocol;

/// Stateless revisions served through the envelope; also `supportedVersions` of discover.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// -32020: HTTP headers disagree with the body, or a required header is missing.
pub const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);
/// -32021: the request needs a client capability the client did not declare.
pub const MISSING_CLIENT_CAPABILITY: ErrorCode = ErrorCode(-32021);
/// -32022: the requested protocol version is not served.
pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(-32022);

/// Methods whose target is mirrored in `Mcp-Name`, and the param that holds it.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The routing headers of an HTTP request, as received (values already trimmed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingHeaders<'a> {
    pub protocol_version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
    /// A routing header sent more than once (readers would disagree on its value).
    pub duplicated: Option<&'a str>,
    /// Every header (names lower-case), for the `Mcp-Param-*` ones.
    pub all: &'a [(String, String)],
}

/// What a valid envelope says about the caller, for this one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub version: String,
    pub capabilities: Value,
    /// `clientInfo` when the client sent one (it is optional).
    pub client_info: Option<Value>,
    /// Rank (see `protocol::LOG_LEVELS`) from which `notifications/message` may be sent;
    /// `None`: the client did not opt in, so no log message is sent at all.
    pub log_level: Option<usize>,
}

impl Envelope {
    /// The client's name, for logs and the record of stateless callers.
    pub fn client_name(&self) -> &str {
        self.client_info
            .as_ref()
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("-")
    }
}

/// True when the request carries the 2026 envelope (a protocol version in `_meta`).
pub fn carries_envelope(req: &Request) -> bool {
    req.params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some()
}

/// True for revisions served by the `initialize` handshake (routed to the 2025 wire).
pub fn is_handshake_version(v: &str) -> bool {
    protocol::is_supported(v) || v == "2024-11-05"
}

/// The `UnsupportedProtocolVersionError` for `requested`.
pub fn unsupported_version(requested: &str) -> ErrorObject {
    ErrorObject::new(
        UNSUPPORTED_VERSION,
        format!(
            "unsupported protocol version {:?}; this server serves {} per request (and {} through initialize)",
            clip(requested),
            MODERN_VERSIONS.join(", "),
            protocol::SUPPORTED.join(", ")
        ),
    )
    .with_data(json!({ "supported": MODERN_VERSIONS, "requested": requested }))
}

/// The `MissingRequiredClientCapabilityError` naming what is needed, e.g. `{"sampling": {}}`.
pub fn missing_capability(required: Value) -> ErrorObject {
    let names: Vec<&str> = required
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    ErrorObject::new(
        MISSING_CLIENT_CAPABILITY,
        format!(
            "this request needs the client capability {} in {META_CLIENT_CAPABILITIES}",
            names.join(", ")
        ),
    )
    .with_data(json!({ "requiredCapabilities": required }))
}

fn mismatch(message: String) -> ErrorObject {
    ErrorObject::new(HEADER_MISMATCH, message)
}

/// Decodes an `Mcp-Name` value: verbatim, or the `=?base64?…?=` form clients use for
/// names that are not plain printable ASCII. `None` for a malformed encoded form.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_string());
    };
    let bytes = STANDARD.decode(payload).ok()?;
    // Only the canonical encoding, so one name has exactly one header spelling.
    if STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Runs the envelope checks in the order the revision prescribes; the first that fails
/// decides the error: `_meta` shape (-32602), headers against body (-32020, HTTP only),
/// supported version (-32022).
pub fn classify(
    req: &Request,
    headers: Option<&RoutingHeaders<'_>>,
) -> Result<Envelope, ErrorObject> {
    let meta = req
        .params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ErrorObject::invalid_params(format!(
                "params._meta must be an object carrying {META_PROTOCOL_VERSION:?} and {META_CLIENT_CAPABILITIES:?}"
            ))
        })?;
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(ErrorObject::invalid_params(format!(
            "params._meta lacks the required key(s) {}",
            missing.join(", ")
        )));
    }
    let version = &meta[META_PROTOCOL_VERSION];
    if let Some(h) = headers {
        check_headers(req, version, h)?;
    }
    let version = version.as_str().ok_or_else(|| {
        ErrorObject::invalid_params(format!(
            "params._meta {META_PROTOCOL_VERSION:?} must be a string"
        ))
    })?;
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported_version(version));
    }
    let capabilities = match &meta[META_CLIENT_CAPABILITIES] {
        c @ Value::Object(_) => c.clone(),
        _ => {
            return Err(ErrorObject::invalid_params(format!(
                "params._meta {META_CLIENT_CAPABILITIES:?} must be an object"
            )));
        }
    };
    let client_info = match meta.get(META_CLIENT_INFO) {
        None | Some(Value::Null) => None,
        Some(c @ Value::Object(o)) if o.get("name").is_some_and(Value::is_string) => {
            Some(c.clone())
        }
        Some(_) => {
            return Err(ErrorObject::invalid_params(format!(
                "params._meta {META_CLIENT_INFO:?} must be an object with a name"
            )));
        }
    };
    let log_level = match meta.get(META_LOG_LEVEL) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(protocol::log_level_rank)
                .ok_or_else(|| {
                    ErrorObject::invalid_params(format!(
                        "params._meta {META_LOG_LEVEL:?} must be one of {}",
                        protocol::LOG_LEVELS.join(", ")
                    ))
                })?,
        ),
    };
    Ok(Envelope {
        version: version.to_string(),
        capabilities,
        client_info,
        log_level,
    })
}

fn check_headers(
    req: &Request,
    version: &Value,
    h: &RoutingHeaders<'_>,
) -> Result<(), ErrorObject> {
    if let Some(name) = h.duplicated {
        return Err(mismatch(format!(
            "the {name} header was sent more than once"
        )));
    }
    match h.protocol_version {
        None => {
            return Err(mismatch(
                "the MCP-Protocol-Version header is required".into(),
            ));
        }
        Some(v) if version.as_str() != Some(v) => {
            return Err(mismatch(format!(
                "the MCP-Protocol-Version header {:?} does not match params._meta {META_PROTOCOL_VERSION:?}",
                clip(v)
            )));
        }
        Some(_) => {}
    }
    match h.method {
        None => return Err(mismatch("the Mcp-Method header is required".into())),
        Some(m) if m != req.method => {
            return Err(mismatch(format!(
                "the Mcp-Method header {:?} does not match the method {:?}",
                clip(m),
                clip(&req.method)
            )));
        }
        Some(_) => {}
    }
    let Some(key) = name_param(&req.method) else {
        return Ok(());
    };
    let Some(body) = req
        .params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
    else {
        // No name in the body: the handler reports the missing param.
        return Ok(());
    };
    match h.name.map(decode_header_value) {
        None => Err(mismatch(format!(
            "the Mcp-Name header is required for {}",
            req.method
        ))),
        Some(Some(name)) if name == body => Ok(()),
        Some(_) => Err(mismatch(format!(
            "the Mcp-Name header does not match params.{key} {:?}",
            clip(body)
        ))),
    }
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` (HTTP): an argument whose schema
/// property carries `x-mcp-header: TOKEN` is mirrored in `Mcp-Param-TOKEN` (verbatim or
/// `=?base64?…?=`), and the two must agree; a header without the argument, or the
/// argument without its header, is a mismatch too (-32020).
pub fn check_param_headers(
    input_schema: &Value,
    arguments: Option<&Value>,
    headers: &[(String, String)],
) -> Result<(), ErrorObject> {
    let Some(props) = input_schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (prop, schema) in props {
        let Some(token) = schema.get("x-mcp-header").and_then(Value::as_str) else {
            continue;
        };
        let name = format!("mcp-param-{}", token.to_ascii_lowercase());
        let mut sent = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&name));
        let (header, again) = (sent.next().map(|(_, v)| v.as_str()), sent.next());
        if again.is_some() {
            return Err(mismatch(format!(
                "the Mcp-Param-{token} header was sent more than once"
            )));
        }
        let value = arguments.and_then(|a| a.get(prop)).filter(|v| !v.is_null());
        let agrees = match (value, header) {
            (None, None) => true,
            (Some(v), Some(h)) => decode_header_value(h).is_some_and(|h| match v {
                Value::String(s) => h == *s,
                Value::Bool(b) => h == b.to_string(),
                Value::Number(n) => h.parse::<f64>().ok() == n.as_f64(),
                // Objects and arrays are never mirrored in a header.
                _ => true,
            }),
            (Some(Value::Object(_) | Value::Array(_)), None) => true,
            _ => false,
        };
        if !agrees {
            return Err(mismatch(format!(
                "the Mcp-Param-{token} header does not match params.arguments.{}",
                clip(prop)
            )));
        }
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mreg_wire::jsonrpc::Id;

    fn req(method: &str, params: Value) -> Request {
        Request {
            id: Id::Num(7),
            method: method.into(),
            params: Some(params),
        }
    }

    fn meta(version: &str) -> Value {
        json!({ META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}, META_CLIENT_INFO: { "name": "t", "version": "1" } })
    }

    fn headers<'a>(version: &'a str, method: &'a str, name: Option<&'a str>) -> RoutingHeaders<'a> {
        RoutingHeaders {
            protocol_version: Some(version),
            method: Some(method),
            name,
            duplicated: None,
            all: &[],
        }
    }

    fn code(r: Result<Envelope, ErrorObject>) -> i32 {
        r.unwrap_err().code.0
    }

    #[test]
    fn meta_shape_comes_first() {
        let h = headers("bogus", "x", None);
        assert_eq!(
            code(classify(&req("server/discover", json!({})), Some(&h))),
            -32602
        );
        let no_caps = json!({ "_meta": { META_PROTOCOL_VERSION: "2026-07-28" } });
        assert_eq!(
            code(classify(&req("server/discover", no_caps), Some(&h))),
            -32602
        );
        let no_version = json!({ "_meta": { META_CLIENT_CAPABILITIES: {} } });
        assert_eq!(
            code(classify(&req("server/discover", no_version), None)),
            -32602
        );
    }

    #[test]
    fn header_mismatch_before_version() {
        let r = req("server/discover", json!({ "_meta": meta("v999.0.0") }));
        let h = headers("2026-07-28", "server/discover", None);
        assert_eq!(code(classify(&r, Some(&h))), -32020);
        let h = headers("v999.0.0", "server/discover", None);
        let e = classify(&r, Some(&h)).unwrap_err();
        assert_eq!(e.code.0, -32022);
        assert_eq!(
            e.data.unwrap(),
            json!({ "supported": ["2026-07-28"], "requested": "v999.0.0" })
        );
        // Without headers (stdio) only the version rung applies.
        assert_eq!(code(classify(&r, None)), -32022);
    }

    #[test]
    fn method_and_name_headers() {
        let r = req(
            "tools/call",
            json!({ "name": "echo", "_meta": meta("2026-07-28") }),
        );
        let ok = headers("2026-07-28", "tools/call", Some("echo"));
        let env = classify(&r, Some(&ok)).unwrap();
        assert_eq!(env.client_name(), "t");
        assert_eq!(env.log_level, None);
        for bad in [
            headers("2026-07-28", "TOOLS/CALL", Some("echo")),
            headers("2026-07-28", "tools/call", Some("other")),
            headers("2026-07-28", "tools/call", None),
            RoutingHeaders { method: None, ..ok },
            RoutingHeaders {
                protocol_version: None,
                ..ok
            },
            RoutingHeaders {
                duplicated: Some("mcp-method"),
                ..ok
            },
        ] {
            assert_eq!(code(classify(&r, Some(&bad))), -32020, "{bad:?}");
        }
        let encoded = format!("=?base64?{}?=", STANDARD.encode("echo"));
        assert!(
            classify(
                &r,
                Some(&headers("2026-07-28", "tools/call", Some(&encoded)))
            )
            .is_ok()
        );
    }

    #[test]
    fn client_info_is_optional_and_log_level_checked() {
        let m = json!({ META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: { "sampling": {} }, META_LOG_LEVEL: "warning" });
        let env = classify(&req("tools/list", json!({ "_meta": m })), None).unwrap();
        assert_eq!(env.client_info, None);
        assert_eq!(env.log_level, protocol::log_level_rank("warning"));
        let bad = json!({ META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}, META_LOG_LEVEL: "loud" });
        assert_eq!(
            code(classify(&req("tools/list", json!({ "_meta": bad })), None)),
            -32602
        );
    }

    #[test]
    fn header_values() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64?w6k=?=").as_deref(), Some("é"));
        assert_eq!(decode_header_value("=?base64?***?="), None);
        assert!(is_handshake_version("2025-06-18") && is_handshake_version("2024-11-05"));
        assert!(!is_handshake_version("2026-07-28") && !is_handshake_version("v999.0.0"));
    }

    #[test]
    fn param_headers() {
        let schema = json!({ "type": "object", "properties": {
            "region": { "type": "string", "x-mcp-header": "Region" },
            "n": { "type": "integer", "x-mcp-header": "N" },
            "free": { "type": "string" } } });
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect()
        };
        let args = json!({ "region": "Hello", "n": 3, "free": "x" });
        let ok = |headers: &[(&str, &str)]| check_param_headers(&schema, Some(&args), &h(headers));
        assert!(ok(&[("Mcp-Param-Region", "Hello"), ("Mcp-Param-N", "3")]).is_ok());
        assert!(
            ok(&[
                ("mcp-param-region", "=?base64?SGVsbG8=?="),
                ("Mcp-Param-N", "3.0")
            ])
            .is_ok()
        );
        for bad in [
            vec![("Mcp-Param-N", "3")],
            vec![
                ("Mcp-Param-Region", "=?base64?SGVsbG8?="),
                ("Mcp-Param-N", "3"),
            ],
            vec![
                ("Mcp-Param-Region", "=?base64?SGVs!!!bG8=?="),
                ("Mcp-Param-N", "3"),
            ],
            vec![("Mcp-Param-Region", "hello"), ("Mcp-Param-N", "3")],
            vec![("Mcp-Param-Region", "Hello"), ("Mcp-Param-N", "4")],
        ] {
            assert_eq!(ok(&bad).unwrap_err().code.0, -32020, "{bad:?}");
        }
        // A literal that only looks half like the encoded form is taken as it is.
        let args = json!({ "region": "=?base64?SGVsbG8=" });
        assert!(
            check_param_headers(
                &schema,
                Some(&args),
                &h(&[("Mcp-Param-Region", "=?base64?SGVsbG8=")])
            )
            .is_ok()
        );
        // A header for an argument that is not there.
        assert!(check_param_headers(&schema, None, &h(&[("Mcp-Param-Region", "x")])).is_err());
    }

    #[test]
    fn missing_capability_names_an_object() {
        let e = missing_capability(json!({ "sampling": {} }));
        assert_eq!(e.code.0, -32021);
        assert_eq!(
            e.data.unwrap()["requiredCapabilities"],
            json!({ "sampling": {} })
        );
    }
}
