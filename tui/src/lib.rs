//! mreg-dashboard: the operator's terminal view of an mreg server. `app` holds the
//! state and its pure update, `ui` renders it, `source` feeds it from a running server's
//! admin socket or a stopped server's database; `main.rs` owns the terminal.

pub mod app;
pub mod filter;
pub mod model;
pub mod source;
pub mod ui;
