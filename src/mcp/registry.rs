//! What a server offers: tools, resources (static and templated), prompts and argument
//! completion, each a descriptor plus a handler. The registry is built once at start-up
//! and read concurrently afterwards; it knows nothing of transports or callers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use mreg_wire::jsonrpc::ErrorObject;

use crate::mcp::context::Ctx;
use crate::mcp::schema::{SchemaError, Validator};

/// What a tool handler returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolOutput {
    pub content: Vec<Value>,
    pub structured: Option<Value>,
    pub is_error: bool,
    /// Stateless revision only: the tool needs the client first (see [`InputRequired`]);
    /// the other fields are then ignored.
    pub input_required: Option<InputRequired>,
}

/// An `input_required` result (2026-07-28): what the handler needs from the client
/// (elicitation, sampling, roots), by key, and the state it wants back on the retry.
/// The dispatcher signs the state and binds it to the caller and the request, so the
/// handler reads it back with `Ctx::request_state` knowing it is its own. Tools return
/// it through [`ToolOutput::input_required`], prompts and resources through
/// [`InputRequired::into_result`]. Only for requests where `Ctx::is_stateless()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputRequired {
    pub requests: Map<String, Value>,
    pub state: Option<Value>,
}

impl InputRequired {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the client `method` with `params` under `key` (answered in `inputResponses`).
    pub fn ask(mut self, key: &str, method: &str, params: Value) -> Self {
        self.requests
            .insert(key.into(), json!({ "method": method, "params": params }));
        self
    }

    /// An `elicitation/create` (form mode) request.
    pub fn elicit(self, key: &str, message: &str, requested_schema: Value) -> Self {
        self.ask(
            key,
            "elicitation/create",
            json!({ "mode": "form", "message": message, "requestedSchema": requested_schema }),
        )
    }

    /// A `sampling/createMessage` request for one user message.
    pub fn sample(self, key: &str, prompt: &str, max_tokens: u32) -> Self {
        self.ask(
            key,
            "sampling/createMessage",
            json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }], "maxTokens": max_tokens }),
        )
    }

    pub fn list_roots(self, key: &str) -> Self {
        self.ask(key, "roots/list", json!({}))
    }

    /// State to get back (signed) on the retry.
    pub fn state(mut self, state: Value) -> Self {
        self.state = Some(state);
        self
    }

    /// The result object, with the state still unsigned (the dispatcher signs it).
    pub fn into_result(self) -> Value {
        let mut r = json!({ "resultType": "input_required", "inputRequests": self.requests });
        if let Some(s) = self.state {
            r["requestState"] = s;
        }
        r
    }
}

impl ToolOutput {
    /// The tool needs the client first (stateless revision).
    pub fn input_required(ir: InputRequired) -> Self {
        ToolOutput {
            input_required: Some(ir),
            ..Default::default()
        }
    }

    pub fn text(text: impl Into<String>) -> Self {
        ToolOutput {
            content: vec![json!({"type": "text", "text": text.into()})],
            ..Default::default()
        }
    }

    /// A result carrying `structuredContent`; the text mirror is added by the dispatcher.
    pub fn structured(value: Value) -> Self {
        ToolOutput {
            structured: Some(value),
            ..Default::default()
        }
    }

    /// An error the model should see and may correct (bad input, a refused query).
    pub fn error(text: impl Into<String>) -> Self {
        ToolOutput {
            is_error: true,
            ..Self::text(text)
        }
    }
}

