//! The MCP request methods after the lifecycle: tools, resources, prompts, completion
//! and logging. Each validates its params and says which one is wrong and why.

use serde_json::{Map, Value, json};

use mreg_wire::jsonrpc::{ErrorCode, ErrorObject};

use crate::mcp::context::Ctx;
use crate::mcp::protocol;
use crate::mcp::registry::ToolOutput;
use crate::mcp::server::Server;

/// -32002, the 2025-11-25 "resource not found" code.
pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(-32002);

const PAGE_SIZE: usize = 100;

/// The name a request acts on, for the chain to see: a tool, a prompt or a resource URI.
pub fn target_of(method: &str, params: Option<&Value>) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params?
        .get(key)?
        .as_str()
        .map(|s| s.chars().take(256).collect())
}

fn str_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, ErrorObject> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ErrorObject::invalid_params(format!(
            "params.{name} must be a string"
        ))),
        None => Err(ErrorObject::invalid_params(format!(
            "missing params.{name}"
        ))),
    }
}

/// Cuts a list into pages. The cursor is the offset of the next page, as a string.
fn paginate(mut items: Vec<Value>, params: &Value, key: &str) -> Result<Value, ErrorObject> {
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => c
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= items.len())
            .ok_or_else(|| {
                ErrorObject::invalid_params("params.cursor is not a cursor this server issued")
            })?,
        Some(_) => {
            return Err(ErrorObject::invalid_params(
                "params.cursor must be a string",
            ));
        }
    };
    let total = items.len();
    let end = (start + PAGE_SIZE).min(total);
    let page: Vec<Value> = items.drain(start..end).collect();
    let mut result = object([(key, Value::Array(page))]);
    if end < total {
        result["nextCursor"] = json!(end.to_string());
    }
    Ok(result)
}

pub fn tools_list(server: &Server, ctx: &Ctx<'_>, params: &Value) -> Result<Value, ErrorObject> {
    let tools = server
        .registry
        .tools
        .values()
        .filter(|t| server.visible_tool(ctx.principal, t))
        .map(|t| t.descriptor())
        .collect();
    paginate(tools, params, "tools")
}

pub fn tools_call(server: &Server, ctx: &Ctx<'_>, params: &Value) -> Result<Value, ErrorObject> {
    let name = str_param(params, "name")?;
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => {
            return Err(ErrorObject::invalid_params(
                "params.arguments must be an object",
            ));
        }
    };
    // A tool the caller may not call is answered exactly like one that does not exist.
    let tool = server
        .registry
        .tools
        .get(name)
        .filter(|t| server.visible_tool(ctx.principal, t))
        .ok_or_else(|| ErrorObject::invalid_params(format!("unknown tool: {}", clip(name))))?;
    if let Err(e) = tool.check_input(args) {
        return Ok(tool_result(ToolOutput::error(format!(
            "invalid arguments: {e}"
        ))));
    }
    let output = (tool.handler)(ctx, args)?;
    if let Some(ir) = output.input_required {
        if !ctx.is_stateless() {
            log::error!("tool {name} answered input_required on a session; it must ask the client");
            return Err(ErrorObject::internal());
        }
        return Ok(ir.into_result());
    }
    if let (Some(value), false) = (&output.structured, output.is_error)
        && let Err(e) = tool.check_output(value)
    {
        log::error!("tool {name} returned structured content that breaks its output schema: {e}");
        return Err(ErrorObject::internal());
    }
    if tool.has_output_schema() && output.structured.is_none() && !output.is_error {
        log::error!("tool {name} declares an output schema but returned no structured content");
        return Err(ErrorObject::internal());
    }
    Ok(tool_result(output))
}

