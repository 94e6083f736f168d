//! MCP protocol revisions this server speaks and how a requested one is negotiated.

/// The newest session-based revision; the answer to any revision we do not know.
pub const LATEST: &str = "2025-11-25";

/// Revisions served as asked. 2025-03-26 is echoed but served with 2025-11-25 behaviour
/// (JSON-RPC batching, which it allowed, is refused like in later revisions).
pub const SUPPORTED: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// The revision to answer an `initialize` that asked for `requested`.
pub fn negotiate(requested: &str) -> &'static str {
    SUPPORTED
        .iter()
        .copied()
        .find(|v| *v == requested)
        .unwrap_or(LATEST)
}

pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// Log levels of `logging/setLevel`, in increasing severity (RFC 5424 names).
pub const LOG_LEVELS: &[&str] = &[
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub fn log_level_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2025-03-26"), "2025-03-26");
        assert_eq!(negotiate("2024-11-05"), LATEST);
        assert_eq!(negotiate("garbage"), LATEST);
    }
}
