//! `_secure_query_data` (roles user, admin): reads rows of one collection of the
//! caller's tenant with a filter, projection, ordering and cursor pagination. The tenant
//! is `ctx.principal.tenant`, never an argument (the input schema admits no other
//! property). Parsing is `mreg_wire::query`'s, storage `crate::data`'s.
//!
//! A refused filter, `fields`, `order_by` or cursor is a tool error (`isError`) naming
//! the byte position and the reason, so a model can correct itself. A collection the
//! tenant does not have is a tool error listing the tenant's own collections (never
//! anyone else's). Blank `filter`, `order_by` and `cursor` read as absent.

use serde_json::{Map, Value, json};

use mreg_wire::jsonrpc::ErrorObject;
use mreg_wire::query::{self, MAX_FIELDS, MAX_INPUT, MAX_ORDER_INPUT, QueryError};

use crate::data::{self, DataError, Limits, QuerySpec};
use crate::mcp::registry::{Tool, ToolOutput};

pub const NAME: &str = "_secure_query_data";

/// Page sizes a caller may ask for; `max_rows` caps them further.
const MAX_LIMIT: u64 = 1000;
const MAX_CURSOR: usize = 512;
/// Collections named in the "unknown collection" error, at most.
const MAX_LISTED: usize = 50;

const DESCRIPTION: &str = "Query rows of a collection of your own tenant (the tenant comes \
from your sign-in, never from arguments). `filter`: comparisons `field = 'text'`, `!=`, `<`, \
`<=`, `>`, `>=`, `field IN ('a', 2)`, `field CONTAINS 'x'` (substring, or array element), \
combined with AND, OR, NOT and parentheses; values are single-quoted strings ('' for a \
quote), numbers, true, false, null; fields may be dotted paths (a.b). A missing field is \
null; comparing different types is false. `fields`: the fields to return. `order_by`: \
`field [ASC|DESC], ...`. When `next_cursor` is not null, pass it as `cursor` with the same \
query for the next page.";

fn input_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "collection": {
                "type": "string", "minLength": 1, "maxLength": data::MAX_NAME,
                "pattern": "^[A-Za-z0-9_.-]+$",
                "description": "The collection to read, in your tenant.",
            },
            "filter": {
                "type": "string", "maxLength": MAX_INPUT,
                "description": "e.g. status = 'open' AND (priority >= 2 OR tags CONTAINS 'urgent')",
            },
            "fields": {
                "type": "array", "maxItems": MAX_FIELDS,
                "items": { "type": "string", "minLength": 1, "maxLength": query::MAX_IDENT },
                "description": "Fields to return (dotted paths); all when absent.",
            },
            "order_by": {
                "type": "string", "maxLength": MAX_ORDER_INPUT,
                "description": "e.g. created DESC, name",
            },
            "limit": {
                "type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                "description": "Rows per page; the server caps it.",
            },
            "cursor": {
                "type": "string", "maxLength": MAX_CURSOR,
                "description": "`next_cursor` of the previous page of the same query.",
            },
        },
        "required": ["collection"],
        "additionalProperties": false,
    })
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "tenant": { "type": "string" },
            "collection": { "type": "string" },
            "rows": { "type": "array", "items": { "type": "object" } },
            "count": { "type": "integer", "minimum": 0 },
            "next_cursor": { "type": ["string", "null"] },
            "scanned": { "type": "integer", "minimum": 0 },
        },
        "required": ["tenant", "collection", "rows", "count", "next_cursor", "scanned"],
        "additionalProperties": false,
    })
}

/// `what` refused at `e.pos`, with a short excerpt of the input from there.
fn refusal(what: &str, input: &str, e: &QueryError) -> String {
    let mut msg = format!("{what} refused at byte {}: {}", e.pos, e.reason);
    if let Some(rest) = input.get(e.pos..).filter(|r| !r.is_empty()) {
        let excerpt: String = rest.chars().take(24).collect();
        msg.push_str(&format!(" (near \"{}\")", excerpt.escape_debug()));
    }
    msg
}

/// An optional string argument; blank reads as absent.
fn opt_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

/// The query the arguments describe, or the message of a tool error.
fn spec(args: &Map<String, Value>) -> Result<QuerySpec, String> {
    let filter = opt_str(args, "filter")?
        .map(|f| query::parse(f).map_err(|e| refusal("filter", f, &e)))
        .transpose()?;
    let fields = match args.get("fields") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let names = items
                .iter()
                .map(|v| v.as_str().ok_or("`fields` must be an array of strings"))
                .collect::<Result<Vec<_>, _>>()?;
            Some(query::parse_fields(&names).map_err(|e| format!("fields refused: {e}"))?)
        }
        Some(_) => return Err("`fields` must be an array of strings".into()),
    };
    let order_by = opt_str(args, "order_by")?
        .map(|o| query::parse_order_by(o).map_err(|e| refusal("order_by", o, &e)))
        .transpose()?
        .unwrap_or_default();
    let limit = match args.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or(format!("`limit` must be an integer from 1 to {MAX_LIMIT}"))?;
            Some(n as usize)
        }
    };
    let cursor = opt_str(args, "cursor")?.map(str::to_string);
    Ok(QuerySpec {
        filter,
        fields,
        order_by,
        limit,
        cursor,
    })
}

