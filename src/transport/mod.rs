//! Transports: they frame bytes and carry identity; the MCP engine does the rest.

pub mod http;
pub mod stdio;