/// Runs a tool call. Over stdio it runs on the thread that reads stdin until it waits
/// through `Ctx` (a client request, a cancellation check, a progress report) or on
/// the audit log: a handler that may run long checks `Ctx::is_cancelled` early, and
/// one that blocks on its own I/O calls `crate::blocking::before_wait` first.
pub type ToolHandler =
    dyn Fn(&Ctx<'_>, &Map<String, Value>) -> Result<ToolOutput, ErrorObject> + Send + Sync;

#[derive(Clone)]
pub struct Tool {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// The schemas, prepared for checking every call.
    input: Validator,
    output: Option<Validator>,
    pub annotations: Option<Value>,
    pub handler: Arc<ToolHandler>,
}

impl Tool {
    pub fn new(
        name: &str,
        description: &str,
        input_schema: Value,
        handler: impl Fn(&Ctx<'_>, &Map<String, Value>) -> Result<ToolOutput, ErrorObject>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Tool {
            name: name.into(),
            title: None,
            description: description.into(),
            input: Validator::new(input_schema),
            output: None,
            annotations: None,
            handler: Arc::new(handler),
        }
    }

    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.into());
        self
    }

    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output = Some(Validator::new(schema));
        self
    }

    pub fn input_schema(&self) -> &Value {
        self.input.schema()
    }

    pub fn has_output_schema(&self) -> bool {
        self.output.is_some()
    }

    /// The first rule `arguments` break of the input schema.
    pub fn check_input(&self, arguments: &Map<String, Value>) -> Result<(), SchemaError> {
        self.input.validate_object(arguments)
    }

    /// The first rule `structured` content breaks of the output schema, if there is one.
    pub fn check_output(&self, structured: &Value) -> Result<(), SchemaError> {
        self.output
            .as_ref()
            .map_or(Ok(()), |check| check.validate(structured))
    }

    pub fn annotations(mut self, annotations: Value) -> Self {
        self.annotations = Some(annotations);
        self
    }

    pub fn descriptor(&self) -> Value {
        let mut d = json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input.schema(),
        });
        if let Some(t) = &self.title {
            d["title"] = json!(t);
        }
        if let Some(output) = &self.output {
            d["outputSchema"] = output.schema().clone();
        }
        if let Some(a) = &self.annotations {
            d["annotations"] = a.clone();
        }
        d
    }
}

