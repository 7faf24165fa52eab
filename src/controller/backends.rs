//! Which backend serves a class or a PV, and the Heketi credentials from their Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::config::{BackendParams, ClassParams, HeketiParams, SecretRef};
use crate::gluster::SshBackend;
use crate::heketi::volumes as heketi;
use crate::heketi::{Credentials, HeketiClient, HeketiVolumes};
use crate::k8s::cached::CachedPv;
use crate::volumes::Backend;
use crate::{Error, Result};

const SECRET_TYPE: &str = "kubernetes.io/glusterfs";

impl Context {
    pub(super) fn ssh(&self) -> Result<&SshBackend> {
        self.ssh.as_ref().ok_or_else(|| {
            Error::InvalidParameter(
                "this class uses the SSH backend (no resturl), but the provisioner runs without \
                 a topology file (--topology)"
                    .into(),
            )
        })
    }

    /// The backend a class's parameters name, and the topology cluster for the SSH one.
    pub(super) async fn backend_for<'p>(
        &self,
        params: &'p ClassParams,
    ) -> Result<(Backend<'_>, Option<&'p str>)> {
        Ok(match &params.backend {
            BackendParams::Ssh { cluster, .. } => (Backend::Ssh(self.ssh()?), cluster.as_deref()),
            BackendParams::Heketi(heketi) => {
                (Backend::Heketi(Box::new(self.heketi(heketi).await?)), None)
            }
        })
    }

    /// A Heketi backend as `params` describe it, with the user's key read from its Secret.
    pub(super) async fn heketi(&self, params: &HeketiParams) -> Result<HeketiVolumes> {
        let key = match &params.secret {
            Some(secret) => Some(self.secret_key(secret).await?),
            None => params.user_key.clone(),
        };
        // Without a user Heketi runs without authentication (restauthenabled: "false").
        let credentials = Credentials {
            key: (!params.user.is_empty()).then(|| key.unwrap_or_default()),
            user: params.user.clone(),
        };
        let client = HeketiClient::new(self.heketi.clone(), &params.url, credentials);
        Ok(HeketiVolumes::new(client, params.clone()))
    }

    pub(super) async fn secret_key(&self, secret: &SecretRef) -> Result<String> {
        let bad = |why: &str| Error::HeketiCredentials(format!("Secret {secret}: {why}"));
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        let found = match api.get_opt(&secret.name).await {
            Err(kube::Error::Api(s)) if s.code == 403 => return Err(bad("not allowed to read it")),
            other => other?,
        };
        let found = found.ok_or_else(|| bad("not found"))?;
        if found.type_.as_deref() != Some(SECRET_TYPE) {
            return Err(bad(&format!("type must be {SECRET_TYPE}")));
        }
        let key = found
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .ok_or_else(|| bad("no \"key\" in its data"))?;
        String::from_utf8(key.0.clone()).map_err(|_| bad("\"key\" is not UTF-8 text"))
    }

    /// The backend that made a PV's volume (the in-tree provisioner's were all Heketi's).
    pub(super) async fn backend_of(&self, pv: &CachedPv) -> Result<Backend<'_>> {
        let heketi = !self.made_here(pv)
            || [heketi::ANN_VOLUME_ID, heketi::ANN_URL]
                .iter()
                .any(|a| pv.annotation(a).is_some());
        Ok(if heketi {
            Backend::Heketi(Box::new(self.heketi_of(pv).await?))
        } else {
            Backend::Ssh(self.ssh()?)
        })
    }

    /// The Heketi server, user and key of a PV: what ours recorded (the key from the recorded
    /// Secret, else from the class); for one the in-tree provisioner made, its class. A PV's
    /// annotations are editable, so the server and Secret they name must be ones a class of
    /// ours names: a PV cannot send a signed request anywhere an administrator did not.
    pub(super) async fn heketi_of(&self, pv: &CachedPv) -> Result<HeketiVolumes> {
        self.caches_synced().await;
        let class = || -> Result<HeketiParams> {
            let name = pv.spec.storage_class_name.clone().unwrap_or_default();
            let class = self
                .classes
                .get(&ObjectRef::new(&name))
                .ok_or_else(|| Error::ClassNotFound(name.clone()))?;
            match ClassParams::parse(&class.parameters.clone().unwrap_or_default())?.backend {
                BackendParams::Heketi(params) => Ok(params),
                BackendParams::Ssh { .. } => Err(Error::InvalidParameter(format!(
                    "StorageClass {name:?} has no resturl"
                ))),
            }
        };
        let params = match HeketiVolumes::params_from(&pv.kept.to_map()) {
            Some(mut params) => {
                self.check_heketi_named(&params)?;
                if params.secret.is_none() && !params.user.is_empty() {
                    params.user_key = class()?.user_key;
                }
                params
            }
            None => class()?,
        };
        self.heketi(&params).await
    }

    /// Whether some class of ours names this Heketi server with this user and Secret.
    fn check_heketi_named(&self, recorded: &HeketiParams) -> Result<()> {
        let named = self.classes.state().iter().any(|class| {
            self.settings.serves(&class.provisioner)
                && ClassParams::parse(&class.parameters.clone().unwrap_or_default()).is_ok_and(
                    |p| {
                        matches!(p.backend, BackendParams::Heketi(h)
                            if h.url == recorded.url && h.user == recorded.user
                                && h.secret == recorded.secret)
                    },
                )
        });
        if named {
            return Ok(());
        }
        let secret = recorded.secret.as_ref().map(ToString::to_string);
        Err(Error::NotOurs(format!(
            "the PV names Heketi server {} (user {:?}, Secret {}), which no StorageClass of \
             this provisioner names",
            recorded.url,
            recorded.user,
            secret.as_deref().unwrap_or("none")
        )))
    }
}
