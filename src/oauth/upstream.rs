//! The proxy's client of Entra ID: the authorize URL it sends browsers to, and the
//! token endpoint (code redemption, refresh) over ureq with every timeout set and a
//! body bound. It authenticates with the client secret or with a certificate (a signed
//! client assertion, `private_key_jwt`, RS256 with the certificate's `x5t`). Entra's
//! error bodies become clear log messages (AADSTS code, first line, a hint); no
//! secret, code or token ever appears in them.

use std::time::Duration;

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use aws_lc_rs::rsa::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::url::with_query;
use crate::config::Secret;

/// What Entra ID answered a token request with.
pub struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamTokens(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Entra ID refused: its OAuth `error`, AADSTS codes and the first line of its
    /// description.
    Refused {
        error: String,
        codes: Vec<u64>,
        description: String,
    },
    /// Unreachable, timed out, overloaded (5xx, 429) or an unreadable answer.
    Unavailable(String),
}

impl UpstreamError {
    /// The refresh token (or code) is no good any more: the grant must end.
    pub fn ends_grant(&self) -> bool {
        matches!(self, UpstreamError::Refused { error, .. } if error == "invalid_grant" || error == "interaction_required" || error == "unauthorized_client")
    }

    /// The OAuth error and description an MCP client may see.
    pub fn for_client(&self) -> (&'static str, &'static str) {
        match self {
            UpstreamError::Unavailable(_) => (
                "temporarily_unavailable",
                "the identity provider cannot be reached; try again",
            ),
            UpstreamError::Refused { codes, .. }
                if codes
                    .iter()
                    .any(|c| [50057, 50053, 50105, 50034, 53003].contains(c)) =>
            {
                (
                    "access_denied",
                    "the identity provider refused this account (disabled, locked or not assigned)",
                )
            }
            UpstreamError::Refused { .. } if self.ends_grant() => (
                "invalid_grant",
                "the sign-in is no longer valid; sign in again",
            ),
            UpstreamError::Refused { .. } => (
                "server_error",
                "the identity provider refused the request; the server log has details",
            ),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Unavailable(why) => write!(f, "entra id unavailable: {why}"),
            UpstreamError::Refused {
                error,
                codes,
                description,
            } => {
                write!(f, "entra id refused the request: {error}")?;
                if !description.is_empty() {
                    write!(f, " ({description})")?;
                }
                if let Some(hint) = codes.iter().find_map(|c| hint(*c)) {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
        }
    }
}

/// What an operator should check for a known AADSTS code.
fn hint(code: u64) -> Option<&'static str> {
    Some(match code {
        7000215 | 7000222 => {
            "the client secret is wrong or expired: check MREG_AZURE_CLIENT_SECRET (the secret's value, not its id)"
        }
        700027 | 700024 | 7000274 | 7000277 => {
            "the client assertion was refused: is the certificate uploaded to the app registration, does the key match it, is the clock right?"
        }
        50011 | 500113 => {
            "the redirect URI is not registered: add MREG_FASTMCP_OAUTH_CALLBACK_URL to the app registration's Web redirect URIs"
        }
        65001 => "consent is missing for the requested scopes: grant admin consent to the app",
        700016 | 90002 => {
            "the application or tenant was not found: check MREG_AZURE_CLIENT_ID and MREG_AZURE_TENANT_ID"
        }
        70008 | 54005 => "the authorization code expired or was already redeemed",
        50057 => "the user account is disabled",
        50053 => "the user account is locked",
        50105 => "the user is not assigned to the application",
        50173 | 700082 | 70043 | 50133 | 700084 => {
            "the refresh token expired or was revoked (password change, revoked sessions)"
        }
        9010010 => "a resource parameter reached Entra ID; it must not be sent with v2 scopes",
        _ => return None,
    })
}

/// Entra ID's token endpoint and authorize URL, as the proxy uses them.
pub trait Upstream: Send + Sync {
    fn authorize_url(&self, state: &str, challenge: &str) -> String;
    fn redeem(&self, code: &str, verifier: &str) -> Result<UpstreamTokens, UpstreamError>;
    fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError>;
}

/// How the proxy proves it is the app registration.
pub enum Credential {
    Secret(Secret),
    Certificate(CertCredential),
}

/// A certificate's private key and thumbprints, for signed client assertions.
pub struct CertCredential {
    key: KeyPair,
    x5t: String,
    x5t_s256: String,
}

impl CertCredential {
    /// Reads a PEM certificate and a PEM private key (PKCS#8 or PKCS#1 RSA).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertCredential, String> {
        use ureq::tls::{PemItem, parse_pem};
        let cert = parse_pem(cert_pem)
            .filter_map(Result::ok)
            .find_map(|i| match i {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .ok_or("no PEM certificate found")?;
        let key = parse_pem(key_pem)
            .filter_map(Result::ok)
            .find_map(|i| match i {
                PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .ok_or("no PEM private key found")?;
        // PKCS#8 ("PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
        let key = KeyPair::from_pkcs8(key.der())
            .or_else(|_| KeyPair::from_der(key.der()))
            .map_err(|_| "the private key is not a usable RSA key")?;
        let der = cert.der();
        Ok(CertCredential {
            key,
            x5t: URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest(&SHA256, der)),
        })
    }

    /// A client assertion (RFC 7523) for `client_id` towards `audience`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: u64) -> String {
        let header =
            json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t, "x5t#S256": self.x5t_s256});
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": super::tokens::random_token(16),
            "nbf": now.saturating_sub(5),
            "iat": now,
            "exp": now + 300,
        });
        crate::crypto::sign_rs256(&self.key, &header, &claims)
    }
}

