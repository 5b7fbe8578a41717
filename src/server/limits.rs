//! Back-pressure: the bounds on what clients can make the server hold, and
//! the semaphores a review waits on, up to its deadline, before its body is
//! read.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::metrics::Metrics;

use super::error::ApiError;

/// Bounds on what one client can make the server hold; `serve` flattens
/// them into its flags. A review whose body does not fit the body budget
/// waits, unread, in the kernel's socket buffer or in HTTP/2 flow control;
/// a body larger than the budget waits for all of it.
#[derive(clap::Args, Clone, Debug)]
pub struct Limits {
    /// Admission reviews processed at once; more wait for a slot.
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub max_concurrent_requests: usize,
    /// Open client connections at most; more wait in the kernel's accept queue.
    #[arg(long, env = "REBOOT_WEBHOOK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Bytes of request bodies read or judged at once (by Content-Length);
    /// more wait unread. Bounds the memory large objects can take. A body
    /// without Content-Length counts as the whole budget.
    #[arg(long, env = "REBOOT_WEBHOOK_MAX_BODY_BYTES_IN_FLIGHT", default_value = "16Mi", value_parser = crate::values::byte_size)]
    pub max_body_bytes_in_flight: usize,
    /// Time a client has to send the request headers (HTTP/1.1) and to finish
    /// the TLS handshake.
    #[arg(long, env = "REBOOT_WEBHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::values::duration)]
    pub header_read_timeout: Duration,
    /// Used when the API server sends no `?timeout=`.
    #[arg(skip = Duration::from_secs(10))]
    pub default_timeout: Duration,
}

/// The semaphores behind [`Limits`]: review slots, and the body budget.
pub struct Budgets {
    slots: Semaphore,
    /// `max_body_bytes_in_flight` in KiB, and the semaphore holding them: a
    /// request never asks for more than `body_kib`, so it cannot wait forever.
    body_kib: u32,
    body: Semaphore,
}

impl Budgets {
    pub fn new(limits: &Limits) -> Self {
        let body_kib = budget_kib(limits.max_body_bytes_in_flight);
        Budgets {
            slots: Semaphore::new(limits.max_concurrent_requests.max(1)),
            body_kib,
            body: Semaphore::new(body_kib as usize),
        }
    }

    /// Waits until `deadline` for a review slot, then for the body's share
    /// of the body budget (by its declared length). Past the deadline, a
    /// "retry" naming the limit that stayed full.
    pub async fn admit<'a>(
        &'a self,
        declared: Option<u64>,
        deadline: Instant,
        metrics: &'a Metrics,
    ) -> Result<InFlight<'a>, ApiError> {
        let slot = acquire(&self.slots, 1, deadline)
            .await
            .ok_or(ApiError::Overloaded("concurrency limit"))?;
        // Bound the memory held by bodies: 64 reviews of 500 KB read at once
        // would hold 32 MiB of bodies alone, and the API server allows 7 MiB each.
        let permits = body_permits(declared, self.body_kib);
        let body = acquire(&self.body, permits, deadline)
            .await
            .ok_or(ApiError::Overloaded("limit of request bytes in flight"))?;
        metrics.in_flight.inc();
        Ok(InFlight {
            _body: body,
            _slot: slot,
            metrics,
        })
    }
}

async fn acquire(
    limiter: &Semaphore,
    permits: u32,
    deadline: Instant,
) -> Option<SemaphorePermit<'_>> {
    tokio::time::timeout_at(deadline, limiter.acquire_many(permits))
        .await
        .ok()?
        .ok()
}

/// An admitted review: holds its slot and its share of the body budget, and
/// counts in `requests_in_flight`, until dropped (also when the request is
/// cancelled).
pub struct InFlight<'a> {
    // Fields drop in this order: the body budget first, then the slot.
    _body: SemaphorePermit<'a>,
    _slot: SemaphorePermit<'a>,
    metrics: &'a Metrics,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// The body budget in KiB permits: at least one, at most what fits in a
