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

use std::fmt::{self, Debug};

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

    /// How the next watcher lists; asked before each (the default: pages of
    /// 500, kube-runtime's default).
    fn config(&mut self) -> watcher::Config {
        watcher::Config::default()
    }

    /// The watcher failed and a new one relists after a delay. `repeated`:
    /// the same failure as the previous attempt's, with no completed list in
    /// between (say it once, not every few seconds).
    fn failed(&mut self, failure: &Failure, repeated: bool);
}

/// Why a watcher ended.
#[derive(Debug)]
pub enum Failure {
    /// kube-runtime's watcher failed.
    Error(watcher::Error),
    /// A list started over before it completed: kube-runtime's watcher
    /// starts a streaming list over, without an error, when the API server
    /// ends it before its end marker.
    ListCut,
    /// The watcher's stream ended (it never does: a bug).
    Ended,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => fmt::Display::fmt(e, f),
            Failure::ListCut => f.write_str("the list ended before its end"),
            Failure::Ended => f.write_str("the watch stream ended"),
        }
    }
}

/// Watches `api` for ever, handing every event to `watched`.
pub async fn run<W: Watched>(api: Api<W::Object>, mut watched: W) {
    let mut reconnect = Reconnect::default();
    // The last failure's message; empty once a list completed.
    let mut last_error = String::new();
    loop {
        let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watched.config()));
        // Between Init and InitDone.
        let mut listing = false;
        let failure = loop {
            let event = match stream.next().await {
                None => break Failure::Ended,
                Some(Err(e)) => break Failure::Error(e),
                Some(Ok(event)) => event,
            };
            match event {
                Event::Init if listing => break Failure::ListCut,
                Event::Init => listing = true,
                Event::InitDone => listing = false,
                _ => {}
            }
            let listed = matches!(event, Event::InitDone);
            watched.event(event);
            if listed {
                reconnect.live();
                last_error.clear();
            }
        };
        let error = failure.to_string();
        watched.failed(&failure, error == last_error);
        last_error = error;
        tokio::time::sleep(reconnect.next_delay()).await;
    }
}
