//! A small JSON Schema validator for the keywords our tools use: `type`, `required`,
//! `properties`, `additionalProperties`, `enum`, `const`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `items`, `maxItems`/`minItems`. Every other keyword
//! (`$schema`, `$defs`, `$ref`, `pattern`, `format`, ...) is kept verbatim in the
//! published schema and not enforced here.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

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

fn failure(rule: impl Into<String>) -> Failure {
    Failure {
        rule: rule.into(),
        steps: Vec::new(),
    }
}

fn fail(rule: impl Into<String>) -> Result<(), Failure> {
    Err(failure(rule))
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

/// Whether `v` is of one of the types in `bits` (see [`type_bit`]): `number` takes
/// integers too, and `integer` takes numbers without a fraction.
fn type_matches(bits: u8, v: &Value) -> bool {
    let bit = match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(n) => {
            let integral = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
            return bits & NUMBER != 0 || (integral && bits & INTEGER != 0);
        }
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    };
    bits & bit != 0
}

/// Checks `instance` against `schema` once; a schema used for many instances is better
/// kept as a [`Validator`].
pub fn validate(schema: &Value, instance: &Value) -> Result<(), SchemaError> {
    Node::new(schema)
        .check(instance)
        .map_err(Failure::into_error)
}

/// A schema, prepared for checking many instances: its keywords are looked up and read
/// once, when it is made, instead of at every check (a tool's input and output are
/// checked on every call). It keeps the schema as given, to be published.
#[derive(Debug, Clone)]
pub struct Validator {
    schema: Value,
    root: Node,
}

impl Validator {
    pub fn new(schema: Value) -> Self {
        Validator {
            root: Node::new(&schema),
            schema,
        }
    }

    /// The schema as given.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    pub fn validate(&self, instance: &Value) -> Result<(), SchemaError> {
        self.root.check(instance).map_err(Failure::into_error)
    }

    /// As [`Validator::validate`] of the object `instance`, without making a `Value` of it.
    pub fn validate_object(&self, instance: &Map<String, Value>) -> Result<(), SchemaError> {
        self.root
            .check_object(instance)
            .map_err(Failure::into_error)
    }
}

/// One (sub)schema.
#[derive(Debug, Clone)]
enum Node {
    /// `true`, or anything that is not an object.
    Any,
    /// `false`.
    Nothing,
    Rules(Box<Rules>),
}

/// The keywords of an object schema that are enforced, as read when it was made.
#[derive(Debug, Clone)]
struct Rules {
    /// The types allowed (bits of [`type_bit`]) and how the rule reads in an error.
    types: Option<(u8, String)>,
    one_of: Option<Vec<Value>>,
    constant: Option<Value>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    items: Option<Node>,
    required: Vec<String>,
    properties: BTreeMap<String, Node>,
    /// `None` when absent: other properties are allowed unchecked.
    additional: Option<Node>,
}

const NULL: u8 = 1;
const BOOLEAN: u8 = 1 << 1;
const INTEGER: u8 = 1 << 2;
const NUMBER: u8 = 1 << 3;
const STRING: u8 = 1 << 4;
const ARRAY: u8 = 1 << 5;
const OBJECT: u8 = 1 << 6;

/// The bit of a JSON Schema type name; none for a name that is not one, which no value
/// matches.
fn type_bit(name: &str) -> u8 {
    match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "integer" => INTEGER,
        "number" => NUMBER,
        "string" => STRING,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => 0,
    }
}

impl Node {
    fn new(schema: &Value) -> Node {
        let Value::Object(s) = schema else {
            return if schema == &Value::Bool(false) {
                Node::Nothing
            } else {
                Node::Any
            };
        };
        let types = match s.get("type") {
            Some(Value::String(t)) => Some((type_bit(t), t.clone())),
            Some(Value::Array(ts)) => {
                let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
                let bits = names.iter().fold(0, |bits, t| bits | type_bit(t));
                Some((bits, names.join(" or ")))
            }
            _ => None,
        };
        let number = |k: &str| s.get(k).and_then(Value::as_f64);
        let count = |k: &str| s.get(k).and_then(Value::as_u64);
        let required = match s.get("required") {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let properties = s
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), Node::new(v))).collect())
            .unwrap_or_default();
        Node::Rules(Box::new(Rules {
            types,
            one_of: match s.get("enum") {
                Some(Value::Array(options)) => Some(options.clone()),
                _ => None,
            },
            constant: s.get("const").cloned(),
            minimum: number("minimum"),
            maximum: number("maximum"),
            min_length: count("minLength"),
            max_length: count("maxLength"),
            min_items: count("minItems"),
            max_items: count("maxItems"),
            items: s.get("items").map(Node::new),
            required,
            properties,
            additional: s.get("additionalProperties").map(Node::new),
        }))
    }

    /// The rules to check, if any; `false` refuses everything.
    fn rules(&self) -> Result<Option<&Rules>, Failure> {
        match self {
            Node::Any => Ok(None),
            Node::Nothing => Err(failure("no value is allowed here")),
            Node::Rules(r) => Ok(Some(r)),
        }
    }

    fn check(&self, v: &Value) -> Result<(), Failure> {
        if let Value::Object(obj) = v {
            return self.check_object(obj);
        }
        let Some(r) = self.rules()? else {
            return Ok(());
        };
        r.check_kind(type_matches(r.type_bits(), v), type_name(v), |o| o == v)?;
        match v {
            Value::Number(n) => r.check_number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(text) => r.check_string(text),
            Value::Array(items) => r.check_array(items),
            _ => Ok(()),
        }
    }

    /// [`Node::check`] of an object, which need not be a `Value`.
    fn check_object(&self, obj: &Map<String, Value>) -> Result<(), Failure> {
        let Some(r) = self.rules()? else {
            return Ok(());
        };
        r.check_kind(r.type_bits() & OBJECT != 0, "object", |o| {
            o.as_object() == Some(obj)
        })?;
        r.check_members(obj)
    }
}

