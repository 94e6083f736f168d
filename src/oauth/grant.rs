//! The second half of the flow: Entra ID's redirect to the callback (state single-use
//! and bound to the consenting browser; Entra's code redeemed with the proxy's
//! credentials; Entra's access token validated like any bearer token; a one-time code
//! of our own back to the client), `POST /token` (`authorization_code` with PKCE,
//! `refresh_token` with rotation, a grace window for a refresh that raced, and reuse
//! detection that ends the grant) and `POST /revoke` (RFC 7009). Entra's tokens never
//! leave the server: clients get the proxy's own tokens only.

use std::time::{Duration, Instant};

use serde_json::json;

use super::OAuthProxy;
use super::http::{self, Call};
use super::store::{CodeRecord, Flow, Grant, Table};
use super::tokens::{self, StoredPrincipal, ct_eq, hash};
use super::url::{Params, with_query};
use crate::transport::http::conn::Response;

/// Our authorization codes live this long (RFC 6749 §4.1.2 recommends ≤ 10 minutes).
pub const CODE_TTL: u64 = 300;
/// How long a refresh waits for a concurrent refresh of the same grant.
const REFRESH_WAIT: Duration = Duration::from_secs(30);

/// Clears a grant's in-flight mark when dropped.
struct InFlight<'a> {
    proxy: &'a OAuthProxy,
    grant: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.proxy.refreshing.lock().remove(&self.grant);
        self.proxy.refreshed.notify_all();
    }
}

