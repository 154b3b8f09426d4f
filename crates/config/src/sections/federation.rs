//! Federation transport: `federation_verify_certificates`,
//! `federation_certificate_verification_whitelist`, `federation_custom_ca_list` and
//! `federation_ip_range_blacklist`; the outbound queue's `federation_domain_whitelist`,
//! `federation_sender_instances` / `send_federation`, the instance name (`worker_name`, else
//! `master` as in Synapse) and `myelin_federation_retry` (Myelin's own key: the destination
//! backoff's bounds in ms, shortened by tests).
//!
//! As in Synapse: certificates are verified unless `federation_verify_certificates: false`;
//! a server name matching a glob of the whitelist is not verified; a custom CA list *replaces*
//! the platform's trusted roots (its files are read here, so a missing one fails at start). The
//! deprecated `federation_ip_range_blacklist`, when given, is the federation's blocklist and
//! `ip_range_whitelist` does not apply to it; otherwise federation uses `ip_range_blacklist` and
//! `ip_range_whitelist` like every other outbound request.

use std::path::PathBuf;

use serde::Deserialize;

use super::{IpRange, OutboundConfig, absolute, invalid};
use crate::load::{ConfigError, Origins};

#[derive(Deserialize)]
pub(crate) struct RawFederation {
    federation_verify_certificates: Option<bool>,
    federation_certificate_verification_whitelist: Option<Vec<String>>,
    federation_custom_ca_list: Option<Vec<PathBuf>>,
    federation_ip_range_blacklist: Option<Vec<String>>,
    federation_domain_whitelist: Option<Vec<String>>,
    federation_sender_instances: Option<Vec<String>>,
    send_federation: Option<bool>,
    worker_name: Option<String>,
    myelin_federation_retry: Option<RawRetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    min_interval_ms: Option<u64>,
    max_interval_ms: Option<u64>,
}

/// Synapse's destination backoff (`synapse.util.retryutils`, `federation.destination_*`
/// defaults): the first retry after 10 minutes, each next interval twice the last (with
/// jitter), at most a week.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    pub min_interval_ms: u64,
    pub max_interval_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { min_interval_ms: 10 * 60 * 1000, max_interval_ms: 7 * 24 * 3600 * 1000 }
    }
}

/// One certificate authority file of `federation_custom_ca_list`.
#[derive(Clone, Debug)]
pub struct CustomCa {
    pub path: PathBuf,
    /// The file's contents (PEM).
    pub pem: Vec<u8>,
}

/// How this server connects to other homeservers.
#[derive(Clone, Debug)]
pub struct FederationConfig {
    pub verify_certificates: bool,
    /// Globs of server names whose certificates are not verified.
    pub certificate_verification_whitelist: Vec<String>,
    /// When set, the only trusted roots for federation.
    pub custom_ca_list: Option<Vec<CustomCa>>,
    /// `federation_ip_range_blacklist`, when given (always including `0.0.0.0` and `::`).
    pub ip_range_blacklist: Option<Vec<IpRange>>,
    /// `federation_domain_whitelist`: when set, the only servers federated with.
    pub domain_whitelist: Option<Vec<String>>,
    /// The instances that send federation traffic (`federation_sender_instances`; without it
    /// the main process, `master`, unless `send_federation: false`).
    pub sender_instances: Vec<String>,
    /// This process's instance name (`worker_name`, else `master`).
    pub instance_name: String,
    /// The destination backoff.
    pub retry: RetryConfig,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            verify_certificates: true,
            certificate_verification_whitelist: Vec::new(),
            custom_ca_list: None,
            ip_range_blacklist: None,
            domain_whitelist: None,
            sender_instances: vec![MAIN_INSTANCE.to_owned()],
            instance_name: MAIN_INSTANCE.to_owned(),
            retry: RetryConfig::default(),
        }
    }
}

/// Synapse's name for the main process.
pub const MAIN_INSTANCE: &str = "master";