/// Reads a resource: returns the `contents` array of `resources/read`.
pub type ReadHandler = dyn Fn(&Ctx<'_>, &str) -> Result<Vec<Value>, ErrorObject> + Send + Sync;

#[derive(Clone)]
pub struct Resource {
    /// The descriptor as listed (`uri`, `name`, `mimeType`, ...).
    pub descriptor: Value,
    pub uri: String,
    pub read: Arc<ReadHandler>,
}

impl Resource {
    pub fn new(
        descriptor: Value,
        read: impl Fn(&Ctx<'_>, &str) -> Result<Vec<Value>, ErrorObject> + Send + Sync + 'static,
    ) -> Self {
        let uri = descriptor["uri"].as_str().unwrap_or_default().to_string();
        Resource {
            descriptor,
            uri,
            read: Arc::new(read),
        }
    }
}

/// A URI template of level 1 (RFC 6570 `{var}` expansions only).
#[derive(Clone)]
pub struct ResourceTemplate {
    pub descriptor: Value,
    pub template: String,
    pub read: Arc<ReadHandler>,
}

impl ResourceTemplate {
    pub fn new(
        descriptor: Value,
        read: impl Fn(&Ctx<'_>, &str) -> Result<Vec<Value>, ErrorObject> + Send + Sync + 'static,
    ) -> Self {
        let template = descriptor["uriTemplate"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ResourceTemplate {
            descriptor,
            template,
            read: Arc::new(read),
        }
    }

    /// The variables of `uri` if it matches the template.
    pub fn matches(&self, uri: &str) -> Option<BTreeMap<String, String>> {
        match_template(&self.template, uri)
    }
}

/// Matches `uri` against a level-1 template; a variable matches one or more characters
/// other than `/`.
pub fn match_template(template: &str, uri: &str) -> Option<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    let mut rest = uri;
    let mut t = template;
    while !t.is_empty() {
        if let Some(after_brace) = t.strip_prefix('{') {
            let end = after_brace.find('}')?;
            let name = &after_brace[..end];
            t = &after_brace[end + 1..];
            let literal_end = t.find('{').unwrap_or(t.len());
            let next_literal = &t[..literal_end];
            let value_end = if next_literal.is_empty() {
                rest.find('/').unwrap_or(rest.len())
            } else {
                rest.find(next_literal)?
            };
            let value = &rest[..value_end];
            if value.is_empty() || value.contains('/') {
                return None;
            }
            vars.insert(name.to_string(), value.to_string());
            rest = &rest[value_end..];
        } else {
            let literal_end = t.find('{').unwrap_or(t.len());
            rest = rest.strip_prefix(&t[..literal_end])?;
            t = &t[literal_end..];
        }
    }
    rest.is_empty().then_some(vars)
}

/// Renders a prompt: returns the result of `prompts/get` (`messages`, `description`).
pub type PromptHandler =
    dyn Fn(&Ctx<'_>, &Map<String, Value>) -> Result<Value, ErrorObject> + Send + Sync;

#[derive(Clone)]
pub struct Prompt {
    pub descriptor: Value,
    pub name: String,
    pub get: Arc<PromptHandler>,
}

impl Prompt {
    pub fn new(
        descriptor: Value,
        get: impl Fn(&Ctx<'_>, &Map<String, Value>) -> Result<Value, ErrorObject>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let name = descriptor["name"].as_str().unwrap_or_default().to_string();
        Prompt {
            descriptor,
            name,
            get: Arc::new(get),
        }
    }

    /// Names of the arguments marked required.
    pub fn required_arguments(&self) -> impl Iterator<Item = &str> {
        self.descriptor["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["required"] == json!(true))
            .filter_map(|a| a["name"].as_str())
    }
}

/// Completes an argument value. Arguments: the `ref` object, the argument name, the
/// partial value, and already resolved arguments (`context.arguments`).
pub type CompletionHandler = dyn Fn(&Value, &str, &str, &Map<String, Value>) -> Result<Vec<String>, ErrorObject>
    + Send
    + Sync;

#[derive(Clone, Default)]
pub struct Registry {
    pub tools: BTreeMap<String, Tool>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
    pub prompts: BTreeMap<String, Prompt>,
    pub completion: Option<Arc<CompletionHandler>>,
    pub instructions: Option<String>,
}

impl Registry {
    pub fn tool(&mut self, tool: Tool) -> &mut Self {
        self.tools.insert(tool.name.clone(), tool);
        self
    }

    pub fn resource(&mut self, r: Resource) -> &mut Self {
        self.resources.push(r);
        self
    }

    pub fn template(&mut self, t: ResourceTemplate) -> &mut Self {
        self.templates.push(t);
        self
    }

    pub fn prompt(&mut self, p: Prompt) -> &mut Self {
        self.prompts.insert(p.name.clone(), p);
        self
    }

    pub fn completion(
        &mut self,
        f: impl Fn(&Value, &str, &str, &Map<String, Value>) -> Result<Vec<String>, ErrorObject>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.completion = Some(Arc::new(f));
        self
    }

    pub fn find_resource(&self, uri: &str) -> Option<&Arc<ReadHandler>> {
        self.resources
            .iter()
            .find(|r| r.uri == uri)
            .map(|r| &r.read)
            .or_else(|| {
                self.templates
                    .iter()
                    .find(|t| t.matches(uri).is_some())
                    .map(|t| &t.read)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let m = match_template("test://template/{id}/data", "test://template/42/data").unwrap();
        assert_eq!(m["id"], "42");
        assert!(match_template("test://template/{id}/data", "test://template//data").is_none());
        assert!(match_template("test://template/{id}/data", "test://template/4/2/data").is_none());
        assert!(match_template("a://{x}", "a://b/c").is_none());
        assert_eq!(match_template("a://{x}.{y}", "a://b.c").unwrap()["y"], "c");
        assert!(match_template("a://x", "a://xy").is_none());
    }
}
