//! `GET /authorize` and the consent step. The request is checked in the order that
//! decides where an error may go: client and redirect URI first (until both are known
//! good, errors are shown as a page and never redirected, RFC 6749 §4.1.2.1), then
//! response type, PKCE S256 (`plain` refused), resource and scopes, whose errors go
//! back to the client. Then the user sees who is asking (name, client id, redirect
//! URI, scopes) and approves, unless a signed cookie remembers approval of this very
//! client and redirect URI. The consent form carries a CSRF token, and the request is
//! bound to the browser that made it by a cookie, so a consent cannot be submitted
//! from another browser or page. Approval sends the browser to Entra ID with the
//! proxy's own PKCE pair and a fresh single-use `state`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::http::{self, Call, escape};
use super::store::{ClientKind, ClientRecord, Flow, PendingAuth, Table};
use super::tokens::{self, ct_eq, hash};
use super::url::{clip, with_query};
use super::{OAuthProxy, redirect};
use crate::transport::http::conn::Response;

pub const BROWSER_COOKIE: &str = "mreg_oauth_browser";
pub const CONSENT_COOKIE: &str = "mreg_oauth_consent";
/// How long an approval is remembered.
pub const CONSENT_SECS: u64 = 30 * 86_400;
/// Clients remembered in one consent cookie at most.
const MAX_REMEMBERED: usize = 20;

