//! Outbound HTTP to addresses that users or remote parties choose (push gateways, URL previews,
//! federation): name resolution through `myelin_dns_overrides` then DNS, with every blocked
//! address (`ip_range_blacklist` unless `ip_range_whitelist`) left out, so a request can only
//! connect to an allowed address whatever name, redirect or DNS answer led to it.

use std::net::{IpAddr, SocketAddr};

use myelin_config::OutboundConfig;

/// The addresses `host` resolves to: the configured override, an IP literal, or DNS. Blocked
/// addresses are included; see [`allowed_addresses`].
pub async fn resolve(outbound: &OutboundConfig, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Some(addresses) = outbound.dns_override(bare) {
        return Ok(addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((bare, port)).await?.collect())
}

/// The allowed addresses of `host`; an error when it resolves to none.
pub async fn allowed_addresses(
    outbound: &OutboundConfig,
    host: &str,
    port: u16,
) -> std::io::Result<Vec<SocketAddr>> {
    let allowed: Vec<SocketAddr> = resolve(outbound, host, port)
        .await?
        .into_iter()
        .filter(|a| !outbound.is_ip_blocked(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{host} resolves only to blocked addresses"),
        ));
    }
    Ok(allowed)
}

/// A reqwest DNS resolver that gives only allowed addresses (and fails when none is left).
/// reqwest connects to IP-literal URLs without asking a resolver: callers check literals with
/// [`OutboundConfig::is_ip_blocked`] themselves.
pub struct GuardedResolver {
    pub outbound: OutboundConfig,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let outbound = self.outbound.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = allowed_addresses(&outbound, &host, 0).await?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound_with_override(host: &str, ip: &str) -> OutboundConfig {
        let mut outbound = OutboundConfig::default();
        outbound.dns_overrides.insert(host.to_owned(), vec![ip.parse().unwrap()]);
        outbound
    }

    #[tokio::test]
    async fn overrides_answer_before_dns_and_are_still_guarded() {
        let outbound = outbound_with_override("preview.test", "127.0.0.1");
        let resolved = resolve(&outbound, "PREVIEW.test", 8080).await.unwrap();
        assert_eq!(resolved, vec!["127.0.0.1:8080".parse().unwrap()]);
        let refused = allowed_addresses(&outbound, "preview.test", 80).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);

        let mut allowed = outbound.clone();
        allowed.ip_range_whitelist = vec![myelin_config::IpRange::parse("127.0.0.1").unwrap()];
        assert_eq!(allowed_addresses(&allowed, "preview.test", 80).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn ip_literals_including_bracketed_ipv6_are_checked() {
        let outbound = OutboundConfig::default();
        assert!(allowed_addresses(&outbound, "[::1]", 80).await.is_err());
        assert!(allowed_addresses(&outbound, "::ffff:127.0.0.1", 80).await.is_err());
        assert_eq!(resolve(&outbound, "[::1]", 80).await.unwrap(), vec!["[::1]:80".parse().unwrap()]);
    }
}
