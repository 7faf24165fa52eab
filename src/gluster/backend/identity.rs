//! Writing a volume's identity ([`crate::identity`]) after it was made: its reclaim policy as
//! its PV's changes, and the whole record when an administrator adopts a volume.

use super::*;

impl SshBackend {
    /// Records `wanted`'s policy on the volume `name`, once its identity is `wanted` in all
    /// else (this Kubernetes cluster, claim and PV); a volume of no identity, or of another's,
    /// is left as it is. Whether a caller may turn Retain into Delete is the caller's decision.
    pub async fn record_policy(&self, cluster: &str, name: &str, wanted: &Identity) -> Result<()> {
        let cluster = &self.cluster(Some(cluster))?;
        let Some(volume) = self.volume_info(cluster, name).await? else {
            return Ok(());
        };
        let recorded = Identity::of(&volume).map_err(Error::NotOurs)?;
        match recorded {
            Some(r) if r == *wanted => Ok(()),
            Some(r) if wanted.same_volume(&r) => {
                let set = [(POLICY.to_string(), wanted.policy.as_str().to_string())];
                self.gluster(cluster, cli::set_args(name, &set)).await?;
                tracing::info!(
                    volume = name,
                    policy = wanted.policy.as_str(),
                    "reclaim policy recorded on the volume"
                );
                Ok(())
            }
            _ => Err(Error::NotOurs(format!(
                "volume {name} does not record claim UID {} and PV {} of this cluster",
                wanted.claim_uid, wanted.pv
            ))),
        }
    }

    /// Records `identity` on the volume `name`, which must record none yet: `adopt --apply`,
    /// after an administrator saw the evidence.
    pub async fn adopt(&self, cluster: &Cluster, name: &str, identity: &Identity) -> Result<()> {
        let Some(volume) = self.volume_info(cluster, name).await? else {
            return Err(Error::NotOurs(format!("volume {name} is gone")));
        };
        if Identity::of(&volume) != Ok(None) {
            return Err(Error::NotOurs(format!(
                "volume {name} records an identity already"
            )));
        }
        self.gluster(cluster, cli::set_args(name, &identity.options()))
            .await?;
        Ok(())
    }
}