fn tool_result(mut out: ToolOutput) -> Value {
    if out.content.is_empty()
        && let Some(s) = &out.structured
    {
        // The text mirror, for clients that do not read structuredContent. Written to
        // bytes directly: `to_string` goes through `fmt::Display`, several times slower.
        let text = serde_json::to_string(s).unwrap_or_default();
        out.content.push(object([
            ("type", Value::from("text")),
            ("text", Value::from(text)),
        ]));
    }
    let mut r = object([
        ("content", Value::Array(out.content)),
        ("isError", Value::Bool(out.is_error)),
    ]);
    if let Some(s) = out.structured {
        r["structuredContent"] = s;
    }
    r
}

/// A JSON object of `fields`, moved in. `json!` would serialize each `Value` or
/// `String` it is given into a copy (a deep one for a `Value`): per `tools/call` that
/// was dozens of allocations.
pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

pub fn resources_list(server: &Server, params: &Value) -> Result<Value, ErrorObject> {
    let items = server
        .registry
        .resources
        .iter()
        .map(|r| r.descriptor.clone())
        .collect();
    paginate(items, params, "resources")
}

pub fn templates_list(server: &Server, params: &Value) -> Result<Value, ErrorObject> {
    let items = server
        .registry
        .templates
        .iter()
        .map(|t| t.descriptor.clone())
        .collect();
    paginate(items, params, "resourceTemplates")
}

/// A resource that does not exist: -32002 on a 2025 session, -32602 on the stateless
/// revision (which made it an invalid-params error); `data.uri` names it in both.
fn not_found(ctx: &Ctx<'_>, uri: &str) -> ErrorObject {
    let code = if ctx.is_stateless() {
        ErrorCode::INVALID_PARAMS
    } else {
        RESOURCE_NOT_FOUND
    };
    ErrorObject::new(code, format!("resource not found: {}", clip(uri)))
        .with_data(json!({ "uri": uri }))
}

pub fn resources_read(
    server: &Server,
    ctx: &Ctx<'_>,
    params: &Value,
) -> Result<Value, ErrorObject> {
    let uri = str_param(params, "uri")?;
    let read = server
        .registry
        .find_resource(uri)
        .ok_or_else(|| not_found(ctx, uri))?;
    let contents = read(ctx, uri)?;
    Ok(json!({ "contents": contents }))
}

pub fn subscribe(
    server: &Server,
    ctx: &Ctx<'_>,
    params: &Value,
    on: bool,
) -> Result<Value, ErrorObject> {
    let uri = str_param(params, "uri")?;
    let mut subs = ctx.session.subscriptions.lock();
    if on {
        if server.registry.find_resource(uri).is_none() {
            return Err(not_found(ctx, uri));
        }
        const MAX_SUBSCRIPTIONS: usize = 1024;
        if subs.len() >= MAX_SUBSCRIPTIONS && !subs.contains(uri) {
            return Err(ErrorObject::invalid_params(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per session"
            )));
        }
        subs.insert(uri.to_string());
    } else {
        subs.remove(uri);
    }
    Ok(json!({}))
}

pub fn prompts_list(server: &Server, params: &Value) -> Result<Value, ErrorObject> {
    let items = server
        .registry
        .prompts
        .values()
        .map(|p| p.descriptor.clone())
        .collect();
    paginate(items, params, "prompts")
}

pub fn prompts_get(server: &Server, ctx: &Ctx<'_>, params: &Value) -> Result<Value, ErrorObject> {
    let name = str_param(params, "name")?;
    let prompt =
        server.registry.prompts.get(name).ok_or_else(|| {
            ErrorObject::invalid_params(format!("unknown prompt: {}", clip(name)))
        })?;
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => {
            return Err(ErrorObject::invalid_params(
                "params.arguments must be an object",
            ));
        }
    };
    if let Some((k, _)) = args.iter().find(|(_, v)| !v.is_string()) {
        return Err(ErrorObject::invalid_params(format!(
            "argument {} must be a string",
            clip(k)
        )));
    }
    if let Some(missing) = prompt.required_arguments().find(|a| !args.contains_key(*a)) {
        return Err(ErrorObject::invalid_params(format!(
            "missing required argument: {missing}"
        )));
    }
    let result = (prompt.get)(ctx, args)?;
    if !ctx.is_stateless() && result["resultType"] == "input_required" {
        log::error!("prompt {name} answered input_required on a session");
        return Err(ErrorObject::internal());
    }
    Ok(result)
}

