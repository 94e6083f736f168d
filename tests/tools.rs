//! The three tools through the real binary: tenant isolation of `_secure_query_data`
//! (data loaded with `mreg data import`), refused filters, and the public auth info.

mod common;

use std::process::Command;

use common::{StdioClient, TempDir, mreg};
use serde_json::{Value, json};

fn import(dir: &TempDir, tenant: &str, collection: &str, rows: &str) -> Value {
    let file = dir.path().join(format!("{tenant}-{collection}.jsonl"));
    std::fs::write(&file, rows).unwrap();
    let out = mreg(dir.path())
        .args([
            "data",
            "import",
            "--tenant",
            tenant,
            "--collection",
            collection,
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn as_tenant(dir: &TempDir, tenant: &str) -> StdioClient {
    let mut cmd: Command = mreg(dir.path());
    cmd.env("MREG_LOCAL_TENANT", tenant)
        .env("MREG_LOCAL_USER", "alice");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    c
}

fn query(c: &mut StdioClient, args: Value) -> Value {
    let r = c.request(
        5,
        "tools/call",
        json!({"name": "_secure_query_data", "arguments": args}),
    );
    r["result"].clone()
}

#[test]
fn tenants_see_only_their_own_rows() {
    let dir = TempDir::new("tools-tenants");
    let report = import(
        &dir,
        "contoso",
        "orders",
        "{\"id\":1,\"item\":\"apple\",\"qty\":3}\n{\"id\":2,\"item\":\"pear\",\"qty\":9}\nnot json\n",
    );
    assert_eq!(report["rows"], 2);
    assert_eq!(report["errors"][0]["line"], 3);
    import(
        &dir,
        "fabrikam",
        "orders",
        "{\"id\":100,\"item\":\"secret\",\"qty\":1}\n",
    );
    let list = mreg(dir.path()).args(["data", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("fabrikam"));

    let mut a = as_tenant(&dir, "contoso");
    let r = query(&mut a, json!({"collection": "orders"}));
    assert_eq!(r["isError"], false, "{r}");
    let ids: Vec<i64> = r["structuredContent"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    let r = query(
        &mut a,
        json!({"collection": "orders", "filter": "qty > 5 AND item CONTAINS 'ea'"}),
    );
    assert_eq!(
        r["structuredContent"]["rows"],
        json!([{"id": 2, "item": "pear", "qty": 9}])
    );
    // A tenant argument is refused by the schema: the tenant comes from the caller only.
    let r = query(
        &mut a,
        json!({"collection": "orders", "tenant": "fabrikam"}),
    );
    assert_eq!(r["isError"], true);
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("`tenant`"),
        "{r}"
    );
    a.close();

    let mut b = as_tenant(&dir, "fabrikam");
    let r = query(&mut b, json!({"collection": "orders"}));
    let ids: Vec<i64> = r["structuredContent"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [100]);
    b.close();
}

#[test]
fn injection_style_filters_are_refused_with_a_position() {
    let dir = TempDir::new("tools-injection");
    import(&dir, "t1", "users", "{\"name\":\"ann\"}\n");
    let mut c = as_tenant(&dir, "t1");
    for filter in [
        "name = '' OR 1=1 --",
        "\"; DROP TABLE users",
        "name = 'a\u{0007}'",
        "name = 'x'; DELETE",
        &"a".repeat(3000),
    ] {
        let r = query(&mut c, json!({"collection": "users", "filter": filter}));
        assert_eq!(r["isError"], true, "{filter:?} gave {r}");
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(!text.is_empty());
        if filter.len() < 2048 {
            assert!(text.contains("byte"), "{filter:?}: {text}");
        }
    }
    // The server still answers and the data is intact.
    let r = query(
        &mut c,
        json!({"collection": "users", "filter": "name = 'ann'"}),
    );
    assert_eq!(r["structuredContent"]["rows"], json!([{"name": "ann"}]));
    c.close();
}