/// Entra ID over HTTP.
pub struct Entra {
    agent: ureq::Agent,
    authorize_endpoint: String,
    token_endpoint: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    credential: Credential,
}

/// Entra's answers are small; anything bigger is refused.
const MAX_TOKEN_RESPONSE: u64 = 256 * 1024;

impl Entra {
    /// `authority` without trailing slash; `tenant` a GUID or `organizations`.
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        credential: Credential,
        timeout: Duration,
    ) -> Entra {
        let base = format!("{}/{tenant}/oauth2/v2.0", authority.trim_end_matches('/'));
        Entra {
            agent: agent(timeout),
            authorize_endpoint: format!("{base}/authorize"),
            token_endpoint: format!("{base}/token"),
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scope: scope.to_string(),
            credential,
        }
    }

    pub fn authorize_endpoint(&self) -> &str {
        &self.authorize_endpoint
    }

    fn token_request(&self, grant: &[(&str, &str)]) -> Result<UpstreamTokens, UpstreamError> {
        let now = crate::auth::setup::now_secs();
        let assertion;
        let mut form: Vec<(&str, &str)> =
            vec![("client_id", &self.client_id), ("scope", &self.scope)];
        form.extend_from_slice(grant);
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose())),
            Credential::Certificate(c) => {
                assertion = c.assertion(&self.client_id, &self.token_endpoint, now);
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", &assertion));
            }
        }
        let resp = self
            .agent
            .post(&self.token_endpoint)
            .header("Accept", "application/json")
            .send_form(form)
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(MAX_TOKEN_RESPONSE)
            .read_to_vec()
            .map_err(|e| UpstreamError::Unavailable(format!("reading the answer: {e}")))?;
        let secret = match &self.credential {
            Credential::Secret(s) => Some(s.expose()),
            Credential::Certificate(_) => None,
        };
        parse_token_response(status, &body, secret)
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(crate::tls::client_config(None))
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .max_redirects(0)
        .http_status_as_error(false)
        .max_response_header_size(16 * 1024)
        .user_agent(concat!("mreg/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Turns a token endpoint answer into tokens or a described error. `secret`, when
/// given, is scrubbed from any text kept.
pub fn parse_token_response(
    status: u16,
    body: &[u8],
    secret: Option<&str>,
) -> Result<UpstreamTokens, UpstreamError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status == 200 {
        let access = json
            .as_ref()
            .and_then(|j| j["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Unavailable("answer without an access token".into()))?;
        return Ok(UpstreamTokens {
            access_token: access.to_string(),
            refresh_token: json
                .as_ref()
                .and_then(|j| j["refresh_token"].as_str())
                .map(str::to_string),
        });
    }
    match json.as_ref().and_then(|j| j["error"].as_str()) {
        Some(error) if status < 500 && status != 429 => {
            let j = json.as_ref().expect("parsed above");
            let mut description: String = j["error_description"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            if let Some(s) = secret.filter(|s| !s.is_empty()) {
                description = description.replace(s, "<redacted>");
            }
            let codes = j["error_codes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).take(8).collect())
                .unwrap_or_default();
            Err(UpstreamError::Refused {
                error: error.chars().take(64).collect(),
                codes,
                description,
            })
        }
        _ => Err(UpstreamError::Unavailable(format!("HTTP {status}"))),
    }
}

impl Upstream for Entra {
    fn authorize_url(&self, state: &str, challenge: &str) -> String {
        with_query(
            &self.authorize_endpoint,
            &[
                ("client_id", &self.client_id),
                ("response_type", "code"),
                ("redirect_uri", &self.redirect_uri),
                ("response_mode", "query"),
                ("scope", &self.scope),
                ("state", state),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ],
        )
    }

    fn redeem(&self, code: &str, verifier: &str) -> Result<UpstreamTokens, UpstreamError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
    }

    fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_errors_become_clear_messages_without_secrets() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided: s3cr3t.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[7000215]}"#;
        let e = parse_token_response(401, body, Some("s3cr3t"))
            .err()
            .unwrap();
        let text = e.to_string();
        assert!(text.contains("invalid_client"), "{text}");
        assert!(text.contains("AADSTS7000215"), "{text}");
        assert!(text.contains("MREG_AZURE_CLIENT_SECRET"), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("Trace ID"),
            "{text}"
        );
        assert_eq!(e.for_client().0, "server_error");
        assert!(!e.ends_grant());

        let disabled = br#"{"error":"invalid_grant","error_description":"AADSTS50057: User account is disabled.","error_codes":[50057]}"#;
        let e = parse_token_response(400, disabled, None).err().unwrap();
        assert!(e.ends_grant());
        assert_eq!(e.for_client().0, "access_denied");
        assert!(
            e.to_string().contains("the user account is disabled"),
            "{e}"
        );

        let down = parse_token_response(503, b"<html>", None).err().unwrap();
        assert_eq!(down, UpstreamError::Unavailable("HTTP 503".into()));
        assert_eq!(down.for_client().0, "temporarily_unavailable");

        let ok = parse_token_response(200, br#"{"access_token":"a","refresh_token":"r"}"#, None)
            .unwrap();
        assert_eq!(ok.refresh_token.as_deref(), Some("r"));
        assert_eq!(format!("{ok:?}"), "UpstreamTokens(<redacted>)");
    }
}
