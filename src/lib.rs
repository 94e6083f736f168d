//! mreg: an MCP server for the edge. A request flows transport → JSON-RPC codec
//! (`mreg_wire`) → middleware chain (`chain`) → dispatcher (`mcp`) → tools (`tools`) →
//! store (`store`). Only the transports, the identity provider client and the store do
//! I/O.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod blocking;
pub mod chain;
pub mod config;
pub mod crypto;
pub mod data;
pub mod histogram;
pub mod mcp;
pub mod memory;
pub mod oauth;
pub mod ship;
pub mod store;
pub mod tls;
pub mod tools;
pub mod transport;
