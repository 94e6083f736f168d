//! Transports: they frame bytes and carry identity; the MCP engine does the rest.

// pub mod http; (enabled once the HTTP layer lands)
pub mod stdio;
