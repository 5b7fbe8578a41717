//! Cluster mode: the KubeVirt resource as gate source and a lean watch cache
//! of VirtualMachines as owner source.

pub mod gates;
pub mod vms;

use hyper::{Request, Response};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};
use tower::BoxError;

/// A client from `kubeconfig` if given, else in-cluster config, else
/// `KUBECONFIG` / `~/.kube/config`.
///
/// kube's default stack retries 429/503/504 answers up to 15 times with
/// backoff. That suits the watchers' list pages, but not the single GET of
/// an owner missing from the cache: it runs inside an admission review with
/// a deadline of a few seconds, so an overloaded API server would get a burst
/// of GETs per review and the review would run into its deadline anyway.
/// Named GETs therefore fail on the first error (the user is told to retry);
/// everything else keeps kube's retries.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        // The retry layer needs a cloneable service below it.
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(
            NoRetryForGets(RetryPolicy::server_retry()),
        ))
        .build())
}

/// kube's server retry policy, except for `get` requests.
#[derive(Clone)]
struct NoRetryForGets(RetryPolicy);

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for NoRetryForGets {
    type Future = <RetryPolicy as Policy<Request<Body>, Response<Res>, BoxError>>::Future;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        // kube tags each request with its verb.
        if req.extensions().get::<&'static str>() == Some(&"get") {
            return None;
        }
        self.0.retry(req, result)
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        Policy::<Request<Body>, Response<Res>, BoxError>::clone_request(&mut self.0, req)
    }
}
