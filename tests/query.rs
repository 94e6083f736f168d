//! Tenant data queries end to end on a real sled database: tenant isolation, pagination,
//! cursor binding, refused filters, limits, import reports, and `_secure_query_data`
//! called through the dispatcher with callers of two tenants.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use mreg::auth::principal::{Principal, Role};
use mreg::data::{self, DataError, ImportLimits, Limits, QuerySpec};
use mreg::mcp::context::{Closed, Outbound};
use mreg::mcp::registry::Registry;
use mreg::mcp::server::{Server, ServerInfo};
use mreg::mcp::session::{Session, Transport};
use mreg::tools::query_data;
use mreg_wire::query::{self, MAX_INPUT};

/// A fresh database in the target's temporary directory, removed on drop.
struct TempDb {
    dir: PathBuf,
    tree: sled::Tree,
}

impl TempDb {
    fn new(name: &str) -> TempDb {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("query-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(&dir).open().unwrap();
        let tree = db.open_tree(data::TREE).unwrap();
        TempDb { dir, tree }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn import(tree: &sled::Tree, tenant: &str, collection: &str, lines: &str) -> data::ImportReport {
    data::import_jsonl(tree, tenant, collection, lines.as_bytes()).unwrap()
}

fn numbered(n: usize, owner: &str) -> String {
    (0..n)
        .map(|i| {
            json!({"n": i, "owner": owner, "kind": if i % 3 == 0 { "x" } else { "y" }}).to_string()
                + "\n"
        })
        .collect()
}

fn spec(filter: Option<&str>, order_by: Option<&str>, limit: Option<usize>) -> QuerySpec {
    QuerySpec {
        filter: filter.map(|f| query::parse(f).unwrap()),
        order_by: order_by
            .map(|o| query::parse_order_by(o).unwrap())
            .unwrap_or_default(),
        limit,
        ..Default::default()
    }
}

/// Every row of the query, following cursors; checks each page's bounds.
fn all_pages(
    tree: &sled::Tree,
    tenant: &str,
    coll: &str,
    mut s: QuerySpec,
    limits: Limits,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for _ in 0..10_000 {
        let page = data::query(tree, tenant, coll, &s, limits).unwrap();
        assert!(page.rows.len() <= s.limit.unwrap_or(limits.max_rows).min(limits.max_rows));
        assert!(page.scanned <= limits.scan_budget);
        rows.extend(page.rows);
        match page.next_cursor {
            Some(c) => s.cursor = Some(c),
            None => return rows,
        }
    }
    panic!("pagination does not end");
}

fn ns(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["n"].as_u64().unwrap()).collect()
}

#[test]
fn tenants_with_same_named_collections_see_only_their_own_rows() {
    let db = TempDb::new("isolation");
    assert_eq!(
        import(&db.tree, "tenant-a", "people", &numbered(20, "a")).rows,
        20
    );
    assert_eq!(
        import(&db.tree, "tenant-b", "people", &numbered(30, "b")).rows,
        30
    );
    // Names that extend the other's ("tenant-a" + ...) stay apart too.
    import(&db.tree, "tenant-aa", "people", &numbered(5, "aa"));
    import(&db.tree, "tenant-a", "people.x", &numbered(5, "ax"));
    let limits = Limits::new(1000);
    let a = all_pages(
        &db.tree,
        "tenant-a",
        "people",
        spec(None, None, None),
        limits,
    );
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|r| r["owner"] == "a"));
    let b = all_pages(
        &db.tree,
        "tenant-b",
        "people",
        spec(None, Some("n DESC"), None),
        limits,
    );
    assert_eq!(b.len(), 30);
    assert!(b.iter().all(|r| r["owner"] == "b"));
    let none = all_pages(
        &db.tree,
        "tenant-a",
        "people",
        spec(Some("owner != 'a'"), None, None),
        limits,
    );
    assert!(none.is_empty());
    assert_eq!(
        data::list(&db.tree).unwrap(),
        vec![
            ("tenant-a".into(), "people".into(), 20),
            ("tenant-a".into(), "people.x".into(), 5),
            ("tenant-aa".into(), "people".into(), 5),
            ("tenant-b".into(), "people".into(), 30),
        ]
    );
    assert_eq!(
        data::collections(&db.tree, "tenant-a", 10).unwrap(),
        ["people", "people.x"]
    );
    assert_eq!(
        data::collections(&db.tree, "tenant-b", 10).unwrap(),
        ["people"]
    );
    assert!(
        data::collections(&db.tree, "tenant-c", 10)
            .unwrap()
            .is_empty()
    );
    // An unknown collection reads as empty at this layer.
    let page = data::query(
        &db.tree,
        "tenant-c",
        "people",
        &QuerySpec::default(),
        limits,
    )
    .unwrap();
    assert_eq!(
        (page.rows.len(), page.next_cursor, page.scanned),
        (0, None, 0)
    );
    assert!(matches!(
        data::query(&db.tree, "a\0b", "people", &QuerySpec::default(), limits),
        Err(DataError::InvalidName { what: "tenant" })
    ));
}