fn well_formed_cookie(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// The entry a consent cookie keeps for one client and redirect URI.
fn consent_entry(client_id: &str, redirect_uri: &str) -> String {
    hash(&format!("{client_id}\n{redirect_uri}"))[..32].to_string()
}

impl OAuthProxy {
    /// Sends an error back to a client whose redirect URI is known good.
    pub(super) fn redirect_error(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        code: &str,
        description: &str,
    ) -> Response {
        let mut params = vec![("error", code), ("error_description", description)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        http::redirect(&with_query(redirect_uri, &params))
    }

    /// True for `resource` naming this server's MCP endpoint.
    pub(super) fn resource_ok(&self, resource: &str) -> bool {
        let ours = self.settings.resource.trim_end_matches('/');
        resource.trim_end_matches('/') == ours
    }

    /// `GET /authorize`.
    pub(super) fn authorize(&self, call: &Call<'_>) -> Response {
        let now = call.now;
        let q = match call.query() {
            Ok(q) => q,
            Err(e) => return http::error_page(400, "Invalid request", &e.to_string()),
        };
        let Some(client_id) = q.get("client_id") else {
            return http::error_page(400, "Invalid request", "client_id is missing.");
        };
        let client = match self.client(client_id, now) {
            Ok(c) => c,
            Err(why) => {
                self.audit_oauth(
                    call,
                    "oauth/authorize",
                    false,
                    "unknown_client",
                    Some(client_id),
                );
                return http::error_page(400, "Unknown application", &why);
            }
        };
        let Some(redirect_uri) = redirect::resolve(&client.redirect_uris, q.get("redirect_uri"))
        else {
            self.audit_oauth(
                call,
                "oauth/authorize",
                false,
                "redirect_uri_mismatch",
                Some(client_id),
            );
            return http::error_page(
                400,
                "Invalid redirect URI",
                "The redirect_uri is missing or not registered for this application; nothing was sent to it.",
            );
        };
        let state = q.get("state");
        if state.is_some_and(|s| s.len() > 1024) {
            return http::error_page(400, "Invalid request", "state is too long.");
        }
        let back = |code: &str, why: &str| {
            self.audit_oauth(call, "oauth/authorize", false, code, Some(client_id));
            self.redirect_error(redirect_uri, state, code, why)
        };
        if q.get("response_type") != Some("code") {
            return back(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        if q.get("response_mode").is_some_and(|m| m != "query") {
            return back("invalid_request", "only response_mode=query is supported");
        }
        match q.get("code_challenge_method") {
            Some("S256") => {}
            Some("plain") => {
                return back(
                    "invalid_request",
                    "PKCE method plain is not accepted; use S256",
                );
            }
            Some(_) => return back("invalid_request", "unsupported code_challenge_method"),
            None => {
                return back(
                    "invalid_request",
                    "PKCE is required: code_challenge_method=S256",
                );
            }
        }
        let challenge = match q.get("code_challenge") {
            Some(c) if tokens::valid_challenge(c) => c,
            Some(_) => return back("invalid_request", "code_challenge is not an S256 challenge"),
            None => {
                return back(
                    "invalid_request",
                    "PKCE is required: code_challenge is missing",
                );
            }
        };
        if let Some(r) = q.get("resource")
            && !self.resource_ok(r)
        {
            return back(
                "invalid_target",
                "the resource is not this server's MCP endpoint",
            );
        }
        let scopes: Vec<String> = match q.get("scope") {
            None => self.settings.scopes.clone(),
            Some(s) => s.split_ascii_whitespace().map(str::to_string).collect(),
        };
        if let Some(bad) = scopes.iter().find(|s| !self.scope_supported(s)) {
            return back(
                "invalid_scope",
                &format!("scope {} is not offered by this server", clip(bad)),
            );
        }
        let (browser, browser_cookie) = self.browser_cookie(call);
        let csrf = tokens::random_token(32);
        let pending = PendingAuth {
            client_id: client.client_id.clone(),
            client_name: client.client_name.clone(),
            redirect_uri: redirect_uri.to_string(),
            redirect_given: q.get("redirect_uri").is_some(),
            state: state.map(str::to_string),
            challenge: challenge.to_string(),
            scopes,
            resource: q.get("resource").map(str::to_string),
            refresh: client.wants_refresh(),
            browser: hash(&browser),
            csrf: hash(&csrf),
            expires_at: now + self.settings.tx_ttl,
        };
        let forced = q
            .get("prompt")
            .is_some_and(|p| p.split(' ').any(|p| p == "consent"));
        if !forced && self.consent_remembered(call, &pending) {
            self.audit_oauth(call, "oauth/consent", true, "remembered", Some(client_id));
            return self
                .start_upstream(pending, now)
                .header("Set-Cookie", browser_cookie);
        }
        let tx = tokens::random_token(24);
        if self
            .store
            .put(Table::Flows, &format!("tx/{tx}"), &pending, false)
            .is_err()
        {
            return http::unavailable();
        }
        self.consent_page(&client, &pending, &tx, &csrf)
            .header("Set-Cookie", browser_cookie)
    }

    fn scope_supported(&self, s: &str) -> bool {
        s == "offline_access" || self.settings.scopes.iter().any(|x| x == s)
    }

    /// The browser's binding value (reused if the browser has one) and its cookie.
    fn browser_cookie(&self, call: &Call<'_>) -> (String, String) {
        let name = http::cookie_name(BROWSER_COOKIE, self.settings.secure_cookies);
        let value = call
            .cookie(&name)
            .filter(|v| well_formed_cookie(v))
            .map(str::to_string)
            .unwrap_or_else(|| tokens::random_token(32));
        let cookie = http::set_cookie(BROWSER_COOKIE, &value, None, self.settings.secure_cookies);
        (value, cookie)
    }

    fn consent_page(
        &self,
        client: &ClientRecord,
        p: &PendingAuth,
        tx: &str,
        csrf: &str,
    ) -> Response {
        let name = client
            .client_name
            .as_deref()
            .unwrap_or("An application that gave no name");
        let scopes: String = p
            .scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect();
        let provenance = match client.kind {
            ClientKind::Registered => {
                "<p class=\"warn\">This application registered itself with this server: its name is \
                 not verified. Continue only if you started this sign-in yourself and you \
                 recognise the address it will return to.</p>"
            }
            ClientKind::MetadataDocument => {
                "<p class=\"warn\">This application is identified by the address of its metadata \
                 document (its client ID). Continue only if you started this sign-in yourself.</p>"
            }
        };
        let body = format!(
            "<h1>{name} wants to use {server} on your behalf</h1>{provenance}\
             <dl><dt>Application</dt><dd>{name}</dd>\
             <dt>Client ID</dt><dd><code>{client_id}</code></dd>\
             <dt>Returns to</dt><dd><code>{redirect}</code></dd>\
             <dt>Access requested</dt><dd><ul>{scopes}</ul></dd></dl>\
             <p>If you allow, you will sign in with Microsoft Entra ID and the application \
             receives a token for this server only.</p>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            name = escape(name),
            server = escape(&self.settings.issuer),
            client_id = escape(&client.client_id),
            redirect = escape(&p.redirect_uri),
            action = super::CONSENT_PATH,
            tx = escape(tx),
            csrf = escape(csrf),
        );
        http::page(
            200,
            "Allow access?",
            &body,
            &self.form_targets(&p.redirect_uri),
        )
    }

    /// Where the consent form's answer may lead: Entra ID, or back to the client.
    fn form_targets(&self, redirect_uri: &str) -> Vec<String> {
        let mut t = vec![self.settings.upstream_origin.clone()];
        t.extend(redirect::csp_source(redirect_uri));
        t
    }

    /// `POST /oauth/consent`.
    pub(super) fn consent(&self, call: &Call<'_>) -> Response {
        let now = call.now;
        if let Some(origin) = call.req.header("origin")
            && origin != self.settings.issuer_origin
        {
            return http::error_page(403, "Forbidden", "The consent came from another site.");
        }
        let form = match (call.is_form(), call.form()) {
            (true, Ok(f)) => f,
            _ => return http::error_page(400, "Invalid request", "Expected the consent form."),
        };
        let expired = || {
            http::error_page(
                400,
                "This sign-in has expired",
                "This sign-in request has expired or was already answered. Start again from your application.",
            )
        };
        let Some(tx) = form.get("tx").filter(|t| t.len() <= 64) else {
            return expired();
        };
        let key = format!("tx/{tx}");
        let Some(pending) = self.store.get::<PendingAuth>(Table::Flows, &key, now) else {
            return expired();
        };
        let name = http::cookie_name(BROWSER_COOKIE, self.settings.secure_cookies);
        let same_browser = call
            .cookie(&name)
            .is_some_and(|b| ct_eq(&hash(b), &pending.browser));
        let csrf_ok = form
            .get("csrf")
            .is_some_and(|c| ct_eq(&hash(c), &pending.csrf));
        if !same_browser || !csrf_ok {
            let reason = if csrf_ok { "other_browser" } else { "csrf" };
            self.audit_oauth(
                call,
                "oauth/consent",
                false,
                reason,
                Some(&pending.client_id),
            );
            return http::error_page(
                403,
                "Forbidden",
                "This consent was not submitted from the page this server showed in this browser.",
            );
        }
        let Some(pending) = self.store.take::<PendingAuth>(Table::Flows, &key, now) else {
            return expired();
        };
        if form.get("decision") != Some("approve") {
            self.audit_oauth(
                call,
                "oauth/consent",
                false,
                "denied",
                Some(&pending.client_id),
            );
            return self.redirect_error(
                &pending.redirect_uri,
                pending.state.as_deref(),
                "access_denied",
                "the user denied access",
            );
        }
        self.audit_oauth(
            call,
            "oauth/consent",
            true,
            "approved",
            Some(&pending.client_id),
        );
        let cookie = self.remember_consent(call, &pending);
        self.start_upstream(pending, now)
            .header("Set-Cookie", cookie)
    }

    /// Stores the login and sends the browser to Entra ID.
    fn start_upstream(&self, auth: PendingAuth, now: u64) -> Response {
        let state = tokens::random_token(32);
        let (verifier, challenge) = crate::tools::auth_info::pkce_pair();
        let flow = Flow {
            auth,
            upstream_verifier: verifier,
            expires_at: now + self.settings.tx_ttl,
        };
        let key = format!("st/{}", hash(&state));
        if self.store.put(Table::Flows, &key, &flow, false).is_err() {
            return http::unavailable();
        }
        http::redirect(&self.upstream.authorize_url(&state, &challenge))
    }

    fn consent_entries(&self, call: &Call<'_>) -> Vec<String> {
        let name = http::cookie_name(CONSENT_COOKIE, self.settings.secure_cookies);
        let Some(raw) = call.cookie(&name) else {
            return Vec::new();
        };
        let mut parts = raw.split('.');
        let (Some(kid), Some(body), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Vec::new();
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return Vec::new();
        };
        let signed = format!("{kid}.{body}");
        let keys = self.keys.read();
        if !keys.verify_mac(super::keys::Purpose::Cookie, kid, signed.as_bytes(), &tag) {
            return Vec::new();
        }
        let Some(v) = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return Vec::new();
        };
        if v["exp"].as_u64().is_none_or(|exp| call.now >= exp) {
            return Vec::new();
        }
        v["c"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .take(MAX_REMEMBERED)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn consent_remembered(&self, call: &Call<'_>, p: &PendingAuth) -> bool {
        let entry = consent_entry(&p.client_id, &p.redirect_uri);
        self.consent_entries(call).iter().any(|e| ct_eq(e, &entry))
    }

    /// The consent cookie with this client added (oldest entries dropped).
    fn remember_consent(&self, call: &Call<'_>, p: &PendingAuth) -> String {
        let entry = consent_entry(&p.client_id, &p.redirect_uri);
        let mut entries: Vec<String> = self
            .consent_entries(call)
            .into_iter()
            .filter(|e| *e != entry)
            .collect();
        entries.push(entry);
        let skip = entries.len().saturating_sub(MAX_REMEMBERED);
        let payload = json!({ "c": &entries[skip..], "exp": call.now + CONSENT_SECS });
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let keys = self.keys.read();
        let kid = keys.current_kid(super::keys::Purpose::Cookie);
        let signed = format!("{kid}.{body}");
        let (_, tag) = keys.mac(super::keys::Purpose::Cookie, signed.as_bytes());
        http::set_cookie(
            CONSENT_COOKIE,
            &format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag)),
            Some(CONSENT_SECS),
            self.settings.secure_cookies,
        )
    }
}
