//! The conformance fixture: the same server as `mreg serve --dev` (same HTTP layer,
//! dispatcher and chain), with the tools, resources and prompts that the official MCP
//! conformance suite expects by name instead of mreg's own tools. Not part of `mreg`.
//!
//!   cargo run --release --example conformance_server            # HTTP on MREG_HTTP_ADDR
//!   cargo run --example conformance_server -- --stdio           # the same over stdio

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value, json};

use mreg::auth::principal::{Principal, Role};
use mreg::config::Config;
use mreg::mcp::context::Ctx;
use mreg::mcp::modern::subscriptions::{ListKind, Subscriptions};
use mreg::mcp::registry::{
    InputRequired, Prompt, Registry, Resource, ResourceTemplate, Tool, ToolOutput,
};
use mreg::mcp::server::{Server, ServerInfo};
use mreg::mcp::session::{Session, Transport};
use mreg::transport::http;
use mreg_wire::jsonrpc::{ErrorCode, ErrorObject};

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn no_args() -> Value {
    json!({ "type": "object", "properties": {} })
}

fn content(items: Vec<Value>) -> ToolOutput {
    ToolOutput {
        content: items,
        ..Default::default()
    }
}

fn text(t: &str) -> Value {
    json!({ "type": "text", "text": t })
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

fn require_capability(ctx: &Ctx<'_>, cap: &str) -> Result<(), ErrorObject> {
    if ctx.session.client_supports(cap) {
        Ok(())
    } else {
        Err(ErrorObject::new(
            ErrorCode::INVALID_REQUEST,
            format!("the client did not declare the {cap} capability"),
        ))
    }
}

fn elicit(ctx: &Ctx<'_>, message: &str, schema: Value) -> Result<ToolOutput, ErrorObject> {
    require_capability(ctx, "elicitation")?;
    let answer = ctx.request_client(
        "elicitation/create",
        json!({ "message": message, "requestedSchema": schema }),
    )?;
    Ok(ToolOutput::text(format!(
        "User response: action={}, content={}",
        answer["action"].as_str().unwrap_or("?"),
        answer.get("content").cloned().unwrap_or(Value::Null)
    )))
}

/// Three log messages 50 ms apart (sent only at the level the client asked for).
fn log_three(ctx: &Ctx<'_>) -> Result<ToolOutput, ErrorObject> {
    for (i, m) in [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            sleep_ms(50);
        }
        ctx.log("info", Some("conformance"), json!(m));
    }
    Ok(ToolOutput::text("Tool with logging executed successfully"))
}