#[test]
fn pagination_returns_every_row_once() {
    let db = TempDb::new("pages");
    import(&db.tree, "t", "c", &numbered(250, "t"));
    let limits = Limits::new(100);
    for limit in [1, 7, 100] {
        let rows = all_pages(&db.tree, "t", "c", spec(None, None, Some(limit)), limits);
        assert_eq!(ns(&rows), (0..250).collect::<Vec<_>>(), "limit {limit}");
    }
    let xs = all_pages(
        &db.tree,
        "t",
        "c",
        spec(Some("kind = 'x'"), None, Some(9)),
        limits,
    );
    assert_eq!(ns(&xs), (0..250).filter(|i| i % 3 == 0).collect::<Vec<_>>());
    let desc = all_pages(
        &db.tree,
        "t",
        "c",
        spec(Some("kind = 'y'"), Some("n DESC"), Some(11)),
        limits,
    );
    assert_eq!(
        ns(&desc),
        (0..250).rev().filter(|i| i % 3 != 0).collect::<Vec<_>>()
    );
    // A small scan budget: short (even empty) pages, each still with a cursor, and in
    // the end every match exactly once.
    let tight = Limits {
        scan_budget: 10,
        ..limits
    };
    let sparse = all_pages(
        &db.tree,
        "t",
        "c",
        spec(Some("n >= 240 OR n = 3"), None, Some(5)),
        tight,
    );
    assert_eq!(
        ns(&sparse),
        [3, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249]
    );
    let first = data::query(
        &db.tree,
        "t",
        "c",
        &spec(Some("n >= 240"), None, None),
        tight,
    )
    .unwrap();
    assert_eq!((first.rows.len(), first.scanned), (0, 10));
    assert!(first.next_cursor.is_some());
    // order_by over more rows than the budget is refused, not truncated.
    let err = data::query(&db.tree, "t", "c", &spec(None, Some("n"), None), tight).unwrap_err();
    assert!(matches!(err, DataError::TooLargeToOrder(_)), "{err}");
    // Projection.
    let mut s = spec(Some("n = 5"), None, None);
    s.fields = Some(query::parse_fields(&["n", "missing"]).unwrap());
    let page = data::query(&db.tree, "t", "c", &s, limits).unwrap();
    assert_eq!(page.rows, [json!({"n": 5})]);
}

#[test]
fn a_cursor_is_bound_to_its_tenant_and_query() {
    let db = TempDb::new("cursor");
    import(&db.tree, "tenant-a", "c", &numbered(10, "a"));
    import(&db.tree, "tenant-b", "c", &numbered(10, "b"));
    let limits = Limits::new(100);
    let s = spec(Some("n >= 0"), None, Some(3));
    let page = data::query(&db.tree, "tenant-a", "c", &s, limits).unwrap();
    let cursor = page.next_cursor.unwrap();
    let with = |s: &QuerySpec| QuerySpec {
        cursor: Some(cursor.clone()),
        ..s.clone()
    };
    assert_eq!(
        data::query(&db.tree, "tenant-a", "c", &with(&s), limits)
            .unwrap()
            .rows
            .len(),
        3
    );
    let refused = [
        data::query(&db.tree, "tenant-b", "c", &with(&s), limits),
        data::query(&db.tree, "tenant-a", "d", &with(&s), limits),
        data::query(
            &db.tree,
            "tenant-a",
            "c",
            &with(&spec(Some("n >= 1"), None, Some(3))),
            limits,
        ),
        data::query(
            &db.tree,
            "tenant-a",
            "c",
            &with(&spec(Some("n >= 0"), Some("n"), Some(3))),
            limits,
        ),
    ];
    for r in refused {
        let e = r.unwrap_err();
        assert!(matches!(e, DataError::Cursor(_)), "{e}");
        assert!(e.to_string().contains("another query"), "{e}");
    }
    let mut junk = with(&s);
    junk.cursor = Some("AAAA".into());
    let e = data::query(&db.tree, "tenant-a", "c", &junk, limits).unwrap_err();
    assert!(
        e.to_string().contains("not a cursor this server issued"),
        "{e}"
    );
}

