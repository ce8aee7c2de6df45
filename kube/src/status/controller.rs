//! Our `controllerName`: the name GatewayClasses select us by and the name our entries in a
//! route's shared `status.parents` carry.
//!
//! The Gateway API (`GatewayController`) requires a domain-prefixed path (`example.com/bar`), at
//! most 253 characters. On top of that we refuse any `istio.io` name (and its subdomains):
//! istiod provisions and owns every Gateway whose class names `istio.io/gateway-controller` or
//! `istio.io/mesh-controller`, and Istio <= 1.30 writes its own route entries under those names.
//! Writing under them would fight istiod over the same objects, so the mistake is refused at
//! startup instead of discovered in a cluster.

use std::fmt;
use std::str::FromStr;

/// The default: a domain we name ourselves by, and a path saying what the controller is.
pub const DEFAULT_CONTROLLER_NAME: &str = "waypoint.dev/gateway-controller";

/// A valid controller name that is not Istio's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ControllerName(String);

/// Why a controller name was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerNameError {
    /// Not `domain/path`, or characters the Gateway API does not allow.
    #[error(
        "{0:?} is not a controller name: the Gateway API requires a domain-prefixed path such as `example.com/gateway-controller` (lowercase DNS domain, `/`, a non-empty path), at most 253 characters"
    )]
    Malformed(String),
    /// An `istio.io` name.
    #[error(
        "{0:?} is Istio's: with an istio.io controller name istiod provisions and owns the Gateway and writes the same status entries; choose a name of your own domain (default {DEFAULT_CONTROLLER_NAME})"
    )]
    Istio(String),
}

impl ControllerName {
    /// The name as written in status and matched against `GatewayClass.spec.controllerName`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ControllerName {
    fn default() -> Self {
        ControllerName(DEFAULT_CONTROLLER_NAME.to_owned())
    }
}

impl fmt::Display for ControllerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ControllerName {
    type Err = ControllerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ControllerNameError::Malformed(s.to_owned());
        let (domain, path) = s.split_once('/').ok_or_else(malformed)?;
        if s.len() > 253 || !is_dns_subdomain(domain) || path.is_empty() {
            return Err(malformed());
        }
        let path_ok = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c));
        if !path_ok {
            return Err(malformed());
        }
        if domain == "istio.io" || domain.ends_with(".istio.io") {
            return Err(ControllerNameError::Istio(s.to_owned()));
        }
        Ok(ControllerName(s.to_owned()))
    }
}

/// Lowercase DNS labels separated by dots, each starting and ending alphanumeric.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_prefixed_paths_are_accepted_and_the_default_is_one() {
        for ok in [
            DEFAULT_CONTROLLER_NAME,
            "example.com/bar",
            "a.b-c.example/x/y_z",
        ] {
            assert_eq!(ok.parse::<ControllerName>().map(|c| c.0), Ok(ok.into()));
        }
        assert_eq!(ControllerName::default().as_str(), DEFAULT_CONTROLLER_NAME);
    }

    #[test]
    fn names_without_domain_or_path_are_malformed() {
        for bad in [
            "example.com",
            "/bar",
            "example.com/",
            "Example.com/x",
            "-a.com/x",
            "a..b/x",
        ] {
            assert!(
                matches!(
                    bad.parse::<ControllerName>(),
                    Err(ControllerNameError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let long = format!("example.com/{}", "x".repeat(250));
        assert!(long.parse::<ControllerName>().is_err());
    }

    #[test]
    fn istio_names_are_refused_with_the_reason() {
        for istio in [
            "istio.io/gateway-controller",
            "istio.io/mesh-controller",
            "sub.istio.io/x",
        ] {
            let err = istio.parse::<ControllerName>().expect_err(istio);
            assert!(matches!(err, ControllerNameError::Istio(_)));
            assert!(err.to_string().contains("istiod provisions and owns"));
        }
        assert!("notistio.io/x".parse::<ControllerName>().is_ok());
    }
}
