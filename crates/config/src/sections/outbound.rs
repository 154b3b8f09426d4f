//! Outbound requests to addresses users choose (push gateways): `ip_range_blacklist`,
//! `ip_range_whitelist`.
//!
//! As in Synapse, the blacklist defaults to the private, loopback, link-local, multicast and
//! test ranges, and `0.0.0.0` and `::` are always blocked. An address is refused when it is in
//! the blacklist and not in the whitelist. An IPv4 range also covers the IPv6 forms of its
//! addresses (IPv4-mapped, IPv4-compatible and 6to4).
//!
//! `myelin_dns_overrides` (Myelin's own key) maps host names to fixed addresses that every
//! outbound request (push gateways, URL previews, federation) uses instead of asking DNS, like
//! a hosts file scoped to the homeserver: tests and private federations name loopback servers
//! with it. The blocked ranges still apply to the addresses it gives.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::invalid;
use crate::load::{ConfigError, Origins};

/// Synapse's `DEFAULT_IP_RANGE_BLOCKLIST`.
const DEFAULT_BLACKLIST: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

/// Blocked whatever the configuration says.
const ALWAYS_BLOCKED: &[&str] = &["0.0.0.0", "::"];

/// An IP network: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("invalid IP range {text:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length in IP range {text:?}"))?,
            None => max,
        };
        Ok(IpRange { addr, prefix })
    }

    fn contains_exactly(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether `ip` is in this range; an IPv4 range also matches the IPv6 forms of its
    /// addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.contains_exactly(ip) {
            return true;
        }
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => {
                embedded_ipv4(v6).is_some_and(|v4| self.contains_exactly(v4.into()))
            }
            _ => false,
        }
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or 6to4 (`2002:aabb:ccdd::/48`) IPv6 address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let bits = u128::from(ip);
    if segments[..5].iter().all(|s| *s == 0) && (segments[5] == 0xffff || segments[5] == 0) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

#[derive(Deserialize)]
pub(crate) struct RawOutbound {
    ip_range_blacklist: Option<Vec<String>>,
    ip_range_whitelist: Option<Vec<String>>,
    myelin_dns_overrides: Option<BTreeMap<String, Vec<String>>>,
}

/// Which addresses outbound requests to user-chosen URLs may reach.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    pub ip_range_blacklist: Vec<IpRange>,
    pub ip_range_whitelist: Vec<IpRange>,
    /// Host name (lowercase, without port) -> the addresses to use instead of DNS.
    pub dns_overrides: BTreeMap<String, Vec<IpAddr>>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        let parse = |list: &[&str]| list.iter().filter_map(|r| IpRange::parse(r).ok()).collect::<Vec<_>>();
        let mut ip_range_blacklist = parse(DEFAULT_BLACKLIST);
        ip_range_blacklist.extend(parse(ALWAYS_BLOCKED));
        OutboundConfig { ip_range_blacklist, ip_range_whitelist: Vec::new(), dns_overrides: BTreeMap::new() }
    }
}

/// A list of IP ranges under `key`; a blacklist (`blacklist`) also gets the always-blocked
/// addresses.
pub(crate) fn parse_ip_ranges(
    origins: &Origins,
    key: &str,
    list: &[String],
    blacklist: bool,
) -> Result<Vec<IpRange>, ConfigError> {
    let mut ranges = parse_list(origins, key, list)?;
    if blacklist {
        ranges.extend(ALWAYS_BLOCKED.iter().filter_map(|r| IpRange::parse(r).ok()));
    }
    Ok(ranges)
}

fn parse_list(origins: &Origins, key: &str, list: &[String]) -> Result<Vec<IpRange>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(index, text)| {
            IpRange::parse(text).map_err(|e| invalid(origins, &format!("{key}[{index}]"), e))
        })
        .collect()
}

impl RawOutbound {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<OutboundConfig, ConfigError> {
        let mut config = OutboundConfig::default();
        if let Some(list) = &self.ip_range_blacklist {
            config.ip_range_blacklist = parse_list(origins, "ip_range_blacklist", list)?;
            config.ip_range_blacklist.extend(ALWAYS_BLOCKED.iter().filter_map(|r| IpRange::parse(r).ok()));
        }
        if let Some(list) = &self.ip_range_whitelist {
            config.ip_range_whitelist = parse_list(origins, "ip_range_whitelist", list)?;
        }
        for (host, addresses) in self.myelin_dns_overrides.unwrap_or_default() {
            let key = format!("myelin_dns_overrides.{host}");
            if addresses.is_empty() {
                return Err(invalid(origins, &key, "expected at least one IP address".to_owned()));
            }
            let parsed = addresses
                .iter()
                .map(|text| {
                    text.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| invalid(origins, &key, format!("invalid IP address {text:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            config.dns_overrides.insert(host.to_ascii_lowercase(), parsed);
        }
        Ok(config)
    }
}

impl OutboundConfig {
    /// The fixed addresses `myelin_dns_overrides` gives `host`, if any.
    pub fn dns_override(&self, host: &str) -> Option<&[IpAddr]> {
        self.dns_overrides.get(&host.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// Whether an outbound request may not connect to `ip`.
    pub fn is_ip_blocked(&self, ip: IpAddr) -> bool {
        self.ip_range_blacklist.iter().any(|r| r.contains(ip))
            && !self.ip_range_whitelist.iter().any(|r| r.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_blacklist_blocks_private_ranges_in_every_form() {
        let config = OutboundConfig::default();
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
        ] {
            assert!(config.is_ip_blocked(ip(blocked)), "{blocked}");
        }
        for allowed in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!config.is_ip_blocked(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn the_whitelist_wins_over_the_blacklist() {
        let config = OutboundConfig {
            ip_range_whitelist: vec![IpRange::parse("127.0.0.1").unwrap()],
            ..OutboundConfig::default()
        };
        assert!(!config.is_ip_blocked(ip("127.0.0.1")));
        assert!(!config.is_ip_blocked(ip("::ffff:127.0.0.1")));
        assert!(config.is_ip_blocked(ip("127.0.0.2")));
    }

    #[test]
    fn ranges_parse_or_fail() {
        assert_eq!(IpRange::parse("10.0.0.0/8").unwrap().prefix, 8);
        assert_eq!(IpRange::parse("::1").unwrap().prefix, 128);
        for bad in ["", "10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x"] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }
}
