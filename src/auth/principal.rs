//! The verified caller of a request: tenant, user, roles and scopes. Decisions use
//! `tenant` + `user` and `roles` only; `display_name` is for people to read.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Configured for stdio (`MREG_LOCAL_*`), or the least-privilege default.
    Local,
    /// A verified bearer token.
    Token,
    /// No credentials: only public tools are reachable.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
    pub scopes: Vec<String>,
    pub source: Source,
}

impl Principal {
    pub fn local(tenant: &str, user: &str, roles: &[Role]) -> Self {
        Principal {
            tenant: tenant.to_string(),
            user: user.to_string(),
            display_name: None,
            roles: roles.to_vec(),
            scopes: Vec::new(),
            source: Source::Local,
        }
    }

    pub fn anonymous() -> Self {
        Principal {
            tenant: String::new(),
            user: String::new(),
            display_name: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            source: Source::Anonymous,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The stable key of this caller: tenant and user together.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.user)
    }

    /// Whether `other` is the same caller (tenant and user), without building keys.
    pub fn same_caller(&self, other: &Principal) -> bool {
        self.tenant == other.tenant && self.user == other.user
    }

    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