fn unknown_collection(tree: &sled::Tree, tenant: &str, collection: &str) -> ToolOutput {
    let mine = data::collections(tree, tenant, MAX_LISTED).unwrap_or_default();
    let known = if mine.is_empty() {
        "your tenant has no collections".to_string()
    } else {
        format!("your collections: {}", mine.join(", "))
    };
    ToolOutput::error(format!(
        "no collection `{collection}` in your tenant; {known}"
    ))
}

fn run(
    tree: &sled::Tree,
    limits: Limits,
    tenant: &str,
    args: &Map<String, Value>,
) -> Result<ToolOutput, DataError> {
    let collection = match args.get("collection").and_then(Value::as_str) {
        Some(c) if data::valid_name(c) => c,
        _ => {
            return Ok(ToolOutput::error(format!(
                "`collection` must be 1 to {} characters of A-Z a-z 0-9 _ . -",
                data::MAX_NAME
            )));
        }
    };
    let spec = match spec(args) {
        Ok(s) => s,
        Err(msg) => return Ok(ToolOutput::error(msg)),
    };
    if !data::exists(tree, tenant, collection)? {
        return Ok(unknown_collection(tree, tenant, collection));
    }
    let page = data::query(tree, tenant, collection, &spec, limits)?;
    Ok(ToolOutput::structured(json!({
        "tenant": tenant,
        "collection": collection,
        "count": page.rows.len(),
        "rows": page.rows,
        "next_cursor": page.next_cursor,
        "scanned": page.scanned,
    })))
}

/// The tool over the `data` tree; pages hold at most `max_rows` rows (`MREG_QUERY_MAX_ROWS`).
pub fn tool(tree: sled::Tree, max_rows: usize) -> Tool {
    let limits = Limits::new(max_rows);
    Tool::new(NAME, DESCRIPTION, input_schema(), move |ctx, args| {
        let tenant = ctx.principal.tenant.as_str();
        if !data::valid_name(tenant) {
            return Ok(ToolOutput::error(
                "your sign-in carries no tenant that can hold data",
            ));
        }
        match run(&tree, limits, tenant, args) {
            Ok(out) => Ok(out),
            Err(e @ (DataError::Sled(_) | DataError::Io(_))) => {
                log::error!("{NAME} for tenant {tenant}: {e}");
                Err(ErrorObject::internal())
            }
            Err(e) => Ok(ToolOutput::error(e.to_string())),
        }
    })
    .title("Query tenant data")
    .output_schema(output_schema())
    .annotations(json!({ "readOnlyHint": true, "idempotentHint": true, "openWorldHint": false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::schema;

    #[test]
    fn schema_refuses_a_tenant_argument() {
        let s = input_schema();
        assert!(schema::validate(&s, &json!({"collection": "c"})).is_ok());
        assert!(schema::validate(&s, &json!({"collection": "c", "tenant": "other"})).is_err());
        assert!(schema::validate(&s, &json!({})).is_err());
        assert!(schema::validate(&s, &json!({"collection": "c", "limit": 0})).is_err());
        let long = "x".repeat(MAX_INPUT + 1);
        assert!(schema::validate(&s, &json!({"collection": "c", "filter": long})).is_err());
    }

    #[test]
    fn refusals_name_the_position() {
        let args = json!({"collection": "c", "filter": "a = 1; DROP TABLE t"});
        let msg = spec(args.as_object().unwrap()).unwrap_err();
        assert!(msg.starts_with("filter refused at byte 5: `;`"), "{msg}");
        assert!(msg.contains("near \"; DROP TABLE t\""), "{msg}");
        let args = json!({"collection": "c", "order_by": "a DESK"});
        let msg = spec(args.as_object().unwrap()).unwrap_err();
        assert!(msg.starts_with("order_by refused at byte 2"), "{msg}");
        let args = json!({"collection": "c", "filter": " ", "order_by": "", "cursor": ""});
        assert_eq!(
            spec(args.as_object().unwrap()).unwrap(),
            QuerySpec::default()
        );
        let args = json!({"collection": "c", "limit": 5.0, "fields": ["a.b"]});
        assert_eq!(spec(args.as_object().unwrap()).unwrap().limit, Some(5));
    }
}
