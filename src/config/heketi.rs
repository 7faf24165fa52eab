//! The parameters of a class served through Heketi (`resturl`), and their values.

use std::fmt;

use super::values::invalid;
use crate::Result;

#[derive(Clone, PartialEq)]
pub struct HeketiParams {
    pub url: String,
    pub user: String,
    /// The key from `restuserkey`; a named Secret takes precedence.
    pub user_key: Option<String>,
    pub secret: Option<SecretRef>,
    /// Heketi cluster ids to choose from; empty lets Heketi choose.
    pub clusters: Vec<String>,
    pub snap_factor: f32,
}

/// Logs and errors may show `{:?}` of anything: never the key.
impl std::fmt::Debug for HeketiParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeketiParams")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("user_key", &redacted(&self.user_key))
            .field("secret", &self.secret)
            .field("clusters", &self.clusters)
            .field("snap_factor", &self.snap_factor)
            .finish()
    }
}

/// What `{:?}` shows of a secret value: whether there is one.
pub fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// A Secret of type `kubernetes.io/glusterfs` holding the Heketi user's key under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

pub(super) fn parse_url(value: &str) -> Result<String> {
    let uri: Option<hyper::Uri> = value.parse().ok();
    let ok = uri.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.host().is_some()
            && u.query().is_none()
    });
    if !ok {
        return Err(invalid(format!(
            "resturl {value:?}: expected the Heketi server's http:// or https:// URL"
        )));
    }
    // Credentials in the URL would end up in PV annotations, events and logs.
    if uri
        .as_ref()
        .and_then(|u| u.authority())
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(invalid(
            "resturl must not carry credentials (user:password@); use restuser and a Secret",
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

pub(super) fn parse_cluster_ids(value: &str) -> Result<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .map(|id| {
            if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
                Ok(id.to_string())
            } else {
                Err(invalid(format!(
                    "clusterid {value:?}: expected comma-separated Heketi cluster ids"
                )))
            }
        })
        .collect()
}

pub(super) fn parse_snap_factor(value: &str) -> Result<f32> {
    value
        .parse::<f32>()
        .ok()
        .filter(|f| (1.0..=100.0).contains(f))
        .ok_or_else(|| {
            invalid(format!(
                "snapfactor {value:?}: must be a number from 1 to 100"
            ))
        })
}