pub fn complete(server: &Server, params: &Value) -> Result<Value, ErrorObject> {
    let reference = params
        .get("ref")
        .filter(|r| r.is_object())
        .ok_or_else(|| ErrorObject::invalid_params("missing params.ref"))?;
    match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let name = str_param(reference, "name")
                .map_err(|_| ErrorObject::invalid_params("params.ref.name must be a string"))?;
            if !server.registry.prompts.contains_key(name) {
                return Err(ErrorObject::invalid_params(format!(
                    "unknown prompt: {}",
                    clip(name)
                )));
            }
        }
        Some("ref/resource") => {
            str_param(reference, "uri")
                .map_err(|_| ErrorObject::invalid_params("params.ref.uri must be a string"))?;
        }
        _ => {
            return Err(ErrorObject::invalid_params(
                "params.ref.type must be ref/prompt or ref/resource",
            ));
        }
    }
    let argument = params
        .get("argument")
        .ok_or_else(|| ErrorObject::invalid_params("missing params.argument"))?;
    let arg_name = str_param(argument, "name")
        .map_err(|_| ErrorObject::invalid_params("params.argument.name must be a string"))?;
    let arg_value = str_param(argument, "value")
        .map_err(|_| ErrorObject::invalid_params("params.argument.value must be a string"))?;
    let empty = Map::new();
    let context = params
        .pointer("/context/arguments")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut values = match &server.registry.completion {
        Some(f) => f(reference, arg_name, arg_value, context)?,
        None => Vec::new(),
    };
    let total = values.len();
    values.truncate(100);
    Ok(json!({ "completion": { "values": values, "total": total, "hasMore": total > 100 } }))
}

pub fn set_level(ctx: &Ctx<'_>, params: &Value) -> Result<Value, ErrorObject> {
    let level = str_param(params, "level")?;
    let rank = protocol::log_level_rank(level).ok_or_else(|| {
        ErrorObject::invalid_params(format!(
            "params.level must be one of {}",
            protocol::LOG_LEVELS.join(", ")
        ))
    })?;
    ctx.session.state.lock().log_level = Some(rank);
    Ok(json!({}))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({ "name": format!("t{i}") })).collect()
    }

    #[test]
    fn pages_follow_their_cursors_to_the_end() {
        let first = paginate(items(250), &json!({}), "tools").unwrap();
        assert_eq!(first["tools"].as_array().unwrap().len(), PAGE_SIZE);
        assert_eq!(first["tools"][0]["name"], "t0");
        let cursor = first["nextCursor"].clone();
        assert_eq!(cursor, "100");
        let second = paginate(items(250), &json!({ "cursor": cursor }), "tools").unwrap();
        assert_eq!(second["tools"][0]["name"], "t100");
        let third = paginate(
            items(250),
            &json!({ "cursor": second["nextCursor"] }),
            "tools",
        )
        .unwrap();
        let last = third["tools"].as_array().unwrap();
        assert_eq!((last.len(), &last[49]["name"]), (50, &json!("t249")));
        assert!(third.get("nextCursor").is_none());
    }

    #[test]
    fn a_cursor_past_the_end_is_refused() {
        assert!(paginate(items(3), &json!({ "cursor": "4" }), "tools").is_err());
        let empty = paginate(items(3), &json!({ "cursor": "3" }), "tools").unwrap();
        assert_eq!(empty["tools"], json!([]));
    }

    #[test]
    fn a_tool_result_mirrors_structured_output_as_text() {
        let out = tool_result(ToolOutput::structured(json!({ "a": [1, "x"] })));
        assert_eq!(
            out,
            json!({
                "content": [{ "type": "text", "text": "{\"a\":[1,\"x\"]}" }],
                "isError": false,
                "structuredContent": { "a": [1, "x"] },
            })
        );
    }
}
