//! `_get_authentication_info` (public): how to sign in, and who the caller is. Each call
//! generates a fresh random `state` and a PKCE S256 pair; the verifier is returned to the
//! caller, whose secret it is, and kept nowhere by the server.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::mcp::methods::object;
use crate::mcp::registry::{Tool, ToolOutput};
use crate::tools::{Env, identity, no_arguments};

pub const NAME: &str = "_get_authentication_info";

/// Random bytes from the OS, base64url encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    crate::crypto::fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce_pair() -> (String, String) {
    let verifier = random_token(32);
    let challenge = crate::oauth::tokens::s256(&verifier);
    (verifier, challenge)
}

/// Percent-encodes a query component (RFC 3986 unreserved characters pass through).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "identity": { "type": "object" },
            "resource": { "type": "string" },
            "protected_resource_metadata": { "type": "string" },
            "identity_provider": { "type": ["object", "null"] },
            "login": { "type": ["object", "null"] },
        },
        "required": ["identity", "resource", "protected_resource_metadata", "identity_provider", "login"],
    })
}

pub fn tool(env: Arc<Env>) -> Tool {
    Tool::new(NAME, "How to authenticate to this server (login URL with PKCE, OAuth metadata) and who you are.", no_arguments(), move |ctx, _args| {
        let az = &env.config.azure;
        let public = env
            .config
            .azure
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", env.config.http.addr));
        let (provider, login) = match (&az.tenant_id, &az.client_id) {
            // The OAuth proxy is the authorization server the metadata names.
            (Some(_), Some(client)) if env.config.oauth.enabled => {
                let state = random_token(24);
                let (verifier, challenge) = pkce_pair();
                let scopes = format!("api://{client}/.default");
                (
                    json!({
                        "issuer": public,
                        "authorization_server_metadata": format!("{public}/.well-known/oauth-authorization-server"),
                        "registration_endpoint": format!("{public}/register"),
                        "scopes": [scopes],
                    }),
                    json!({
                        "authorize_url": format!(
                            "{public}/authorize?response_type=code&client_id=<registered client id>&redirect_uri=<your redirect URI>&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256&resource={}",
                            encode_component(&scopes),
                            encode_component(&format!("{public}/mcp"))
                        ),
                        "state": state,
                        "code_verifier": verifier,
                        "code_challenge": challenge,
                        "code_challenge_method": "S256",
                        "note": "register a client at registration_endpoint first (or use a client ID metadata document URL as client_id)",
                    }),
                )
            }
            (Some(tenant), Some(client)) => {
                let base = format!("{}/{}", az.authority.trim_end_matches('/'), tenant);
                let scopes = format!("api://{client}/.default openid profile offline_access");
                let state = random_token(24);
                let (verifier, challenge) = pkce_pair();
                let url = format!(
                    "{base}/oauth2/v2.0/authorize?client_id={}&response_type=code&redirect_uri={}&scope={}&state={}&code_challenge={}&code_challenge_method=S256",
                    encode_component(client),
                    encode_component(&az.oauth_callback_url),
                    encode_component(&scopes),
                    state,
                    challenge
                );
                (
                    json!({
                        "issuer": format!("{base}/v2.0"),
                        "openid_configuration": format!("{base}/v2.0/.well-known/openid-configuration"),
                        "scopes": scopes.split(' ').collect::<Vec<_>>(),
                    }),
                    json!({
                        "authorize_url": url,
                        "state": state,
                        "code_verifier": verifier,
                        "code_challenge": challenge,
                        "code_challenge_method": "S256",
                        "redirect_uri": az.oauth_callback_url,
                    }),
                )
            }
            _ => (Value::Null, Value::Null),
        };
        Ok(ToolOutput::structured(object([
            ("identity", identity(ctx.principal)),
            ("resource", Value::from(format!("{public}/mcp"))),
            (
                "protected_resource_metadata",
                Value::from(format!("{public}/.well-known/oauth-protected-resource/mcp")),
            ),
            ("identity_provider", provider),
            ("login", login),
        ])))
    })
    .title("Authentication info")
    .output_schema(output_schema())
    .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_s256_of_the_verifier() {
        let (v, c) = pkce_pair();
        assert_eq!(v.len(), 43);
        // An independent SHA-256 (the dev-dependency), not the one under test.
        use sha2::Digest;
        assert_eq!(
            c,
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(v.as_bytes()))
        );
        assert_ne!(pkce_pair().0, v);
        assert_eq!(encode_component("a b/c"), "a%20b%2Fc");
    }
}
