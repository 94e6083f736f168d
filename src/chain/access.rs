//! Access control: which roles may call which tool (`MREG_TOOL_POLICY`), and the link
//! that enforces it. A refused tool is answered exactly like an unknown one, so its
//! existence is not revealed; the audit record says what really happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use mreg_wire::jsonrpc::ErrorObject;

use crate::auth::principal::{Principal, Role};
use crate::chain::{Call, Decision, Middleware, Next, Outcome};

/// Who may call a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any caller, with or without a role.
    Public,
    /// Callers holding one of these roles.
    Roles(Vec<Role>),
}

impl Access {
    pub fn allows(&self, p: &Principal) -> bool {
        match self {
            Access::Public => true,
            Access::Roles(roles) => roles.iter().any(|r| p.has_role(*r)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Access::Public => "public".into(),
            Access::Roles(r) => r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
        }
    }
}

/// Tool → access, with a default for tools not named (roles user and admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPolicy {
    pub rules: BTreeMap<String, Access>,
}

impl ToolPolicy {
    pub fn access(&self, tool: &str) -> Access {
        self.rules
            .get(tool)
            .cloned()
            .unwrap_or(Access::Roles(vec![Role::User, Role::Admin]))
    }

    pub fn allows(&self, p: &Principal, tool: &str) -> bool {
        self.access(tool).allows(p)
    }

    /// Parses `tool=role,role;tool=public` over `base`; the error names the bad part.
    pub fn parse(text: &str, mut base: ToolPolicy) -> Result<ToolPolicy, String> {
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (tool, who) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected tool=roles"))?;
            let tool = tool.trim();
            if tool.is_empty() || tool.len() > 128 {
                return Err(format!("{part:?}: a tool name is required"));
            }
            let access = if who.trim().eq_ignore_ascii_case("public") {
                Access::Public
            } else {
                let roles = who
                    .split(',')
                    .map(|r| {
                        Role::parse(r).ok_or_else(|| {
                            format!(
                                "{part:?}: unknown role {:?} (admin, user or public)",
                                r.trim()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Access::Roles(roles)
            };
            base.rules.insert(tool.to_string(), access);
        }
        Ok(base)
    }

    pub fn describe(&self) -> String {
        self.rules
            .iter()
            .map(|(t, a)| format!("{t}={}", a.describe()))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The link: `tools/call` of a tool the caller may not call is refused as unknown.
pub struct AccessControl {
    pub policy: SharedPolicy,
}

/// The policy in force, replaced as a whole on reload.
pub type SharedPolicy = Arc<parking_lot::RwLock<Arc<ToolPolicy>>>;

impl Middleware for AccessControl {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        let policy = self.policy.read().clone();
        if call.method == "tools/call"
            && let (Some(tool), Some(p)) = (call.target, call.principal())
            && !policy.allows(p, tool)
        {
            call.decide(
                Decision::Denied,
                format!(
                    "tool_not_permitted: {tool} needs {}",
                    policy.access(tool).describe()
                ),
            );
            return Err(ErrorObject::invalid_params(format!(
                "unknown tool: {}",
                tool.chars().take(64).collect::<String>()
            )));
        }
        next.run(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_overrides() {
        let base = ToolPolicy {
            rules: BTreeMap::from([("a".to_string(), Access::Public)]),
        };
        let p = ToolPolicy::parse("a=admin; b=user,admin ;c=public", base).unwrap();
        assert_eq!(p.access("a"), Access::Roles(vec![Role::Admin]));
        assert_eq!(p.access("c"), Access::Public);
        assert_eq!(
            p.access("zzz"),
            Access::Roles(vec![Role::User, Role::Admin])
        );
        assert!(
            ToolPolicy::parse("a=root", p.clone())
                .unwrap_err()
                .contains("root")
        );
        assert!(ToolPolicy::parse("nonsense", p).is_err());
    }
}
