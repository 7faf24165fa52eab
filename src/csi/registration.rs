//! Registration with the kubelet's plugin watcher: the kubelet finds this socket in its
//! `plugins_registry` directory, asks what it is, and reports whether registering worked. So
//! a node needs no node-driver-registrar sidecar.

use tonic::{Request, Response, Status};

use super::proto::registration::registration_server::Registration;
use super::proto::registration::*;

pub struct RegistrationService {
    pub driver: String,
    /// The CSI socket as a path on the node (the kubelet dials it).
    pub endpoint: String,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".into(),
            name: self.driver.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(driver = self.driver, "registered with the kubelet");
        } else {
            tracing::error!(
                driver = self.driver,
                error = status.error,
                "the kubelet refused the registration"
            );
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
