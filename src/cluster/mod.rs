//! Cluster mode: the KubeVirt resource as gate source and a lean watch cache
//! of VirtualMachines as owner source.

pub mod gates;
pub mod vms;

/// A client from `kubeconfig` if given, else in-cluster config, else
/// `KUBECONFIG` / `~/.kube/config`.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
