//! HTTP plumbing of the OAuth endpoints: the request wrapper handlers take, JSON and
//! OAuth error answers (`no-store`), redirects, HTML pages with anti-framing and a
//! strict content security policy, cookies, and the per-address throttle.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::url::{ParamError, Params};
use crate::transport::http::conn::{Request, Response};

/// One request to an OAuth endpoint, with the time it is judged at.
pub struct Call<'a> {
    pub req: &'a Request,
    pub now: u64,
}

impl Call<'_> {
    fn content_type(&self) -> String {
        self.req
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    pub fn is_json(&self) -> bool {
        self.content_type() == "application/json"
    }

    pub fn is_form(&self) -> bool {
        self.content_type() == "application/x-www-form-urlencoded"
    }

    pub fn query(&self) -> Result<Params, ParamError> {
        Params::parse(self.req.query.as_deref().unwrap_or(""))
    }

    /// The form body (callers check [`is_form`](Self::is_form) first).
    pub fn form(&self) -> Result<Params, ParamError> {
        let body = std::str::from_utf8(&self.req.body).map_err(|_| ParamError::BadEncoding)?;
        Params::parse(body)
    }

    /// The value of cookie `name` (the first one, if repeated).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
    }

    pub fn peer(&self) -> IpAddr {
        self.req.peer.ip()
    }
}

fn no_store(r: Response) -> Response {
    r.header("Cache-Control", "no-store")
        .header("Pragma", "no-cache")
}

/// A JSON answer that no cache keeps.
pub fn json(status: u16, body: &Value) -> Response {
    no_store(
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body.to_string().into_bytes()),
    )
}

/// An OAuth error answer (RFC 6749 §5.2).
pub fn oauth_error(status: u16, code: &str, description: &str) -> Response {
    json(
        status,
        &json!({ "error": code, "error_description": description }),
    )
}

/// The store cannot be written: try again later.
pub fn unavailable() -> Response {
    oauth_error(
        503,
        "temporarily_unavailable",
        "the server cannot store this request now; try again later",
    )
    .header("Retry-After", "5")
}

/// `302 Found` to `location`.
pub fn redirect(location: &str) -> Response {
    no_store(
        Response::new(302)
            .header("Location", location)
            .header("Referrer-Policy", "no-referrer"),
    )
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}dl{margin:1.5rem 0}dt{font-weight:600;margin-top:.8rem}dd{margin:0;word-break:break-all}\
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.6rem .8rem}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.8rem}";

/// An HTML page that cannot be framed, runs no script, loads nothing and posts forms
/// only to `self` and `form_targets` (where our redirects lead). Its referrer policy
/// is `same-origin`, not `no-referrer`: with the latter, browsers send `Origin: null`
/// on the consent form's POST, and the consent check wants the real origin.
pub fn page(status: u16, title: &str, body: &str, form_targets: &[String]) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    let mut actions = vec!["'self'".to_string()];
    actions.extend(form_targets.iter().cloned());
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {}; frame-ancestors 'none'; base-uri 'none'",
        actions.join(" ")
    );
    no_store(
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("X-Frame-Options", "DENY")
            .header("Content-Security-Policy", csp)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "same-origin")
            .body(html.into_bytes()),
    )
}

/// A page explaining why the request stops here (nothing is redirected).
pub fn error_page(status: u16, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)),
        &[],
    )
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/; with `secure`, the name gets
/// the `__Host-` prefix and the cookie `Secure`. `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        cookie_name(name, secure)
    );
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

pub fn cookie_name(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// The endpoint groups throttled separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Register,
    Authorize,
    Token,
}

/// Requests per client address: a token bucket of `per_minute` requests, refilled
/// continuously. The table is bounded; when full, addresses whose bucket has refilled
/// are forgotten first.
pub struct Throttle {
    table: Mutex<HashMap<(Bucket, IpAddr), (f64, u64)>>,
    register_per_minute: u32,
    per_minute: u32,
}

const MAX_TRACKED: usize = 10_000;

impl Throttle {
    pub fn new(per_minute: u32, register_per_minute: u32) -> Throttle {
        Throttle {
            table: Mutex::new(HashMap::new()),
            register_per_minute,
            per_minute,
        }
    }

    /// Takes one request from the bucket; `Err(seconds to wait)` when empty.
    pub fn check(&self, bucket: Bucket, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let rate = f64::from(match bucket {
            Bucket::Register => self.register_per_minute,
            _ => self.per_minute,
        });
        let refill = |tokens: f64, last: u64| {
            (tokens + (now_ms.saturating_sub(last) as f64) * rate / 60_000.0).min(rate)
        };
        let mut t = self.table.lock();
        if t.len() >= MAX_TRACKED && !t.contains_key(&(bucket, ip)) {
            t.retain(|_, (tok, last)| refill(*tok, *last) < rate);
            if t.len() >= MAX_TRACKED {
                t.clear();
            }
        }
        let entry = t.entry((bucket, ip)).or_insert((rate, now_ms));
        let tokens = refill(entry.0, entry.1);
        if tokens >= 1.0 {
            *entry = (tokens - 1.0, now_ms);
            Ok(())
        } else {
            *entry = (tokens, now_ms);
            Err(((1.0 - tokens) * 60.0 / rate).ceil().max(1.0) as u64)
        }
    }
}

/// `429` with `Retry-After`.
pub fn throttled(wait: u64) -> Response {
    oauth_error(
        429,
        "slow_down",
        "too many requests from this address; try again later",
    )
    .header("Retry-After", wait.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_refills() {
        let t = Throttle::new(60, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(t.check(Bucket::Register, ip, 0).is_ok());
        assert!(t.check(Bucket::Register, ip, 0).is_ok());
        assert_eq!(t.check(Bucket::Register, ip, 0), Err(30));
        // Other buckets and addresses are separate.
        assert!(t.check(Bucket::Token, ip, 0).is_ok());
        assert!(
            t.check(Bucket::Register, "192.0.2.2".parse().unwrap(), 0)
                .is_ok()
        );
        assert!(t.check(Bucket::Register, ip, 30_000).is_ok());
    }

    #[test]
    fn pages_cannot_be_framed_and_escape_text() {
        let r = error_page(400, "Bad <request>", "a \"quoted\" & <b>bold</b> thing");
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(h("X-Frame-Options"), "DENY");
        assert!(h("Content-Security-Policy").contains("frame-ancestors 'none'"));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("&lt;b&gt;bold&lt;/b&gt;"));
        assert!(!body.contains("<b>"));
        assert_eq!(
            set_cookie("c", "v", Some(5), true),
            "__Host-c=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=5; Secure"
        );
    }
}
