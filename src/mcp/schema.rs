//! A small JSON Schema validator for the keywords our tools use: `type`, `required`,
//! `properties`, `additionalProperties`, `enum`, `const`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `items`, `maxItems`/`minItems`. Every other keyword
//! (`$schema`, `$defs`, `$ref`, `pattern`, `format`, ...) is kept verbatim in the
//! published schema and not enforced here.

use std::fmt;

use serde_json::Value;

/// The first rule an instance breaks, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub rule: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.rule)
        } else {
            write!(f, "`{}`: {}", self.path, self.rule)
        }
    }
}

pub fn validate(schema: &Value, instance: &Value) -> Result<(), SchemaError> {
    check(schema, instance).map_err(Failure::into_error)
}

/// A broken rule on its way up: the path is collected only on failure, innermost step
/// first, so that a valid instance costs no string building.
struct Failure {
    rule: String,
    steps: Vec<Step>,
}

enum Step {
    Key(String),
    Index(usize),
}

impl Failure {
    fn at_key(mut self, key: &str) -> Self {
        // Keys come from the caller: keep the path short and printable.
        let key = key
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        self.steps.push(Step::Key(key));
        self
    }

    fn at_index(mut self, i: usize) -> Self {
        self.steps.push(Step::Index(i));
        self
    }

    fn into_error(self) -> SchemaError {
        let mut path = String::new();
        for step in self.steps.iter().rev() {
            match step {
                Step::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        SchemaError {
            path,
            rule: self.rule,
        }
    }
}

fn fail(rule: impl Into<String>) -> Result<(), Failure> {
    Err(Failure {
        rule: rule.into(),
        steps: Vec::new(),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        other => type_name(v) == other,
    }
}

fn check(schema: &Value, v: &Value) -> Result<(), Failure> {
    let Value::Object(s) = schema else {
        // `true` accepts everything, `false` nothing.
        return if schema == &Value::Bool(false) {
            fail("no value is allowed here")
        } else {
            Ok(())
        };
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)),
            _ => true,
        };
        if !ok {
            let expected = match t {
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                other => other.as_str().unwrap_or("?").to_string(),
            };
            return fail(format!("must be of type {expected}, not {}", type_name(v)));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return fail(format!("must be one of {}", list.join(", ")));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return fail(format!("must be {c}"));
    }
    match v {
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => check_string(s, text),
        Value::Array(items) => check_array(s, items),
        Value::Object(obj) => check_object(s, obj),
        _ => Ok(()),
    }
}

fn check_number(s: &serde_json::Map<String, Value>, n: f64) -> Result<(), Failure> {
    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        return fail(format!("must be at least {min}"));
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        return fail(format!("must be at most {max}"));
    }
    Ok(())
}

fn check_string(s: &serde_json::Map<String, Value>, text: &str) -> Result<(), Failure> {
    let len = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        return fail(format!("must be at least {min} characters long"));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        return fail(format!("must be at most {max} characters long"));
    }
    Ok(())
}

fn check_array(s: &serde_json::Map<String, Value>, items: &[Value]) -> Result<(), Failure> {
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        return fail(format!("must have at most {max} items"));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        return fail(format!("must have at least {min} items"));
    }
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item).map_err(|f| f.at_index(i))?;
        }
    }
    Ok(())
}

fn check_object(
    s: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
) -> Result<(), Failure> {
    if let Some(Value::Array(required)) = s.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                return fail("is required").map_err(|f| f.at_key(name));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (key, value) in obj {
        let result = match (
            props.and_then(|p| p.get(key)),
            s.get("additionalProperties"),
        ) {
            (Some(prop_schema), _) => check(prop_schema, value),
            (None, Some(Value::Bool(false))) => fail("is not an allowed property"),
            (None, Some(extra)) => check(extra, value),
            (None, None) => Ok(()),
        };
        result.map_err(|f| f.at_key(key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5},
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "mode": {"enum": ["a", "b"]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 3}}
            },
            "required": ["name"],
            "additionalProperties": false
        })
    }

    fn err(v: Value) -> String {
        validate(&schema(), &v).unwrap_err().to_string()
    }

    #[test]
    fn accepts_valid() {
        assert_eq!(
            validate(
                &schema(),
                &json!({"name": "x", "n": 3, "mode": "a", "tags": ["ab"]})
            ),
            Ok(())
        );
    }

    #[test]
    fn names_argument_and_rule() {
        assert_eq!(err(json!({})), "`name`: is required");
        assert_eq!(
            err(json!({"name": ""})),
            "`name`: must be at least 1 characters long"
        );
        assert_eq!(
            err(json!({"name": "toolong"})),
            "`name`: must be at most 5 characters long"
        );
        assert_eq!(
            err(json!({"name": 3})),
            "`name`: must be of type string, not integer"
        );
        assert_eq!(
            err(json!({"name": "x", "n": 11})),
            "`n`: must be at most 10"
        );
        assert_eq!(
            err(json!({"name": "x", "n": 1.5})),
            "`n`: must be of type integer, not number"
        );
        assert_eq!(
            err(json!({"name": "x", "mode": "c"})),
            "`mode`: must be one of \"a\", \"b\""
        );
        assert_eq!(
            err(json!({"name": "x", "tenant": "t"})),
            "`tenant`: is not an allowed property"
        );
        assert_eq!(
            err(json!({"name": "x", "tags": ["a", "b", "c"]})),
            "`tags`: must have at most 2 items"
        );
        assert_eq!(
            err(json!({"name": "x", "tags": ["abcd"]})),
            "`tags[0]`: must be at most 3 characters long"
        );
        assert_eq!(err(json!([])), "must be of type object, not array");
    }

    #[test]
    fn paths_name_nested_keys_and_indexes() {
        let schema = json!({
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"rows": {"type": "array", "items": {
                    "type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}
                }}}
            }
        });
        let at = |v: Value| validate(&schema, &v).unwrap_err();
        let e = at(json!([{"rows": []}, {"rows": [{"id": 1}, {"id": "x"}]}]));
        assert_eq!(e.path, "[1].rows[1].id");
        assert_eq!(
            e.to_string(),
            "`[1].rows[1].id`: must be of type integer, not string"
        );
        assert_eq!(at(json!([{"rows": [{}]}])).path, "[0].rows[0].id");
        let key = format!("k\u{7}{}", "x".repeat(100));
        let e = validate(&json!({"additionalProperties": false}), &json!({ key: 1 })).unwrap_err();
        assert_eq!(e.path, format!("k?{}", "x".repeat(62)));
    }
}
