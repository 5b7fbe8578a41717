//! Cluster mode: the KubeVirt resource as gate source and a lean watch cache
//! of VirtualMachines as owner source.

pub mod kubevirt_gate;
pub mod vm_cache;
mod watch;

use std::time::Duration;

use backon::BackoffBuilder;

use hyper::{Request, Response};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};
use tower::BoxError;

/// Delays between attempts to reconnect a failed watch (VirtualMachines,
/// KubeVirt).
///
/// kube-runtime's default (client-go's: from 0.8 s, doubling up to 30 s)
/// spares a struggling API server, but leaves the VM cache stale for many
/// seconds after a short outage. Being stale is safe (lookups go to the API)
/// but costs a GET per VMI CREATE, and a gate change waits for the watch; so
/// reconnect promptly: 0.2 s doubling to a cap of 1.5 s, each delay plus a
/// random 0-100 % so the replicas do not retry in step; no wait is longer
/// than [`MAX_RECONNECT_DELAY`]. While the API is down this costs it one
/// failed list or watch call per replica and watch every 1.5-3 s, which is
/// cheap next to the one relist that succeeds. `tests/cluster.rs`
/// (`failing_watches_retry_on_the_short_backoff`) holds that the delays
/// grow; `make bench-scale` (`watches_recover_promptly_after_an_outage`)
/// that they stay short.
pub fn reconnect_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(1500))
        .with_jitter()
        .without_max_times()
}

/// The longest [`reconnect_backoff`] delay.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(3);

/// How long a watch must stay live before its next failure starts the
/// delays from the shortest again (client-go's reflector waits 2 minutes);
/// also how often a completed list may start them again.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// When a failed watch tries again: the [`reconnect_backoff`] delays, which
/// grow across failures. They start again from the shortest when a watch
/// stayed live for [`RESET_AFTER`], and when a list completes after
/// failures, but that at most once per [`RESET_AFTER`]: the first failure
/// after an outage (a watch that meets 410 Gone right after the relist) is
/// retried at once, while a watch that fails right after every list (the
/// watch verb denied, a proxy that cuts watches) backs off instead of
/// relisting every 0.2-0.4 s for as long as that lasts.
pub struct Reconnect {
    delays: backon::ExponentialBackoff,
    /// Whether a watch failed since the delays last started again.
    failed: bool,
    /// When a completed list last started the delays again.
    list_reset: Option<tokio::time::Instant>,
    live_since: Option<tokio::time::Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            delays: reconnect_backoff().build(),
            failed: false,
            list_reset: None,
            live_since: None,
        }
    }
}

impl Reconnect {
    /// A list completed: the watch is live from now.
    pub fn live(&mut self) {
        let now = tokio::time::Instant::now();
        let may_reset = self
            .list_reset
            .is_none_or(|at| now.duration_since(at) >= RESET_AFTER);
        if self.failed && may_reset {
            self.restart();
            self.list_reset = Some(now);
        }
        self.live_since = Some(now);
    }

    /// The watch failed: how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        if (self.live_since.take()).is_some_and(|since| since.elapsed() >= RESET_AFTER) {
            self.restart();
        }
        self.failed = true;
        self.delays.next().unwrap_or(MAX_RECONNECT_DELAY)
    }

    fn restart(&mut self) {
        self.delays = reconnect_backoff().build();
        self.failed = false;
    }
}

/// kube's retries of 429/503/504 answers for list and watch calls: a few,
/// within about 3 s. kube's own policy (15 tries, doubling from 5 ms
/// without a useful cap) kept one list call retrying for minutes during an
/// outage, so the watch came back long after the API server did. Past
/// these, the watch fails and reconnects with [`reconnect_backoff`].
fn server_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 5, true)
        .unwrap_or_else(|_| RetryPolicy::server_retry())
}

/// A client from `kubeconfig` if given, else in-cluster config, else
/// `KUBECONFIG` / `~/.kube/config`.
///
/// The stack retries 429/503/504 answers a few times (see
/// [`server_retry`]). That suits the watchers' list pages, but not the single GET of
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
        .with_layer(&RetryLayer::new(NoRetryForGets(server_retry())))
        .build())
}

/// [`server_retry`], except for `get` requests.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_stay_capped() {
        let delays: Vec<Duration> = reconnect_backoff().build().take(50).collect();
        assert!(delays[0] >= Duration::from_millis(200) && delays[0] < Duration::from_millis(400));
        assert!(
            delays.iter().all(|d| *d <= MAX_RECONNECT_DELAY),
            "{delays:?}"
        );
        assert!(delays[10..]
            .iter()
            .all(|d| *d >= Duration::from_millis(1500)));
        // Jittered: not all the same once capped.
        assert!(delays[10..].windows(2).any(|w| w[0] != w[1]));
    }

    /// After an outage, the first completed list starts the delays again;
    /// failures right after each later list keep growing them, until a
    /// minute passed or a watch stayed live for one.
    #[tokio::test(start_paused = true)]
    async fn delays_start_again_once_a_minute_or_after_a_long_live_watch() {
        let short = Duration::from_millis(400);
        let mut r = Reconnect::default();
        r.live();
        // An outage: failing lists, growing delays.
        let outage: Vec<Duration> = (0..5).map(|_| r.next_delay()).collect();
        assert!(
            outage[0] < short && outage[4] >= Duration::from_millis(1500),
            "{outage:?}"
        );
        // The list after it completes; its watch fails at once: retried at once.
        r.live();
        assert!(r.next_delay() < short);
        // The same again and again within the minute: the delays grow.
        let mut storm = Vec::new();
        for _ in 0..5 {
            r.live();
            tokio::time::advance(Duration::from_secs(1)).await;
            storm.push(r.next_delay());
        }
        assert!(storm[4] >= Duration::from_millis(1500), "{storm:?}");
        // A minute after the last start, a completed list starts them again.
        tokio::time::advance(RESET_AFTER).await;
        r.live();
        assert!(r.next_delay() < short);
        // And a watch that stayed live for a minute does too.
        for _ in 0..5 {
            r.next_delay();
        }
        r.live();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            r.next_delay() >= Duration::from_millis(800),
            "within the minute"
        );
        r.live();
        tokio::time::advance(RESET_AFTER).await;
        assert!(r.next_delay() < short);
    }
}
