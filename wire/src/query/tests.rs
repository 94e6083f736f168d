//! Unit tests of the filter language: precedence, every refusal with its position,
//! canonical round trips (also on generated filters and random bytes), evaluation.

use serde_json::json;

use super::*;
use crate::fuzzing::Rng;

fn p(s: &str) -> Expr {
    parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn canon(s: &str) -> String {
    p(s).to_string()
}

/// The refusal of `s`, checked to point inside the input.
fn refusal(s: &str) -> QueryError {
    let e = parse(s).expect_err(s);
    assert!(e.pos <= s.len(), "{s:?}: {e}");
    e
}

fn refused_at(s: &str, pos: usize, needle: &str) {
    let e = refusal(s);
    assert_eq!(e.pos, pos, "{s:?}: {e}");
    assert!(e.reason.contains(needle), "{s:?}: {e}");
}

fn round_trip(s: &str) {
    let e = p(s);
    let printed = e.to_string();
    assert_eq!(parse(&printed), Ok(e), "{s:?} printed as {printed:?}");
}

#[test]
fn precedence_not_and_or() {
    assert_eq!(canon("a=1 or b=2 and c=3"), "a = 1 OR b = 2 AND c = 3");
    assert!(matches!(p("a=1 OR b=2 AND c=3"), Expr::Or(v) if matches!(v[1], Expr::And(_))));
    assert!(matches!(p("NOT a=1 AND b=2"), Expr::And(v) if matches!(v[0], Expr::Not(_))));
    assert_eq!(canon("(a=1 OR b=2) AND c=3"), "(a = 1 OR b = 2) AND c = 3");
    assert_eq!(canon("not (a=1 and b=2)"), "NOT (a = 1 AND b = 2)");
    assert_eq!(canon("NOT NOT a = 1"), "NOT NOT a = 1");
    assert_eq!(canon("((a = 1))"), "a = 1");
    // Same-kind nesting is flattened.
    assert_eq!(p("a=1 AND (b=2 AND c=3)"), p("a=1 AND b=2 AND c=3"));
    assert_eq!(p("(a=1 OR b=2) OR c=3"), p("a=1 OR b=2 OR c=3"));
    assert_eq!(p("a NOT IN (1)"), p("NOT a IN (1)"));
    assert_eq!(canon("a not contains 'x'"), "NOT a CONTAINS 'x'");
}

#[test]
fn literals_and_canonical_text() {
    assert_eq!(canon("a = 'it''s'"), "a = 'it''s'");
    assert_eq!(canon("a = \"it's\""), "a = 'it''s'");
    assert_eq!(canon("a = \"say \"\"hi\"\"\""), "a = 'say \"hi\"'");
    assert_eq!(canon("a=007.50"), "a = 7.5");
    assert_eq!(canon("a=-0.0"), "a = 0");
    assert_eq!(canon("a=-12"), "a = -12");
    assert_eq!(
        canon("a=TRUE or b=False or c=NULL"),
        "a = true OR b = false OR c = null"
    );
    assert_eq!(canon("x.y_2.Z IN ( 1 ,'b' )"), "x.y_2.Z IN (1, 'b')");
    assert_eq!(canon("t contains 'é😀'"), "t CONTAINS 'é😀'");
    assert_eq!(canon("a\t=\r\n1"), "a = 1");
}

#[test]
fn refusals_carry_their_position() {
    refused_at("", 0, "empty");
    refused_at("   ", 0, "empty");
    refused_at("a = 1;", 5, "`;`");
    refused_at("a = 1 -- x", 6, "comments");
    refused_at("a = 1 /* x */", 6, "comments");
    refused_at("a = 1 # x", 6, "comments");
    refused_at("a = `x`", 4, "backticks");
    refused_at("a = 'x", 4, "unterminated");
    refused_at("a = \"x", 4, "unterminated");
    refused_at("a == 1", 2, "`==`");
    refused_at("a <> 1", 2, "`<>`");
    refused_at("a ! 1", 2, "`!=`");
    refused_at("a = 1 b = 2", 6, "AND, OR");
    refused_at("a = 1)", 5, "unmatched");
    refused_at("(a = 1", 6, "`)` to close the `(` at byte 0");
    refused_at("a =", 3, "a value");
    refused_at("a = b", 4, "found the name `b`");
    refused_at("= 1", 0, "a field name");
    refused_at("1 = 1", 0, "a field name");
    refused_at("and = 1", 0, "reserved");
    refused_at("a 1", 2, "an operator");
    refused_at("a NOT = 1", 6, "IN or CONTAINS");
    refused_at("a IN 1", 5, "`(` after IN");
    refused_at("a IN ()", 6, "a value");
    refused_at("a IN (1 2)", 8, "`,` or `)`");
    refused_at("a CONTAINS 1", 11, "quoted string");
    refused_at("a = 1.", 6, "decimal point");
    refused_at("a = 1.2.3", 4, "malformed number");
    refused_at("a = 12abc", 4, "malformed number");
    refused_at("a = - 1", 4, "`-` must be followed");
    refused_at("a. = 1", 2, "after `.`");
    refused_at("a..b = 1", 2, "after `.`");
    refused_at("a = 1 AND", 9, "a field name");
    refused_at("a = 'x\u{0}'", 6, "control characters");
    refused_at("a = 1\u{1b}", 5, "control characters");
    refused_at("a = '\u{202E}x'", 5, "invisible");
    refused_at("a = 1 @", 6, "unexpected character `@`");
    refused_at("é = 1", 0, "unexpected character `é`");
    // The first error in the input wins, lexical or syntactic.
    refused_at("name = '' OR 1=1 --", 13, "a field name");
    refused_at("a = 1 b ;", 6, "AND, OR");
    refused_at("a = 1 AND ;", 10, "`;`");
    refused_at("   ;", 3, "`;`");
    refused_at("(a = 1 OR ;", 10, "`;`");
}

#[test]
fn bounds_are_refused_with_positions() {
    refused_at(&"a".repeat(MAX_IDENT + 1), 0, "field name too long");
    let ok_ident = format!("{} = 1", "a".repeat(MAX_IDENT));
    p(&ok_ident);
    refused_at(
        &format!("a = '{}'", "x".repeat(MAX_STRING + 1)),
        4,
        "string too long",
    );
    p(&format!("a = '{}'", "é".repeat(MAX_STRING)));
    refused_at(
        &format!("a = {}", "9".repeat(MAX_NUMBER + 1)),
        4,
        "number too long",
    );
    let long = format!("a = '{}'", "x".repeat(MAX_INPUT));
    refused_at(&long, MAX_INPUT, "too long");
    let deep = format!(
        "{}a = 1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    refused_at(&deep, MAX_DEPTH, "nested too deeply");
    p(&format!(
        "{}a = 1{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    ));
    let nots = format!("{}a = 1", "NOT ".repeat(MAX_DEPTH + 1));
    refused_at(&nots, 4 * MAX_DEPTH, "nested too deeply");
    let postfix = format!(
        "{}a NOT IN (1){}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    refused_at(&postfix, MAX_DEPTH + 2, "nested too deeply");
    let terms: Vec<String> = (0..=MAX_TERMS).map(|i| format!("a{i}=1")).collect();
    let many = terms.join(" OR ");
    let at = many.rfind("a64").unwrap();
    refused_at(&many, at, "too many conditions");
    p(&terms[..MAX_TERMS].join(" OR "));
    let list: Vec<String> = (0..=MAX_IN_LIST).map(|i| i.to_string()).collect();
    let in_list = format!("a IN ({})", list.join(","));
    refusal(&in_list);
    assert!(refusal(&in_list).reason.contains("IN list too long"));
    p(&format!("a IN ({})", list[..MAX_IN_LIST].join(",")));
}

#[test]
fn injection_style_inputs_are_refused() {
    for s in [
        "' OR 1=1 --",
        "x = '' OR 1=1 --",
        "x = 1 OR 1=1",
        "\"; DROP TABLE users",
        "x = 1; DROP TABLE users",
        "x = 'a'; --",
        "x = 1 UNION SELECT * FROM users",
        "x = 1 /* */",
        "x = `id`",
        "x = 1\u{0} OR y = 2",
        "x = 'a\nb'",
        "1 = 1",
        "x = y",
        "x = $1",
        "x = ?",
        "x LIKE '%a%'",
        "x = 0x41",
        "x = 1e5",
        "x = 'a' || 'b'",
    ] {
        let e = refusal(s);
        assert!(!e.reason.is_empty(), "{s:?}");
    }
    refused_at("' OR 1=1 --", 0, "unterminated");
    refused_at("\"; DROP TABLE users", 0, "unterminated");
    refused_at("x = 1 OR 1=1", 9, "a field name");
    refused_at("x = 1 UNION SELECT", 6, "AND, OR");
    refused_at(&"x".repeat(10 * 1024), MAX_INPUT, "too long");
}

#[test]
fn round_trips_hold() {
    for s in [
        "a = 1",
        "a != 'x' AND b < 2 OR c >= -3.25",
        "NOT (a = 1 OR b = 2) AND NOT c CONTAINS 'q''r'",
        "a IN (1, 'two', true, null) OR (b = 1 AND (c = 2 OR d = 3))",
        "((a = 1 OR b = 2) AND c = 3) OR NOT NOT d = 4",
        "a.b.c <= \"x'y\" AND e NOT IN (1)",
        "NOT (NOT (a = 1 AND b = 2) OR c = 3)",
    ] {
        round_trip(s);
    }
}

fn gen_filter(r: &mut Rng, depth: usize) -> String {
    let lits = ["1", "-2.50", "'x''y'", "\"q\"", "true", "NULL", "0", "'é'"];
    match if depth == 0 { 0 } else { r.below(6) } {
        0 | 1 => {
            let op = r.pick(&["=", "!=", "<", "<=", ">", ">="]);
            let f = r.pick(&["a", "b.c", "_d"]);
            format!("{f} {op} {}", r.pick(&lits))
        }
        2 => format!(
            "{} IN ({}, {})",
            r.pick(&["a", "e"]),
            r.pick(&lits),
            r.pick(&lits)
        ),
        3 => format!("NOT {}", gen_filter(r, depth - 1)),
        4 => format!("({})", gen_filter(r, depth - 1)),
        _ => {
            let kw = r.pick(&["AND", "or", "And"]);
            format!(
                "{} {kw} {}",
                gen_filter(r, depth - 1),
                gen_filter(r, depth - 1)
            )
        }
    }
}

#[test]
fn generated_filters_round_trip() {
    let mut r = Rng::new(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let s = gen_filter(&mut r, 5);
        match parse(&s) {
            Ok(e) => assert_eq!(parse(&e.to_string()), Ok(e), "{s:?}"),
            Err(e) => assert!(e.pos <= s.len(), "{s:?}: {e}"),
        }
    }
}

#[test]
fn random_bytes_never_panic_and_round_trip_when_accepted() {
    let alphabet = b"ab.=!<>()', \"-019NOTANDORINCONTAINStruefalsenull;`#/*\t";
    let mut r = Rng::new(42);
    for _ in 0..20_000 {
        let len = r.below(40);
        let s: String = (0..len)
            .map(|_| alphabet[r.below(alphabet.len())] as char)
            .collect();
        match parse(&s) {
            Ok(e) => assert_eq!(parse(&e.to_string()), Ok(e), "{s:?}"),
            Err(e) => assert!(e.pos <= s.len(), "{s:?}: {e}"),
        }
    }
}

#[test]
fn canonical_form_fits_the_input_bound() {
    // A `'` inside a double-quoted string takes one byte and two when printed: near the
    // bound such a filter is refused rather than accepted with a canonical form that
    // would not parse.
    let term = format!("a=\"{}\"", "'".repeat(MAX_STRING));
    let s = vec![term; 7].join(" OR ");
    assert!(s.len() <= MAX_INPUT);
    refused_at(&s, 0, "canonical form");
    let term = format!("a=\"{}\"", "'".repeat(MAX_STRING / 2));
    round_trip(&vec![term; 7].join(" OR "));
    let mut s = String::from("a IN(1");
    while s.len() + 3 < MAX_INPUT {
        s.push_str(",1");
    }
    s.push(')');
    assert!(refusal(&s).reason.contains("IN list too long"));
}

#[test]
fn evaluation_semantics() {
    let row = json!({
        "n": 5, "big": 9007199254740993u64, "f": 2.5, "s": "héllo", "b": true,
        "z": null, "tags": ["red", "blue"], "o": {"k": "v", "d": {"e": 1}}
    });
    let t = |s: &str| eval(&p(s), &row);
    assert!(t("n = 5") && t("n = 5.0") && t("n > 4.5") && t("n <= 5"));
    assert!(t("big = 9007199254740993") && !t("big = 9007199254740992"));
    assert!(t("f > 2 AND f < 3"));
    assert!(t("s = 'héllo'") && t("s > 'h'") && t("s CONTAINS 'éll'") && !t("s CONTAINS 'E'"));
    assert!(t("b = true") && !t("b = 'true'") && !t("b > false"));
    assert!(t("z = null") && t("missing = null") && !t("n = null") && t("n != null"));
    assert!(!t("missing = 1") && t("missing != 1") && !t("missing < 1") && !t("missing > 1"));
    assert!(!t("s = 5") && t("s != 5") && !t("s < 5") && !t("n < 'x'"));
    assert!(t("tags CONTAINS 'red'") && !t("tags CONTAINS 're'") && !t("tags = 'red'"));
    assert!(t("o.k = 'v'") && t("o.d.e = 1") && !t("o.k.x = 'v'") && t("o.k.x = null"));
    assert!(t("n IN (1, 5)") && !t("n IN ('5')") && t("missing IN (null)"));
    assert!(t("NOT n = 1") && t("n = 1 OR n = 5") && !t("n = 5 AND n = 1"));
    assert!(t("s NOT IN ('a')") && !t("tags NOT CONTAINS 'blue'"));
}

#[test]
fn fields_and_order_by() {
    assert_eq!(parse_fields(&["a", "b.c", "a"]).unwrap().len(), 2);
    let e = parse_fields(&["a", "b c"]).unwrap_err();
    assert_eq!(e.pos, 2);
    assert!(e.reason.starts_with("fields[1]"), "{e}");
    assert_eq!(parse_field("").unwrap_err().pos, 0);
    assert_eq!(parse_field(" a").unwrap_err().pos, 1);
    assert_eq!(parse_field("a;").unwrap_err().pos, 1);
    assert_eq!(parse_field(&"a".repeat(65)).unwrap_err().pos, MAX_IDENT);
    let many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("f{i}")).collect();
    assert!(parse_fields(&many).is_err());

    let keys = parse_order_by("a, b.c desc ,d ASC").unwrap();
    assert_eq!(order_by_text(&keys), "a, b.c DESC, d");
    assert_eq!(parse_order_by(&order_by_text(&keys)).unwrap(), keys);
    assert_eq!(
        parse_order_by("desc DESC").unwrap()[0].field.as_str(),
        "desc"
    );
    for (s, pos) in [
        ("", 0),
        ("a,", 2),
        ("a b", 2),
        ("a DESC DESC", 7),
        ("a, a", 3),
        ("a; DROP", 1),
        ("'a'", 0),
        ("a -- x", 2),
    ] {
        let e = parse_order_by(s).unwrap_err();
        assert_eq!(e.pos, pos, "{s:?}: {e}");
    }
    let nine: Vec<String> = (0..=MAX_ORDER_KEYS).map(|i| format!("k{i}")).collect();
    assert!(
        parse_order_by(&nine.join(","))
            .unwrap_err()
            .reason
            .contains("too many")
    );
}

#[test]
fn projection_and_order() {
    let row = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
    let f = parse_fields(&["b.c", "a", "x.y"]).unwrap();
    assert_eq!(project(&row, &f), json!({"b": {"c": 2}, "a": 1}));
    let f = parse_fields(&["b", "b.c"]).unwrap();
    assert_eq!(project(&row, &f), json!({"b": {"c": 2, "d": 3}}));
    use std::cmp::Ordering::*;
    let (one, two, s, n) = (json!(1), json!(2.5), json!("a"), json!(null));
    assert_eq!(order_cmp(Some(&one), Some(&two)), Less);
    assert_eq!(order_cmp(None, Some(&n)), Less);
    assert_eq!(order_cmp(Some(&s), Some(&one)), Greater);
    assert_eq!(order_cmp(Some(&json!(true)), Some(&json!(false))), Greater);
}