/// `u32` (`Semaphore::acquire_many` takes a `u32`).
fn budget_kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// KiB of the body budget a request takes: its declared length, or all of
/// the budget when the length is unknown or larger than the budget.
fn body_permits(declared: Option<u64>, budget: u32) -> u32 {
    declared
        .map_or(budget, |n| {
            u32::try_from(n.div_ceil(1024)).unwrap_or(u32::MAX)
        })
        .clamp(1, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_budget_permits() {
        let budget = budget_kib(16 * 1024 * 1024);
        assert_eq!(budget, 16 * 1024);
        assert_eq!(budget_kib(0), 1);
        assert_eq!(budget_kib(1), 1);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(budget_kib(usize::MAX), u32::MAX);
        // By declared length, rounded up to whole KiB.
        assert_eq!(body_permits(Some(0), budget), 1);
        assert_eq!(body_permits(Some(1), budget), 1);
        assert_eq!(body_permits(Some(6513), budget), 7);
        assert_eq!(body_permits(Some(512_000), budget), 500);
        // Larger than the budget or unknown: all of it, so it still runs.
        assert_eq!(body_permits(Some(7 * 1024 * 1024), 4096), 4096);
        assert_eq!(body_permits(Some(u64::MAX), budget), budget);
        assert_eq!(body_permits(None, budget), budget);
    }

    fn limits(reviews: usize, body_bytes: usize) -> Limits {
        Limits {
            max_concurrent_requests: reviews,
            max_connections: 1,
            max_body_bytes_in_flight: body_bytes,
            header_read_timeout: Duration::from_secs(1),
            default_timeout: Duration::from_secs(1),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    #[tokio::test]
    async fn admission_holds_both_budgets_and_the_gauge_until_dropped() {
        let metrics = Metrics::new();
        let budgets = Budgets::new(&limits(1, 4096));
        let first = budgets.admit(Some(1024), soon(), &metrics).await.unwrap();
        assert_eq!(metrics.in_flight.get(), 1);
        // The only review slot is taken.
        let full = budgets.admit(Some(1024), soon(), &metrics).await.err();
        assert!(
            matches!(full, Some(ApiError::Overloaded("concurrency limit"))),
            "{full:?}"
        );
        assert_eq!(
            metrics.in_flight.get(),
            1,
            "a refused review is not in flight"
        );
        drop(first);
        assert_eq!(metrics.in_flight.get(), 0);

        let budgets = Budgets::new(&limits(2, 4096));
        let big = budgets.admit(None, soon(), &metrics).await.unwrap();
        let full = budgets.admit(Some(1), soon(), &metrics).await.err();
        assert!(
            matches!(
                full,
                Some(ApiError::Overloaded("limit of request bytes in flight"))
            ),
            "{full:?}"
        );
        drop(big);
        // The refused review gave its slot back: both fit again.
        let a = budgets.admit(Some(2048), soon(), &metrics).await.unwrap();
        let b = budgets.admit(Some(2048), soon(), &metrics).await.unwrap();
        assert_eq!(metrics.in_flight.get(), 2);
        drop((a, b));
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_request_gives_everything_back() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let budgets = std::sync::Arc::new(Budgets::new(&limits(1, 1024)));
        let (admitted, wait) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let (metrics, budgets) = (metrics.clone(), budgets.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let _held = budgets.admit(None, deadline, &metrics).await;
                let _ = admitted.send(());
                std::future::pending::<()>().await;
            }
        });
        wait.await.unwrap();
        assert_eq!(metrics.in_flight.get(), 1);
        task.abort();
        let _ = task.await;
        assert_eq!(metrics.in_flight.get(), 0);
        let again = budgets.admit(None, soon(), &metrics).await;
        assert!(again.is_ok(), "slot and body budget were released");
    }
}
