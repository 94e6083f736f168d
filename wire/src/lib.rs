//! Sans-IO wire formats of mreg: the JSON-RPC 2.0 codec and stdio line framing (and the
//! HTTP/1.1 request parser, and the taking apart of a bearer token). Nothing here reads a
//! socket, a clock or the environment, so every parser can be unit-tested and fuzzed on
//! bytes alone. Out of scope: MCP methods, sessions and authentication decisions
//! (signatures, claims), which live in the server crate.

pub mod framing;
pub mod fuzzing;
pub mod http;
pub mod jsonrpc;
pub mod jwt;
pub mod query;
