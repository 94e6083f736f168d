//! Reverse proxies: when the peer is a trusted proxy (`MREG_TRUSTED_PROXIES`), the
//! client address is taken from `X-Forwarded-For` (the rightmost address that is not
//! itself a trusted proxy), so the audit log, rate limits and failure throttling see the
//! real client. Forwarded headers from any other peer are ignored. Pure.

use std::net::{IpAddr, SocketAddr};

/// An address range: an IP and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1`, `127.0.0.1` (a single address when the prefix is absent).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The client address of a request that `peer` delivered with `forwarded_for` (all
/// `X-Forwarded-For` values, in order).
pub fn client_addr(peer: SocketAddr, forwarded_for: &[&str], trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev().take(32) {
        let Ok(ip) = hop.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() else {
            // An unparsable hop ends the trusted chain: keep the proxy's own address.
            return peer;
        };
        if !is_trusted(ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn forwarded_only_from_trusted_peers() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_addr(sa("203.0.113.5:4000"), &["1.2.3.4"], &trusted),
            sa("203.0.113.5:4000")
        );
        // The rightmost untrusted hop is the client; spoofed hops to its left are ignored.
        assert_eq!(
            client_addr(
                sa("127.0.0.1:4000"),
                &["6.6.6.6, 198.51.100.7, 10.0.0.3"],
                &trusted
            )
            .ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Several headers count as one list.
        assert_eq!(
            client_addr(
                sa("127.0.0.1:4000"),
                &["198.51.100.7", "10.1.1.1"],
                &trusted
            )
            .ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Garbage keeps the proxy address.
        assert_eq!(
            client_addr(sa("127.0.0.1:4000"), &["not-an-ip"], &trusted),
            sa("127.0.0.1:4000")
        );
        assert_eq!(
            client_addr(sa("127.0.0.1:4000"), &[], &trusted),
            sa("127.0.0.1:4000")
        );
    }
}
