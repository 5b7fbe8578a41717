//! The one watch-and-reconnect loop both watches (VirtualMachines, the
//! KubeVirt resource) run; what each does with its events is passed in as a
//! [`Watched`].
//!
//! The first error ends a watcher and a fresh one relists after the next
//! [`Reconnect`] delay, as client-go's reflector does: kube-runtime's
//! watcher resumes a failed watch without telling whether or when it got
//! through, and its `.backoff()` would not grow (the watcher yields
//! `Event::Init` before each list attempt and any item resets it, so a
//! failing list was retried every 0.2-0.4 s for as long as the API failed;
//! tests/cluster.rs, `failing_watches_retry_on_the_short_backoff`).

use std::fmt::Debug;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::Reconnect;

/// The per-resource part of a watch.
pub trait Watched {
    type Object: Resource + Clone + DeserializeOwned + Debug + Send + 'static;

    /// One event of the current watcher. `Event::InitDone` means the list
    /// completed: the watch is live from now.
    fn event(&mut self, event: Event<Self::Object>);

    /// The watcher failed with `error` and a new one relists after a delay.
    /// `repeated`: the same error as the previous attempt's, with no
    /// completed list in between (say it once, not every few seconds).
    fn failed(&mut self, error: &str, repeated: bool);
}

/// Watches `api` for ever, handing every event to `watched`.
pub async fn run<W: Watched>(api: Api<W::Object>, mut watched: W) {
    let mut reconnect = Reconnect::default();
    // The last failure's message; empty once a list completed.
    let mut last_error = String::new();
    loop {
        let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
        let error = loop {
            let event = match stream.next().await {
                None => break "the watch stream ended".to_owned(),
                Some(Err(e)) => break e.to_string(),
                Some(Ok(event)) => event,
            };
            let listed = matches!(event, Event::InitDone);
            watched.event(event);
            if listed {
                reconnect.live();
                last_error.clear();
            }
        };
        watched.failed(&error, error == last_error);
        last_error = error;
        tokio::time::sleep(reconnect.next_delay()).await;
    }
}