#[test]
fn injection_style_filters_are_refused_with_a_position() {
    let big = format!("a = '{}'", "x".repeat(10 * 1024));
    for (input, pos) in [
        ("' OR 1=1 --", 0),
        ("name = '' OR 1=1 --", 13),
        ("\"; DROP TABLE users", 0),
        ("name = 'x'; DROP TABLE users", 10),
        ("name = 'x' -- comment", 11),
        ("name = 'a\u{0}b'", 9),
        ("name = 'x'\u{7}", 10),
        ("name = `x`", 7),
        (big.as_str(), MAX_INPUT),
    ] {
        let e = query::parse(input).unwrap_err();
        assert_eq!(e.pos, pos, "{input:?}: {e}");
        assert!(e.pos <= input.len());
    }
}

#[test]
fn limits_are_capped_by_max_rows() {
    let db = TempDb::new("limits");
    import(&db.tree, "t", "c", &numbered(50, "t"));
    let limits = Limits::new(5);
    for asked in [None, Some(1000), Some(5)] {
        let page = data::query(&db.tree, "t", "c", &spec(None, None, asked), limits).unwrap();
        assert_eq!(page.rows.len(), 5, "{asked:?}");
        assert!(page.next_cursor.is_some());
    }
    let page = data::query(
        &db.tree,
        "t",
        "c",
        &spec(None, Some("n DESC"), Some(2)),
        limits,
    )
    .unwrap();
    assert_eq!(ns(&page.rows), [49, 48]);
}

#[test]
fn import_reports_bad_lines_and_stops_at_the_row_limit() {
    let db = TempDb::new("import");
    let long = format!("{{\"s\": \"{}\"}}", "x".repeat(70 * 1024));
    let input = format!("{{\"n\": 0}}\n\n[1, 2]\nnot json\n{long}\n{{\"n\": 1}}\r\n42\n");
    let r = import(&db.tree, "t", "c", &input);
    assert_eq!(r.rows, 2);
    let lines: Vec<u64> = r
        .skipped_lines_with_errors
        .iter()
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(lines, [3, 4, 5, 7]);
    assert!(
        r.skipped_lines_with_errors[0]
            .1
            .contains("not a JSON object")
    );
    assert!(r.skipped_lines_with_errors[2].1.contains("longer than"));
    assert_eq!(r.stopped_at_line, None);
    // Ids continue after the rows already stored.
    let limits = ImportLimits {
        max_rows: 3,
        max_reported_errors: 1,
        ..Default::default()
    };
    let more = data::import_jsonl_bounded(&db.tree, "t", "c", numbered(5, "t").as_bytes(), &limits)
        .unwrap();
    assert_eq!((more.rows, more.stopped_at_line), (3, Some(4)));
    let bad =
        data::import_jsonl_bounded(&db.tree, "t", "c", "x\ny\nz\n".as_bytes(), &limits).unwrap();
    assert_eq!(
        (
            bad.rows,
            bad.skipped_lines_with_errors.len(),
            bad.more_errors
        ),
        (0, 1, 2)
    );
    let rows = all_pages(&db.tree, "t", "c", QuerySpec::default(), Limits::new(100));
    assert_eq!(ns(&rows), [0, 1, 0, 1, 2]);
    assert!(matches!(
        data::import_jsonl(&db.tree, "t", "bad name", "{}".as_bytes()),
        Err(DataError::InvalidName { what: "collection" })
    ));
}

// ---------------------------------------------------------------------------------------
// The tool, through the dispatcher

struct Discard;

impl Outbound for Discard {
    fn send(&self, _: &[u8]) -> Result<(), Closed> {
        Ok(())
    }
}

struct Client {
    server: Arc<Server>,
    session: Arc<Session>,
    out: Arc<dyn Outbound>,
}

