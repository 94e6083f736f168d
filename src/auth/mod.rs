//! Who is calling: the principal type and (later) token validation. Owns identity, not
//! authorization decisions, which the chain makes.

pub mod principal;