impl OAuthProxy {
    /// `GET <callback>`: Entra ID sends the browser back here.
    pub(super) fn callback(&self, call: &Call<'_>) -> Response {
        let now = call.now;
        let expired = || {
            http::error_page(
                400,
                "This sign-in has expired",
                "This sign-in has expired or was already completed. Start again from your application.",
            )
        };
        let q = match call.query() {
            Ok(q) => q,
            Err(e) => return http::error_page(400, "Invalid request", &e.to_string()),
        };
        let Some(state) = q.get("state").filter(|s| s.len() <= 128) else {
            return expired();
        };
        let key = format!("st/{}", hash(state));
        let Some(flow) = self.store.get::<Flow>(Table::Flows, &key, now) else {
            self.audit_oauth(call, "oauth/callback", false, "unknown_state", None);
            return expired();
        };
        let name = http::cookie_name(
            super::authorize::BROWSER_COOKIE,
            self.settings.secure_cookies,
        );
        if !call
            .cookie(&name)
            .is_some_and(|b| ct_eq(&hash(b), &flow.auth.browser))
        {
            self.audit_oauth(
                call,
                "oauth/callback",
                false,
                "other_browser",
                Some(&flow.auth.client_id),
            );
            return http::error_page(
                403,
                "Forbidden",
                "This sign-in was started in another browser.",
            );
        }
        let Some(flow) = self.store.take::<Flow>(Table::Flows, &key, now) else {
            return expired();
        };
        let a = &flow.auth;
        let back = |code: &str, why: &str| {
            self.audit_oauth(call, "oauth/callback", false, code, Some(&a.client_id));
            self.redirect_error(&a.redirect_uri, a.state.as_deref(), code, why)
        };
        if let Some(err) = q.get("error") {
            log::info!(
                "oauth: Entra ID ended the sign-in for client {}: {}",
                a.client_id,
                super::url::clip(err)
            );
            return match err {
                "access_denied"
                | "consent_required"
                | "interaction_required"
                | "login_required" => back("access_denied", "the sign-in was cancelled or refused"),
                "temporarily_unavailable" => back(
                    "temporarily_unavailable",
                    "the identity provider is unavailable; try again",
                ),
                _ => back("server_error", "the identity provider refused the sign-in"),
            };
        }
        let Some(code) = q.get("code").filter(|c| c.len() <= 4096) else {
            return back("server_error", "the identity provider sent no code");
        };
        let upstream = match self.upstream.redeem(code, &flow.upstream_verifier) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("oauth: redeeming Entra ID's code failed: {e}");
                let (c, d) = e.for_client();
                return back(c, d);
            }
        };
        let principal =
            match self
                .validator
                .authenticate_token(&upstream.access_token, call.peer(), now)
            {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("oauth: Entra ID's access token was refused: {e}");
                    return back(
                        "access_denied",
                        "the identity provider's token does not grant access to this server",
                    );
                }
            };
        let grant_id = tokens::random_token(16);
        let keys = self.keys.read();
        let sealed = upstream
            .refresh_token
            .as_deref()
            .map(|rt| keys.seal(rt.as_bytes(), grant_id.as_bytes()));
        drop(keys);
        let grant = Grant {
            grant_id: grant_id.clone(),
            client_id: a.client_id.clone(),
            principal: StoredPrincipal::from(&principal),
            scopes: a.scopes.clone(),
            active: false,
            current: None,
            previous: None,
            previous_until: 0,
            replay: None,
            upstream: sealed.filter(|_| a.refresh),
            created_at: now,
            expires_at: now + CODE_TTL,
        };
        let code = tokens::random_token(32);
        let record = CodeRecord {
            client_id: a.client_id.clone(),
            redirect_uri: a.redirect_uri.clone(),
            redirect_given: a.redirect_given,
            challenge: a.challenge.clone(),
            scopes: a.scopes.clone(),
            resource: a.resource.clone(),
            grant: grant_id.clone(),
            used: false,
            expires_at: now + CODE_TTL,
        };
        let stored = self
            .store
            .put(Table::Grants, &grant_id, &grant, false)
            .and_then(|_| {
                self.store.put(
                    Table::Flows,
                    &format!("code/{}", hash(&code)),
                    &record,
                    true,
                )
            });
        if stored.is_err() {
            return back(
                "temporarily_unavailable",
                "the server cannot store the sign-in now",
            );
        }
        log::info!(
            "oauth: {} signed in for client {}",
            principal.key(),
            a.client_id
        );
        self.audit_principal(
            call,
            "oauth/callback",
            &grant.principal,
            "signed_in",
            &a.client_id,
        );
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &a.state {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        http::redirect(&with_query(&a.redirect_uri, &params))
    }

    /// `POST /token`.
    pub(super) fn token(&self, call: &Call<'_>) -> Response {
        if !call.is_form() {
            return http::oauth_error(
                400,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
        let form = match call.form() {
            Ok(f) => f,
            Err(e) => return http::oauth_error(400, "invalid_request", &e.to_string()),
        };
        if call.req.header("authorization").is_some()
            || form.get("client_secret").is_some()
            || form.get("client_assertion").is_some()
        {
            return http::oauth_error(
                401,
                "invalid_client",
                "clients of this server are public: send client_id and no credentials",
            );
        }
        if let Some(r) = form.get("resource")
            && !self.resource_ok(r)
        {
            return http::oauth_error(
                400,
                "invalid_target",
                "the resource is not this server's MCP endpoint",
            );
        }
        let Some(client_id) = form.get("client_id") else {
            return http::oauth_error(400, "invalid_request", "client_id is required");
        };
        match form.get("grant_type") {
            Some("authorization_code") => self.redeem_code(call, &form, client_id),
            Some("refresh_token") => self.refresh(call, &form, client_id),
            Some(_) => http::oauth_error(
                400,
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token",
            ),
            None => http::oauth_error(400, "invalid_request", "grant_type is required"),
        }
    }

    fn refused(&self, call: &Call<'_>, client_id: &str, reason: &str, why: &str) -> Response {
        self.audit_oauth(call, "oauth/token", false, reason, Some(client_id));
        http::oauth_error(400, "invalid_grant", why)
    }

    fn redeem_code(&self, call: &Call<'_>, form: &Params, client_id: &str) -> Response {
        let now = call.now;
        let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
            return http::oauth_error(
                400,
                "invalid_request",
                "code and code_verifier (PKCE) are required",
            );
        };
        let key = format!("code/{}", hash(code));
        // Marked used before anything else is checked: one attempt per code.
        let marked = self
            .store
            .update::<CodeRecord>(Table::Flows, &key, now, true, |c| CodeRecord {
                used: true,
                ..c.clone()
            });
        let c = match marked {
            Err(_) => return http::unavailable(),
            Ok(None) => {
                return self.refused(
                    call,
                    client_id,
                    "unknown_code",
                    "the code is invalid or expired",
                );
            }
            Ok(Some((old, _))) if old.used => {
                // RFC 6749 §4.1.2: a code used twice revokes what it gave.
                self.end_grant(&old.grant, now);
                log::warn!(
                    "oauth: code for client {} presented again; its grant is revoked",
                    old.client_id
                );
                return self.refused(call, client_id, "code_reused", "the code was already used");
            }
            Ok(Some((old, _))) => old,
        };
        let redirect_ok = match form.get("redirect_uri") {
            Some(r) => r == c.redirect_uri,
            None => !c.redirect_given,
        };
        let problem = if c.client_id != client_id {
            Some(("wrong_client", "the code was issued to another client"))
        } else if !redirect_ok {
            Some((
                "redirect_uri_mismatch",
                "redirect_uri differs from the authorization request",
            ))
        } else if !tokens::pkce_ok(verifier, &c.challenge) {
            Some((
                "pkce_mismatch",
                "code_verifier does not match the code_challenge",
            ))
        } else {
            None
        };
        if let Some((reason, why)) = problem {
            self.end_grant(&c.grant, now);
            return self.refused(call, client_id, reason, why);
        }
        let refresh = tokens::new_refresh(&c.grant);
        let keys = self.keys.read();
        let replay = keys.seal(refresh.0.as_bytes(), c.grant.as_bytes());
        drop(keys);
        let (refresh_ttl, access_ttl) = (self.settings.refresh_ttl, self.settings.access_ttl);
        let activated = self
            .store
            .update::<Grant>(Table::Grants, &c.grant, now, true, |g| {
                let offers_refresh = g.upstream.is_some();
                Grant {
                    active: true,
                    current: offers_refresh.then(|| refresh.1.clone()),
                    replay: offers_refresh.then(|| replay.clone()),
                    expires_at: now
                        + if offers_refresh {
                            refresh_ttl
                        } else {
                            access_ttl
                        },
                    ..g.clone()
                }
            });
        let grant = match activated {
            Ok(Some((_, g))) => g,
            Ok(None) => {
                return self.refused(
                    call,
                    client_id,
                    "grant_gone",
                    "the sign-in is no longer valid",
                );
            }
            Err(_) => return http::unavailable(),
        };
        let refresh_token = grant.current.as_ref().map(|_| refresh.0.as_str());
        self.audit_principal(
            call,
            "oauth/token",
            &grant.principal,
            "authorization_code",
            client_id,
        );
        self.token_response(&grant, refresh_token, now)
    }

    fn token_response(&self, g: &Grant, refresh_token: Option<&str>, now: u64) -> Response {
        let ttl = self.settings.access_ttl;
        let access = tokens::issue_access(
            &self.keys.read(),
            &self.settings.issuer,
            &self.settings.resource,
            &g.principal,
            &g.client_id,
            &g.grant_id,
            ttl,
            now,
        );
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": g.scopes.join(" "),
        });
        if let Some(rt) = refresh_token {
            body["refresh_token"] = json!(rt);
        }
        http::json(200, &body)
    }

    /// Ends a grant: its refresh tokens stop working and so do its access tokens.
    pub(super) fn end_grant(&self, grant: &str, now: u64) {
        self.store
            .revoke('g', grant, now + self.settings.access_ttl + 60);
        self.store.delete(Table::Grants, grant);
    }

    fn refresh(&self, call: &Call<'_>, form: &Params, client_id: &str) -> Response {
        let Some((grant_id, secret)) = form.get("refresh_token").and_then(tokens::parse_refresh)
        else {
            return self.refused(
                call,
                client_id,
                "unknown_refresh",
                "the refresh token is invalid",
            );
        };
        // One refresh per grant at a time; a second one waits, then finds its token
        // in the grace window and gets the same answer.
        let deadline = Instant::now() + REFRESH_WAIT;
        {
            let mut set = self.refreshing.lock();
            while set.contains(grant_id) {
                if self.refreshed.wait_until(&mut set, deadline).timed_out() {
                    return http::oauth_error(
                        503,
                        "temporarily_unavailable",
                        "a refresh of this sign-in is still running; try again",
                    );
                }
            }
            set.insert(grant_id.to_string());
        }
        let _guard = InFlight {
            proxy: self,
            grant: grant_id.to_string(),
        };
        self.refresh_exclusive(call, form, client_id, grant_id, secret)
    }

    fn refresh_exclusive(
        &self,
        call: &Call<'_>,
        form: &Params,
        client_id: &str,
        grant_id: &str,
        secret: &str,
    ) -> Response {
        let now = call.now;
        let grant = match self.store.get::<Grant>(Table::Grants, grant_id, now) {
            Some(g) if g.active && !self.store.is_revoked('g', grant_id, now) => g,
            _ => {
                return self.refused(
                    call,
                    client_id,
                    "unknown_refresh",
                    "the refresh token is invalid or expired",
                );
            }
        };
        if grant.client_id != client_id {
            return self.refused(
                call,
                client_id,
                "wrong_client",
                "the refresh token was issued to another client",
            );
        }
        if let Some(scope) = form.get("scope")
            && scope
                .split_ascii_whitespace()
                .any(|s| !grant.scopes.iter().any(|g| g == s))
        {
            return http::oauth_error(400, "invalid_scope", "a refresh cannot add scopes");
        }
        let presented = hash(secret);
        let is_current = grant
            .current
            .as_deref()
            .is_some_and(|c| ct_eq(c, &presented));
        let in_grace = grant
            .previous
            .as_deref()
            .is_some_and(|p| ct_eq(p, &presented))
            && now <= grant.previous_until;
        if !is_current {
            if in_grace {
                let replay = grant
                    .replay
                    .as_deref()
                    .and_then(|r| self.keys.read().unseal(r, grant_id.as_bytes()))
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some(rt) = replay {
                    self.audit_principal(
                        call,
                        "oauth/token",
                        &grant.principal,
                        "refresh_replayed",
                        client_id,
                    );
                    return self.token_response(&grant, Some(&rt), now);
                }
            }
            // A rotated-out token came back: someone holds a copy. End the family.
            log::warn!(
                "oauth: an old refresh token of {} (client {}) was presented; the grant is revoked",
                grant.principal.tenant.clone() + "/" + &grant.principal.user,
                client_id
            );
            self.end_grant(grant_id, now);
            return self.refused(
                call,
                client_id,
                "refresh_reused",
                "the refresh token was already used",
            );
        }
        let upstream_rt = grant
            .upstream
            .as_deref()
            .and_then(|u| self.keys.read().unseal(u, grant_id.as_bytes()))
            .and_then(|b| String::from_utf8(b).ok());
        let Some(upstream_rt) = upstream_rt else {
            self.end_grant(grant_id, now);
            return self.refused(
                call,
                client_id,
                "upstream_unusable",
                "the sign-in is no longer valid; sign in again",
            );
        };
        let fresh = match self.upstream.refresh(&upstream_rt) {
            Ok(t) => t,
            Err(e) if e.ends_grant() => {
                log::info!(
                    "oauth: Entra ID ended the sign-in of {}/{}: {e}",
                    grant.principal.tenant,
                    grant.principal.user
                );
                self.end_grant(grant_id, now);
                let (code, why) = e.for_client();
                let code = if code == "access_denied" {
                    "invalid_grant"
                } else {
                    code
                };
                self.audit_oauth(
                    call,
                    "oauth/token",
                    false,
                    "upstream_ended",
                    Some(client_id),
                );
                return http::oauth_error(400, code, why);
            }
            Err(e) => {
                log::warn!("oauth: refreshing with Entra ID failed: {e}");
                let (code, why) = e.for_client();
                return http::oauth_error(503, code, why).header("Retry-After", "5");
            }
        };
        // Roles and account state come from Entra's answer, not from what we stored.
        let principal =
            match self
                .validator
                .authenticate_token(&fresh.access_token, call.peer(), now)
            {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("oauth: Entra ID's refreshed token was refused: {e}");
                    self.end_grant(grant_id, now);
                    return self.refused(
                        call,
                        client_id,
                        "upstream_token_refused",
                        "the sign-in no longer grants access",
                    );
                }
            };
        let (new_rt, new_hash) = tokens::new_refresh(grant_id);
        let keys = self.keys.read();
        let upstream = keys.seal(
            fresh
                .refresh_token
                .as_deref()
                .unwrap_or(&upstream_rt)
                .as_bytes(),
            grant_id.as_bytes(),
        );
        let replay = keys.seal(new_rt.as_bytes(), grant_id.as_bytes());
        drop(keys);
        let next = Grant {
            principal: StoredPrincipal::from(&principal),
            upstream: Some(upstream),
            previous: grant.current.clone(),
            previous_until: now + self.settings.refresh_grace,
            current: Some(new_hash),
            replay: Some(replay),
            expires_at: now + self.settings.refresh_ttl,
            ..grant
        };
        if self
            .store
            .put(Table::Grants, grant_id, &next, true)
            .is_err()
        {
            return http::unavailable();
        }
        self.audit_principal(
            call,
            "oauth/token",
            &next.principal,
            "refresh_token",
            client_id,
        );
        self.token_response(&next, Some(&new_rt), now)
    }

    /// `POST /revoke` (RFC 7009): always 200 for unknown tokens.
    pub(super) fn revoke(&self, call: &Call<'_>) -> Response {
        let now = call.now;
        let form = match (call.is_form(), call.form()) {
            (true, Ok(f)) => f,
            (_, Err(e)) => return http::oauth_error(400, "invalid_request", &e.to_string()),
            (false, _) => {
                return http::oauth_error(
                    400,
                    "invalid_request",
                    "the body must be application/x-www-form-urlencoded",
                );
            }
        };
        let Some(token) = form.get("token") else {
            return http::oauth_error(400, "invalid_request", "token is required");
        };
        let client_id = form.get("client_id");
        let ok = || http::json(200, &json!({}));
        if let Some((grant_id, secret)) = tokens::parse_refresh(token) {
            let Some(g) = self.store.get::<Grant>(Table::Grants, grant_id, now) else {
                return ok();
            };
            let h = hash(secret);
            let known = g.current.as_deref().is_some_and(|c| ct_eq(c, &h))
                || g.previous.as_deref().is_some_and(|p| ct_eq(p, &h));
            if !known {
                return ok();
            }
            if client_id.is_some_and(|c| c != g.client_id) {
                return http::oauth_error(
                    400,
                    "unauthorized_client",
                    "the token was issued to another client",
                );
            }
            self.end_grant(grant_id, now);
            self.audit_principal(
                call,
                "oauth/revoke",
                &g.principal,
                "refresh_token",
                &g.client_id,
            );
            return ok();
        }
        let claims = tokens::verify_access(
            &self.keys.read(),
            &self.settings.issuer,
            &self.settings.resource,
            token,
            now,
        );
        if let Ok(c) = claims {
            if client_id.is_some_and(|id| id != c.client_id) {
                return http::oauth_error(
                    400,
                    "unauthorized_client",
                    "the token was issued to another client",
                );
            }
            self.store.revoke('j', &c.jti, c.exp + 60);
            let who = StoredPrincipal::from(&c.principal);
            self.audit_principal(call, "oauth/revoke", &who, "access_token", &c.client_id);
        }
        ok()
    }
}