impl Client {
    fn new(server: &Arc<Server>, tenant: &str) -> Client {
        let out: Arc<dyn Outbound> = Arc::new(Discard);
        let session = Session::new(
            format!("s-{tenant}"),
            Transport::Stdio,
            Principal::local(tenant, "u", &[Role::User]),
        );
        let c = Client {
            server: server.clone(),
            session,
            out,
        };
        let init = c.request("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}));
        assert!(init.get("result").is_some(), "{init}");
        c
    }

    fn request(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let bytes = self
            .server
            .handle_bytes(&self.session, req.to_string().as_bytes(), &*self.out)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The `result` of `tools/call` of the query tool.
    fn query(&self, args: Value) -> Value {
        let r = self.request(
            "tools/call",
            json!({"name": query_data::NAME, "arguments": args}),
        );
        r.get("result").cloned().unwrap_or_else(|| panic!("{r}"))
    }
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap()
}

fn tool_server(tree: &sled::Tree, max_rows: usize) -> Arc<Server> {
    let mut reg = Registry::default();
    reg.tool(query_data::tool(tree.clone(), max_rows));
    let info = ServerInfo {
        name: "t".into(),
        title: "t".into(),
        version: "0".into(),
    };
    Arc::new(Server::new(info, reg))
}

#[test]
fn the_tool_reads_only_the_callers_tenant() {
    let db = TempDb::new("tool");
    import(&db.tree, "tenant-a", "orders", &numbered(12, "a"));
    import(&db.tree, "tenant-b", "orders", &numbered(12, "b"));
    import(&db.tree, "tenant-b", "secret_b", &numbered(1, "b"));
    let server = tool_server(&db.tree, 5);
    let (a, b) = (
        Client::new(&server, "tenant-a"),
        Client::new(&server, "tenant-b"),
    );

    let listed = a.request("tools/list", json!({}));
    let schema = &listed["result"]["tools"][0]["inputSchema"];
    assert_eq!(schema["additionalProperties"], json!(false), "{listed}");
    assert!(listed["result"]["tools"][0]["outputSchema"].is_object());

    let r = a.query(json!({"collection": "orders", "filter": "kind = 'x'", "limit": 1000}));
    assert_eq!(r["isError"], json!(false), "{r}");
    let s = &r["structuredContent"];
    assert_eq!(
        (s["tenant"].as_str(), s["collection"].as_str()),
        (Some("tenant-a"), Some("orders"))
    );
    assert_eq!(s["count"], json!(4));
    assert!(
        s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["owner"] == "a")
    );
    assert!(s["next_cursor"].is_null());
    assert!(s["scanned"].as_u64().unwrap() >= 4);
    assert_eq!(serde_json::from_str::<Value>(text(&r)).unwrap(), *s);

    // Capped by max_rows, then the cursor of A is refused for B.
    let r = a.query(json!({"collection": "orders", "order_by": "n DESC"}));
    assert_eq!(r["structuredContent"]["count"], json!(5), "{r}");
    let cursor = r["structuredContent"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let next = a.query(json!({"collection": "orders", "order_by": "n DESC", "cursor": cursor}));
    assert_eq!(
        next["structuredContent"]["rows"][0]["n"],
        json!(6),
        "{next}"
    );
    let stolen = b.query(json!({"collection": "orders", "order_by": "n DESC", "cursor": cursor}));
    assert_eq!(stolen["isError"], json!(true), "{stolen}");
    assert!(text(&stolen).contains("invalid cursor"), "{stolen}");

    // A tenant argument is refused by the schema.
    let r = a.query(json!({"collection": "orders", "tenant": "tenant-b"}));
    assert_eq!(r["isError"], json!(true));
    assert!(text(&r).contains("invalid arguments"), "{r}");

    // An unknown collection names only the caller's own collections.
    let r = a.query(json!({"collection": "secret_b"}));
    assert_eq!(r["isError"], json!(true));
    assert_eq!(
        text(&r),
        "no collection `secret_b` in your tenant; your collections: orders"
    );
    let r = b.query(json!({"collection": "nope"}));
    assert!(
        text(&r).ends_with("your collections: orders, secret_b"),
        "{r}"
    );
}

#[test]
fn the_tool_refuses_injection_with_a_position() {
    let db = TempDb::new("tool-refusals");
    import(&db.tree, "t", "c", &numbered(3, "t"));
    let server = tool_server(&db.tree, 100);
    let c = Client::new(&server, "t");
    for (filter, pos) in [
        ("' OR 1=1 --", 0),
        ("n = 1 OR 1=1", 9),
        ("\"; DROP TABLE users", 0),
        ("n = 1; DROP TABLE users", 5),
        ("n = 1\u{1b}[2J", 5),
    ] {
        let r = c.query(json!({"collection": "c", "filter": filter}));
        assert_eq!(r["isError"], json!(true), "{r}");
        let t = text(&r);
        assert!(
            t.starts_with(&format!("filter refused at byte {pos}: ")),
            "{t}"
        );
    }
    // 10 KB: the schema's maxLength answers before the parser.
    let r = c.query(json!({"collection": "c", "filter": "x".repeat(10 * 1024)}));
    assert_eq!(r["isError"], json!(true));
    assert!(text(&r).contains("filter"), "{r}");
    let r = c.query(json!({"collection": "c", "fields": ["n", "a b"]}));
    assert!(
        text(&r).starts_with("fields refused: at byte 2: fields[1]"),
        "{r}"
    );
    let r = c.query(json!({"collection": "c", "fields": ["n"], "filter": "n IN (0, 2)"}));
    assert_eq!(
        r["structuredContent"]["rows"],
        json!([{"n": 0}, {"n": 2}]),
        "{r}"
    );
    // A caller without a usable tenant gets a tool error, not someone's data.
    let nobody = Client::new(&server, "");
    let r = nobody.query(json!({"collection": "c"}));
    assert_eq!(r["isError"], json!(true), "{r}");
}