fn tools(reg: &mut Registry) {
    reg.tool(Tool::new(
        "test_simple_text",
        "Returns a simple text response",
        no_args(),
        |_, _| {
            Ok(ToolOutput::text(
                "This is a simple text response for testing.",
            ))
        },
    ));
    reg.tool(Tool::new(
        "test_image_content",
        "Returns an image",
        no_args(),
        |_, _| {
            Ok(content(vec![
                json!({ "type": "image", "data": PNG, "mimeType": "image/png" }),
            ]))
        },
    ));
    reg.tool(Tool::new(
        "test_audio_content",
        "Returns audio",
        no_args(),
        |_, _| {
            Ok(content(vec![
                json!({ "type": "audio", "data": WAV, "mimeType": "audio/wav" }),
            ]))
        },
    ));
    reg.tool(Tool::new("test_embedded_resource", "Returns an embedded resource", no_args(), |_, _| {
        Ok(content(vec![json!({ "type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content." } })]))
    }));
    reg.tool(Tool::new(
        "test_multiple_content_types",
        "Returns text, an image and a resource",
        no_args(),
        |_, _| {
            Ok(content(vec![
                text("Multiple content types test:"),
                json!({ "type": "image", "data": PNG, "mimeType": "image/png" }),
                json!({ "type": "resource", "resource": { "uri": "test://mixed-content-resource",
                "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}" } }),
            ]))
        },
    ));
    reg.tool(Tool::new(
        "test_error_handling",
        "Always returns a tool error",
        no_args(),
        |_, _| {
            Ok(ToolOutput::error(
                "This tool intentionally returns an error for testing",
            ))
        },
    ));
    reg.tool(Tool::new(
        "test_tool_with_progress",
        "Reports progress",
        no_args(),
        |ctx, _| {
            for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    sleep_ms(50);
                }
                ctx.progress(p, Some(100.0), Some(&format!("step {}", i + 1)));
            }
            Ok(ToolOutput::text(format!(
                "progress done: {}",
                ctx.progress_token.clone().unwrap_or(Value::Null)
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_tool_with_logging",
        "Sends log messages",
        no_args(),
        |ctx, _| log_three(ctx),
    ));
    let prompt_schema = json!({ "type": "object", "properties": { "prompt": { "type": "string" } }, "required": ["prompt"] });
    reg.tool(Tool::new("test_sampling", "Asks the client's model", prompt_schema, |ctx, args| {
        require_capability(ctx, "sampling")?;
        let prompt = args["prompt"].as_str().unwrap_or_default();
        let answer = ctx.request_client(
            "sampling/createMessage",
            json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }], "maxTokens": 100 }),
        )?;
        Ok(ToolOutput::text(format!("LLM response: {}", answer["content"]["text"].as_str().unwrap_or_default())))
    }));
    let message_schema = json!({ "type": "object", "properties": { "message": { "type": "string" } }, "required": ["message"] });
    reg.tool(Tool::new(
        "test_elicitation",
        "Asks the user",
        message_schema,
        |ctx, args| {
            elicit(
                ctx,
                args["message"].as_str().unwrap_or_default(),
                json!({
                    "type": "object",
                    "properties": {
                        "username": { "type": "string", "description": "User's response" },
                        "email": { "type": "string", "description": "User's email address" }
                    },
                    "required": ["username", "email"]
                }),
            )
        },
    ));
    reg.tool(Tool::new("test_elicitation_sep1034_defaults", "Elicitation with defaults", no_args(), |ctx, _| {
        elicit(ctx, "Please review your information", json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "description": "Name", "default": "John Doe" },
                "age": { "type": "integer", "description": "Age", "default": 30 },
                "score": { "type": "number", "description": "Score", "default": 95.5 },
                "status": { "type": "string", "description": "Status", "enum": ["active", "inactive", "pending"], "default": "active" },
                "verified": { "type": "boolean", "description": "Verified", "default": true }
            },
            "required": []
        }))
    }));
    reg.tool(Tool::new("test_elicitation_sep1330_enums", "Elicitation with enums", no_args(), |ctx, _| {
        elicit(ctx, "Please choose", json!({
            "type": "object",
            "properties": {
                "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
                "titledSingle": { "type": "string", "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" }] },
                "legacyEnum": { "type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"] },
                "untitledMulti": { "type": "array", "items": { "type": "string", "enum": ["option1", "option2", "option3"] } },
                "titledMulti": { "type": "array", "items": { "anyOf": [
                    { "const": "value1", "title": "First Choice" },
                    { "const": "value2", "title": "Second Choice" },
                    { "const": "value3", "title": "Third Choice" }] } }
            },
            "required": []
        }))
    }));
    let schema_2020: Value = serde_json::from_str(r##"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","$defs":{"address":{"$anchor":"addressDef","type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"}}}},"properties":{"name":{"type":"string"},"address":{"$ref":"#/$defs/address"},"contactMethod":{"type":"string","enum":["phone","email"]},"phone":{"type":"string"},"email":{"type":"string"}},"allOf":[{"anyOf":[{"required":["phone"]},{"required":["email"]}]}],"if":{"properties":{"contactMethod":{"const":"phone"}},"required":["contactMethod"]},"then":{"required":["phone"]},"else":{"required":["email"]},"additionalProperties":false}"##).expect("valid schema");
    reg.tool(Tool::new(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        schema_2020,
        |_, args| {
            Ok(ToolOutput::text(format!(
                "received: {}",
                Value::Object(args.clone())
            )))
        },
    ));
}

/// Collects what a handler needs from the client, on either revision: on a session it
/// asks at once (`request_client`); on the stateless revision it returns the answer of
/// an earlier round, or remembers the question for the `input_required` result.
struct Asker<'c, 'a> {
    ctx: &'c Ctx<'a>,
    missing: InputRequired,
}

