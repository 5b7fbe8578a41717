//! Cluster mode: the KubeVirt resource as gate source and a lean watch cache
//! of VirtualMachines as owner source.

pub mod gates;
pub mod vms;

/// A client from in-cluster config, or `KUBECONFIG` / `~/.kube/config`.
pub async fn client() -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_default().await?)
}
