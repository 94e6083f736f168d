//! The MCP engine: lifecycle, dispatch, registries and argument validation. Transport
//! independent: stdio and HTTP hand it decoded messages and a way back to the client.

pub mod context;
pub mod methods;
pub mod modern;
pub mod protocol;
pub mod registry;
pub mod schema;
pub mod server;
pub mod session;
