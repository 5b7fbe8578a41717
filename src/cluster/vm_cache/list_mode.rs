//! How the VM cache gets the full state, at start and after every failed
//! watch: a streaming list where the API server serves one, else pages.
//!
//! A streaming list is a watch with `sendInitialEvents=true` (the WatchList
//! feature, beta in kube-apiserver: on by default in 1.32 and 1.34, off in
//! 1.27-1.31 and 1.33, per k8s.io/apiserver's feature table); the API server
//! sends the objects from its watch cache one event at a time, then a
//! bookmark that marks their end. Pages (`limit`/`continue`) are
//! kube-runtime's and client-go's default. An unpaginated list is built by
//! the API server in one piece; it is here to be measured against.
//! `make bench-fleet` measures the three on a real kube-apiserver
//! (bench/README.md, "Fleet").

use kube::runtime::watcher;

/// The list the VM cache makes (`--vm-list-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListMode {
    /// A streaming list; where the API server refuses it (WatchList off, as
    /// in Kubernetes 1.27-1.31 and 1.33 by default) or ends it before its
    /// end marker, pages from then on.
    #[default]
    Auto,
    /// Only streaming lists (no fallback).
    Streaming,
    /// Pages of 500 (kube-runtime's and client-go's default).
    Paginated,
    /// One list of everything: what the API server must build at once.
    Unpaginated,
}

impl ListMode {
    /// The watcher configuration that lists this way.
    pub fn watcher_config(self) -> watcher::Config {
        let config = watcher::Config::default();
        match self {
            ListMode::Auto | ListMode::Streaming => config.streaming_lists(),
            ListMode::Paginated => config,
            ListMode::Unpaginated => watcher::Config {
                page_size: None,
                ..config
            },
        }
    }

    /// What `auto` falls back to.
    pub const FALLBACK: ListMode = ListMode::Paginated;
}

/// Whether `error`, met while starting a streaming list, says that the API
/// server does not serve streaming lists: it refuses the request as invalid
/// (422, `sendInitialEvents is forbidden for watch unless the WatchList
/// feature gate is enabled`; a server before 1.27 refuses
/// `resourceVersionMatch` on a watch the same way) or as bad (400, a proxy).
/// Other failures (403, 5xx, a dropped connection) would fail a paginated
/// list too, and are retried as they are.
pub fn refuses_streaming(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if matches!(status.code, 400 | 422)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn start_failed(code: u16) -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(
            Status::failure("refused", "Invalid")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn only_a_refused_request_means_no_streaming_lists() {
        assert!(refuses_streaming(&start_failed(422)));
        assert!(refuses_streaming(&start_failed(400)));
        for code in [403, 404, 410, 429, 500, 503] {
            assert!(!refuses_streaming(&start_failed(code)), "{code}");
        }
        let during_watch = watcher::Error::WatchError(
            Status::failure("too old", "Expired").with_code(422).boxed(),
        );
        assert!(!refuses_streaming(&during_watch));
    }

    #[test]
    fn modes_map_to_watcher_configs() {
        use watcher::InitialListStrategy::{ListWatch, StreamingList};
        let c = |m: ListMode| {
            let c = m.watcher_config();
            (c.initial_list_strategy, c.page_size)
        };
        assert_eq!(c(ListMode::Auto), (StreamingList, Some(500)));
        assert_eq!(c(ListMode::Streaming), (StreamingList, Some(500)));
        assert_eq!(c(ListMode::Paginated), (ListWatch, Some(500)));
        assert_eq!(c(ListMode::Unpaginated), (ListWatch, None));
    }
}