/// `v` against `min` and `max` where set; `rule("least" or "most", bound)` words the
/// bound it breaks.
fn within<T: PartialOrd + Copy>(
    v: T,
    min: Option<T>,
    max: Option<T>,
    rule: impl Fn(&str, T) -> String,
) -> Result<(), Failure> {
    if let Some(min) = min
        && v < min
    {
        return fail(rule("least", min));
    }
    if let Some(max) = max
        && v > max
    {
        return fail(rule("most", max));
    }
    Ok(())
}

fn wrong_type(expected: &str, found: &str) -> Result<(), Failure> {
    fail(format!("must be of type {expected}, not {found}"))
}

impl Rules {
    /// The allowed types' bits; all of them without a `type` keyword.
    fn type_bits(&self) -> u8 {
        self.types.as_ref().map_or(u8::MAX, |(bits, _)| *bits)
    }

    /// `type`, `enum` and `const`, for a value of type `found` (`of_type` when it is one
    /// the schema allows) that `equals` compares with a listed value.
    fn check_kind(
        &self,
        of_type: bool,
        found: &str,
        equals: impl Fn(&Value) -> bool,
    ) -> Result<(), Failure> {
        if let Some((_, expected)) = &self.types
            && !of_type
        {
            return wrong_type(expected, found);
        }
        if let Some(options) = &self.one_of
            && !options.iter().any(&equals)
        {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            return fail(format!("must be one of {}", list.join(", ")));
        }
        if let Some(c) = &self.constant
            && !equals(c)
        {
            return fail(format!("must be {c}"));
        }
        Ok(())
    }

    fn check_number(&self, n: f64) -> Result<(), Failure> {
        within(n, self.minimum, self.maximum, |at, bound| {
            format!("must be at {at} {bound}")
        })
    }

    fn check_string(&self, text: &str) -> Result<(), Failure> {
        if self.min_length.is_none() && self.max_length.is_none() {
            return Ok(());
        }
        let len = text.chars().count() as u64;
        within(len, self.min_length, self.max_length, |at, bound| {
            format!("must be at {at} {bound} characters long")
        })
    }

    fn check_array(&self, items: &[Value]) -> Result<(), Failure> {
        within(
            items.len() as u64,
            self.min_items,
            self.max_items,
            |at, bound| format!("must have at {at} {bound} items"),
        )?;
        if let Some(item) = &self.items {
            for (i, v) in items.iter().enumerate() {
                item.check(v).map_err(|f| f.at_index(i))?;
            }
        }
        Ok(())
    }

    fn check_members(&self, obj: &Map<String, Value>) -> Result<(), Failure> {
        for name in &self.required {
            if !obj.contains_key(name) {
                return fail("is required").map_err(|f| f.at_key(name));
            }
        }
        for (key, value) in obj {
            let result = match (self.properties.get(key), &self.additional) {
                (Some(prop), _) => prop.check(value),
                (None, Some(Node::Nothing)) => fail("is not an allowed property"),
                (None, Some(extra)) => extra.check(value),
                (None, None) => Ok(()),
            };
            result.map_err(|f| f.at_key(key))?;
        }
        Ok(())
    }
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

    #[test]
    fn an_object_checked_in_place_reads_as_the_same_value_checked() {
        let schemas = [
            schema(),
            json!({"type": ["object", "null"], "required": ["a"]}),
            json!({"type": "array"}),
            json!({"enum": [{"a": 1}]}),
            json!({"const": {}}),
            json!({"properties": {"a": false}}),
            json!(false),
            json!(true),
        ];
        let instances = [
            json!({}),
            json!({"a": 1}),
            json!({"name": "x"}),
            json!({"name": "x", "extra": 1}),
            json!({"name": "x", "tags": ["a", "toolong"]}),
        ];
        for s in &schemas {
            let check = Validator::new(s.clone());
            for v in &instances {
                let Value::Object(obj) = v else {
                    unreachable!()
                };
                assert_eq!(
                    check.validate_object(obj),
                    check.validate(v),
                    "schema {s}, instance {v}"
                );
            }
        }
        assert!(
            Validator::new(json!({"type": "array"}))
                .validate_object(&Map::new())
                .is_err()
        );
    }
}