impl RawFederation {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<FederationConfig, ConfigError> {
        let custom_ca_list = match self.federation_custom_ca_list {
            None => None,
            Some(paths) if paths.is_empty() => {
                return Err(invalid(
                    origins,
                    "federation_custom_ca_list",
                    "federation_custom_ca_list is given without any certificate file",
                ));
            }
            Some(paths) => Some(
                paths
                    .iter()
                    .enumerate()
                    .map(|(index, path)| {
                        let path = absolute(path);
                        std::fs::read(&path).map(|pem| CustomCa { path: path.clone(), pem }).map_err(|e| {
                            invalid(
                                origins,
                                &format!("federation_custom_ca_list[{index}]"),
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let ip_range_blacklist = match self.federation_ip_range_blacklist {
            None => None,
            Some(list) => {
                let mut ranges = list
                    .iter()
                    .enumerate()
                    .map(|(index, text)| {
                        IpRange::parse(text).map_err(|e| {
                            invalid(origins, &format!("federation_ip_range_blacklist[{index}]"), e)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ranges.extend(["0.0.0.0", "::"].iter().filter_map(|r| IpRange::parse(r).ok()));
                Some(ranges)
            }
        };
        let defaults = RetryConfig::default();
        let retry = match self.myelin_federation_retry {
            None => defaults,
            Some(raw) => {
                let retry = RetryConfig {
                    min_interval_ms: raw.min_interval_ms.unwrap_or(defaults.min_interval_ms),
                    max_interval_ms: raw.max_interval_ms.unwrap_or(defaults.max_interval_ms),
                };
                if retry.min_interval_ms == 0 || retry.max_interval_ms < retry.min_interval_ms {
                    return Err(invalid(
                        origins,
                        "myelin_federation_retry",
                        "min_interval_ms must be positive and at most max_interval_ms",
                    ));
                }
                retry
            }
        };
        let sender_instances = match (self.federation_sender_instances, self.send_federation) {
            (Some(instances), _) => instances,
            (None, Some(false)) => Vec::new(),
            (None, _) => vec![MAIN_INSTANCE.to_owned()],
        };
        Ok(FederationConfig {
            domain_whitelist: self.federation_domain_whitelist,
            sender_instances,
            instance_name: self.worker_name.unwrap_or_else(|| MAIN_INSTANCE.to_owned()),
            retry,
            verify_certificates: self.federation_verify_certificates.unwrap_or(true),
            certificate_verification_whitelist: self
                .federation_certificate_verification_whitelist
                .unwrap_or_default(),
            custom_ca_list,
            ip_range_blacklist,
        })
    }
}

impl FederationConfig {
    /// The outbound rules federation requests follow: `general`'s (with its DNS overrides),
    /// unless `federation_ip_range_blacklist` replaces its blocklist and whitelist.
    pub fn outbound(&self, general: &OutboundConfig) -> OutboundConfig {
        let mut outbound = general.clone();
        if let Some(blacklist) = &self.ip_range_blacklist {
            outbound.ip_range_blacklist = blacklist.clone();
            outbound.ip_range_whitelist = Vec::new();
        }
        outbound
    }

    /// Whether `federation_domain_whitelist` lets this server federate with `server_name`.
    pub fn allows_destination(&self, server_name: &str) -> bool {
        self.domain_whitelist.as_ref().is_none_or(|list| list.iter().any(|allowed| allowed == server_name))
    }

    /// Whether the certificate of `host` is checked.
    pub fn verifies_certificate_of(&self, host: &str) -> bool {
        self.verify_certificates
            && !self.certificate_verification_whitelist.iter().any(|glob| super::glob_matches(glob, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whitelist_and_the_switch_turn_verification_off() {
        let mut config = FederationConfig::default();
        assert!(config.verifies_certificate_of("example.org"));
        config.certificate_verification_whitelist = vec!["*.test".to_owned()];
        assert!(!config.verifies_certificate_of("a.test"));
        assert!(config.verifies_certificate_of("a.org"));
        config.verify_certificates = false;
        assert!(!config.verifies_certificate_of("a.org"));
    }

    #[test]
    fn the_federation_blacklist_replaces_the_general_rules() {
        let general = OutboundConfig {
            ip_range_whitelist: vec![IpRange::parse("127.0.0.1").unwrap()],
            ..OutboundConfig::default()
        };
        let config = FederationConfig::default();
        assert!(!config.outbound(&general).is_ip_blocked("127.0.0.1".parse().unwrap()));
        let config = FederationConfig {
            ip_range_blacklist: Some(vec![IpRange::parse("127.0.0.0/8").unwrap()]),
            ..FederationConfig::default()
        };
        let outbound = config.outbound(&general);
        assert!(outbound.is_ip_blocked("127.0.0.1".parse().unwrap()));
        assert!(!outbound.is_ip_blocked("10.0.0.1".parse().unwrap()));
    }
}