impl<'c, 'a> Asker<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
        Asker {
            ctx,
            missing: InputRequired::new(),
        }
    }

    fn ask(
        &mut self,
        key: &str,
        method: &str,
        params: Value,
    ) -> Result<Option<Value>, ErrorObject> {
        if !self.ctx.is_stateless() {
            return self.ctx.request_client(method, params).map(Some);
        }
        match self.ctx.input_response(key) {
            Some(answer) => Ok(Some(answer.clone())),
            None => {
                self.missing = std::mem::take(&mut self.missing).ask(key, method, params);
                Ok(None)
            }
        }
    }

    fn elicit(
        &mut self,
        key: &str,
        message: &str,
        prop: &str,
        ty: &str,
    ) -> Result<Option<Value>, ErrorObject> {
        let schema =
            json!({ "type": "object", "properties": { prop: { "type": ty } }, "required": [prop] });
        let answer = self.ask(
            key,
            "elicitation/create",
            json!({ "message": message, "requestedSchema": schema }),
        )?;
        Ok(answer.map(|a| {
            a.get("content")
                .and_then(|c| c.get(prop))
                .cloned()
                .unwrap_or(Value::Null)
        }))
    }

    fn sample(
        &mut self,
        key: &str,
        prompt: &str,
        max_tokens: u32,
    ) -> Result<Option<String>, ErrorObject> {
        let params = json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }], "maxTokens": max_tokens });
        let answer = self.ask(key, "sampling/createMessage", params)?;
        Ok(answer.map(|a| {
            a["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }))
    }

    fn roots(&mut self, key: &str) -> Result<Option<Vec<String>>, ErrorObject> {
        let answer = self.ask(key, "roots/list", json!({}))?;
        Ok(answer.map(|a| {
            a["roots"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["uri"].as_str().map(str::to_string))
                .collect()
        }))
    }

    /// `Some(input_required)` when a question is still open, with `state` to get back.
    fn pending(self, state: Option<Value>) -> Option<ToolOutput> {
        if self.missing.requests.is_empty() {
            return None;
        }
        let ir = match state {
            Some(s) => self.missing.state(s),
            None => self.missing,
        };
        Some(ToolOutput::input_required(ir))
    }
}

/// The tools of the 2026-07-28 scenarios (server-stateless, input-required-result-*).
/// `changes` reaches the `subscriptions/listen` streams; `dynamic` shows or hides
/// `test_dynamic_tool`, the tool list change that `test_trigger_tool_change` makes.
fn modern_tools(reg: &mut Registry, changes: Arc<Subscriptions>, dynamic: Arc<AtomicBool>) {
    reg.tool(Tool::new(
        "test_missing_capability",
        "Needs the client's sampling capability",
        no_args(),
        |ctx, _| {
            ctx.require_capability("sampling")?;
            Ok(ToolOutput::text("the client declared sampling"))
        },
    ));
    reg.tool(Tool::new(
        "test_streaming_elicitation",
        "Asks the user through input_required, never on the stream",
        no_args(),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let ok = a.elicit("confirm", "Continue?", "ok", "boolean")?;
            if let Some(pending) = a.pending(None) {
                return Ok(pending);
            }
            Ok(ToolOutput::text(format!(
                "confirmed: {}",
                ok.unwrap_or_default()
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_logging_tool",
        "Logs only at the level the request asks for",
        no_args(),
        |ctx, _| log_three(ctx),
    ));
    let (flag, notify) = (dynamic.clone(), changes.clone());
    reg.tool(Tool::new(
        "test_trigger_tool_change",
        "Shows or hides test_dynamic_tool and announces the change",
        no_args(),
        move |_, _| {
            let shown = !flag.fetch_xor(true, Ordering::Relaxed);
            notify.list_changed(ListKind::Tools);
            Ok(ToolOutput::text(format!(
                "test_dynamic_tool is now {}",
                if shown { "listed" } else { "hidden" }
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_trigger_prompt_change",
        "Announces a prompt list change",
        no_args(),
        move |_, _| {
            changes.list_changed(ListKind::Prompts);
            Ok(ToolOutput::text("prompt list change announced"))
        },
    ));
    let header_schema = json!({ "type": "object", "properties": {
        "region": { "type": "string", "description": "Mirrored in the Mcp-Param-Region header", "x-mcp-header": "Region" } },
        "required": ["region"] });
    reg.tool(Tool::new(
        "test_custom_header",
        "Takes an argument that HTTP clients mirror in a header",
        header_schema,
        |_, args| {
            Ok(ToolOutput::text(format!(
                "region: {}",
                args["region"].as_str().unwrap_or_default()
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_dynamic_tool",
        "Listed only while test_trigger_tool_change has it shown",
        no_args(),
        |_, _| Ok(ToolOutput::text("dynamic tool called")),
    ));
    reg.tool(Tool::new(
        "test_input_required_result_elicitation",
        "Asks for a name (input_required)",
        no_args(),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let name = a.elicit("user_name", "What is your name?", "name", "string")?;
            if let Some(pending) = a.pending(None) {
                return Ok(pending);
            }
            Ok(ToolOutput::text(format!(
                "Hello, {}!",
                name.as_ref().and_then(Value::as_str).unwrap_or("stranger")
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_input_required_result_sampling",
        "Asks the client's model (input_required)",
        no_args(),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let answer = a.sample("capital_question", "What is the capital of France?", 100)?;
            if let Some(pending) = a.pending(None) {
                return Ok(pending);
            }
            Ok(ToolOutput::text(format!(
                "The model said: {}",
                answer.unwrap_or_default()
            )))
        },
    ));
    reg.tool(Tool::new(
        "test_input_required_result_list_roots",
        "Asks for the client's roots (input_required)",
        no_args(),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let roots = a.roots("client_roots")?;
            if let Some(pending) = a.pending(None) {
                return Ok(pending);
            }
            Ok(ToolOutput::text(format!(
                "Roots: {}",
                roots.unwrap_or_default().join(", ")
            )))
        },
    ));
    reg.tool(Tool::new("test_input_required_result_request_state", "Round-trips a signed requestState", no_args(), |ctx, _| {
        let expected = json!({ "tool": "request_state", "round": 1 });
        let mut a = Asker::new(ctx);
        let ok = a.elicit("confirm", "Please confirm", "ok", "boolean")?;
        if ctx.is_stateless() && ctx.request_state() != Some(&expected) {
            // Without our state the answer cannot be trusted to belong to this request.
            let ir = InputRequired::new()
                .elicit("confirm", "Please confirm", json!({ "type": "object", "properties": { "ok": { "type": "boolean" } }, "required": ["ok"] }))
                .state(expected);
            return Ok(ToolOutput::input_required(ir));
        }
        if let Some(pending) = a.pending(Some(expected)) {
            return Ok(pending);
        }
        Ok(ToolOutput::text(format!("state-ok: confirmed={}", ok.unwrap_or_default())))
    }));
    reg.tool(Tool::new(
        "test_input_required_result_multiple_inputs",
        "Asks three questions at once",
        no_args(),
        |ctx, _| {
            let state = json!({ "tool": "multiple_inputs" });
            let mut a = Asker::new(ctx);
            let name = a.elicit("user_name", "What is your name?", "name", "string")?;
            let greeting = a.sample("greeting", "Generate a greeting", 50)?;
            let roots = a.roots("client_roots")?;
            if let Some(pending) = a.pending(Some(state)) {
                return Ok(pending);
            }
            Ok(ToolOutput::text(format!(
                "name={}, greeting={}, roots={}",
                name.as_ref().and_then(Value::as_str).unwrap_or("?"),
                greeting.unwrap_or_default(),
                roots.unwrap_or_default().join(",")
            )))
        },
    ));
    reg.tool(Tool::new("test_input_required_result_multi_round", "Asks two questions, one round each", no_args(), |ctx, _| {
        if !ctx.is_stateless() {
            let mut a = Asker::new(ctx);
            let name = a.elicit("step1", "Step 1: What is your name?", "name", "string")?;
            let color = a.elicit("step2", "Step 2: What is your favorite color?", "color", "string")?;
            return Ok(ToolOutput::text(format!("{} likes {}", name.unwrap_or_default(), color.unwrap_or_default())));
        }
        let step1 = |state: Value| {
            let schema = json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] });
            ToolOutput::input_required(InputRequired::new().elicit("step1", "Step 1: What is your name?", schema).state(state))
        };
        let state = ctx.request_state().cloned().unwrap_or(Value::Null);
        match state["round"].as_u64() {
            Some(1) => match ctx.input_response("step1").and_then(|r| r["content"]["name"].as_str()) {
                Some(name) => {
                    let schema = json!({ "type": "object", "properties": { "color": { "type": "string" } }, "required": ["color"] });
                    let ir = InputRequired::new()
                        .elicit("step2", "Step 2: What is your favorite color?", schema)
                        .state(json!({ "round": 2, "name": name }));
                    Ok(ToolOutput::input_required(ir))
                }
                None => Ok(step1(state)),
            },
            Some(2) => match ctx.input_response("step2").and_then(|r| r["content"]["color"].as_str()) {
                Some(color) => Ok(ToolOutput::text(format!("{} likes {color}", state["name"].as_str().unwrap_or("?")))),
                None => Ok(step1(json!({ "round": 1 }))),
            },
            _ => Ok(step1(json!({ "round": 1 }))),
        }
    }));
    reg.tool(Tool::new("test_input_required_result_tampered_state", "Refuses a requestState that was changed", no_args(), |ctx, _| {
        let state = json!({ "tool": "tampered_state" });
        let mut a = Asker::new(ctx);
        let ok = a.elicit("confirm", "Please confirm", "ok", "boolean")?;
        if ctx.is_stateless() && ctx.request_state() != Some(&state) {
            let ir = InputRequired::new()
                .elicit("confirm", "Please confirm", json!({ "type": "object", "properties": { "ok": { "type": "boolean" } }, "required": ["ok"] }))
                .state(state);
            return Ok(ToolOutput::input_required(ir));
        }
        if let Some(pending) = a.pending(Some(state)) {
            return Ok(pending);
        }
        Ok(ToolOutput::text(format!("state verified: confirmed={}", ok.unwrap_or_default())))
    }));
    reg.tool(Tool::new(
        "test_input_required_result_capabilities",
        "Asks only through the capabilities the client declared",
        no_args(),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let mut got = Vec::new();
            if ctx.session.client_supports("elicitation") {
                got.push(format!(
                    "name={}",
                    a.elicit("user_name", "What is your name?", "name", "string")?
                        .unwrap_or_default()
                ));
            }
            if ctx.session.client_supports("sampling") {
                got.push(format!(
                    "sample={}",
                    a.sample("capital_question", "What is the capital of France?", 100)?
                        .unwrap_or_default()
                ));
            }
            if ctx.session.client_supports("roots") {
                got.push(format!(
                    "roots={}",
                    a.roots("client_roots")?.unwrap_or_default().join(",")
                ));
            }
            if let Some(pending) = a.pending(None) {
                return Ok(pending);
            }
            if got.is_empty() {
                return Ok(ToolOutput::error(
                    "the client declared no capability to ask through",
                ));
            }
            Ok(ToolOutput::text(got.join("; ")))
        },
    ));
}

fn resources(reg: &mut Registry) {
    reg.resource(Resource::new(
        json!({ "uri": "test://static-text", "name": "static-text", "title": "Static Text Resource",
                "description": "A static text resource for testing", "mimeType": "text/plain" }),
        |_, uri| Ok(vec![json!({ "uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource." })]),
    ));
    reg.resource(Resource::new(
        json!({ "uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource for testing", "mimeType": "image/png" }),
        |_, uri| Ok(vec![json!({ "uri": uri, "mimeType": "image/png", "blob": PNG })]),
    ));
    reg.resource(Resource::new(
        json!({ "uri": "test://watched-resource", "name": "watched-resource", "description": "A resource that can be subscribed to", "mimeType": "text/plain" }),
        |_, uri| Ok(vec![json!({ "uri": uri, "mimeType": "text/plain", "text": "Watched resource content" })]),
    ));
    reg.template(ResourceTemplate::new(
        json!({ "uriTemplate": "test://template/{id}/data", "name": "template", "description": "A templated resource", "mimeType": "application/json" }),
        |_, uri| {
            let id = mreg::mcp::registry::match_template("test://template/{id}/data", uri).and_then(|m| m.get("id").cloned()).unwrap_or_default();
            let body = json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
            Ok(vec![json!({ "uri": uri, "mimeType": "application/json", "text": body.to_string() })])
        },
    ));
}

fn user_text(t: &str) -> Value {
    json!({ "role": "user", "content": text(t) })
}

fn prompts(reg: &mut Registry) {
    reg.prompt(Prompt::new(
        json!({ "name": "test_simple_prompt", "description": "A simple prompt without arguments" }),
        |_, _| Ok(json!({ "messages": [user_text("This is a simple prompt for testing.")] })),
    ));
    reg.prompt(Prompt::new(
        json!({ "name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
            { "name": "arg1", "description": "First test argument", "required": true },
            { "name": "arg2", "description": "Second test argument", "required": true }] }),
        |_, args: &Map<String, Value>| {
            let a = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            Ok(json!({ "messages": [user_text(&format!("Prompt with arguments: arg1='{}', arg2='{}'", a("arg1"), a("arg2")))] }))
        },
    ));
    reg.prompt(Prompt::new(
        json!({ "name": "test_prompt_with_embedded_resource", "description": "A prompt with an embedded resource", "arguments": [
            { "name": "resourceUri", "description": "URI of the resource to embed", "required": true }] }),
        |_, args| {
            let uri = args.get("resourceUri").and_then(Value::as_str).unwrap_or_default();
            Ok(json!({ "messages": [
                { "role": "user", "content": { "type": "resource", "resource": { "uri": uri, "mimeType": "text/plain", "text": "Embedded resource content for testing." } } },
                user_text("Please process the embedded resource above.")] }))
        },
    ));
    reg.prompt(Prompt::new(json!({ "name": "test_prompt_with_image", "description": "A prompt with an image" }), |_, _| {
        Ok(json!({ "messages": [
            { "role": "user", "content": { "type": "image", "data": PNG, "mimeType": "image/png" } },
            user_text("Please analyze the image above.")] }))
    }));
    reg.prompt(Prompt::new(
        json!({ "name": "test_input_required_result_prompt", "description": "A prompt that asks for its context first (input_required)" }),
        |ctx, _| {
            let mut a = Asker::new(ctx);
            let context = a.elicit("user_context", "What context should the prompt use?", "context", "string")?;
            if let Some(ToolOutput { input_required: Some(ir), .. }) = a.pending(None) {
                return Ok(ir.into_result());
            }
            let context = context.as_ref().and_then(Value::as_str).unwrap_or("none").to_string();
            Ok(json!({ "messages": [user_text(&format!("Answer with this context in mind: {context}"))] }))
        },
    ));
    reg.completion(|reference, arg, value, _ctx| {
        let options: &[&str] = match (reference["name"].as_str(), arg) {
            (Some("test_prompt_with_arguments"), "arg1" | "arg2") => {
                &["test", "testValue1", "testValue2", "other"]
            }
            _ => &[],
        };
        Ok(options
            .iter()
            .filter(|o| o.starts_with(value))
            .map(|o| o.to_string())
            .collect())
    });
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_lookup(&|k| std::env::var(k).ok(), &|p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            eprint!("conformance_server: {e}");
            std::process::exit(1);
        }
    };
    let mut server = Server::new(
        ServerInfo {
            name: "mreg-conformance".into(),
            title: "mreg conformance fixture".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        Registry::default(),
    );
    let dynamic = Arc::new(AtomicBool::new(false));
    let reg = &mut server.registry;
    tools(reg);
    modern_tools(reg, server.modern.subscriptions.clone(), dynamic.clone());
    resources(reg);
    prompts(reg);
    reg.instructions = Some("The MCP conformance fixture of mreg.".into());
    server.tool_filter = Some(Arc::new(move |_, tool| {
        tool.name != "test_dynamic_tool" || dynamic.load(Ordering::Relaxed)
    }));
    server.client_request_timeout = Duration::from_secs(30);
    let server = Arc::new(server);
    let principal = Principal::local("conformance", "tester", &[Role::User]);

    if std::env::args().any(|a| a == "--stdio") {
        let session = Session::new("stdio".into(), Transport::Stdio, principal);
        let r = mreg::transport::stdio::stdin().and_then(|input| {
            let (out, spin) = (std::io::stdout(), config.stdio_spin);
            mreg::transport::stdio::serve(server, session, input, out, 4, spin)
        });
        std::process::exit(if r.is_ok() { 0 } else { 1 });
    }
    let authenticate = Arc::new(move |_: &_| Ok::<_, mreg::chain::AuthFailure>(principal.clone()));
    let code = http::run_until_signal(server, &config.http, authenticate, Vec::new());
    std::process::exit(code);
}
