//! Federation transport: `federation_verify_certificates`,
//! `federation_certificate_verification_whitelist`, `federation_custom_ca_list` and
//! `federation_ip_range_blacklist`.
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
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            verify_certificates: true,
            certificate_verification_whitelist: Vec::new(),
            custom_ca_list: None,
            ip_range_blacklist: None,
        }
    }
}

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
        Ok(FederationConfig {
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
