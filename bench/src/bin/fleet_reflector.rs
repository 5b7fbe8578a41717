//! `make bench-fleet`'s first anchor: kube-runtime's reflector of full
//! VirtualMachine objects, as a Rust program without generated KubeVirt
//! types would cache them (`DynamicObject`, every field kept), with
//! kube-runtime's default watcher configuration (pages of 500) unless
//! `--streaming`.
//!
//! Serves on `--listen` (plain HTTP): `/readyz` (200 once the store is
//! ready) and `/metrics` with `fleet_anchor_resource_version` (the newest
//! resourceVersion the store holds: a completed list's newest object, then
//! each change) and `fleet_anchor_objects`, the same measure the webhook's
//! `vm_cache_resource_version` gives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use axum::Router;
use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{reflector, WatchStreamExt as _};
use kube::{Api, ResourceExt as _};

#[derive(Default)]
struct State {
    ready: AtomicBool,
    version: AtomicI64,
    objects: AtomicI64,
}

fn version(obj: &DynamicObject) -> i64 {
    obj.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut kubeconfig = None;
    let mut listen: SocketAddr = "127.0.0.1:9090".parse()?;
    let mut streaming = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = args.next(),
            "--listen" => listen = args.next().context("--listen ADDR")?.parse()?,
            "--streaming" => streaming = true,
            other => anyhow::bail!(
                "unknown argument {other}; usage: fleet-reflector --kubeconfig FILE [--listen ADDR] [--streaming]"
            ),
        }
    }
    let kc = kube::config::Kubeconfig::read_from(kubeconfig.context("--kubeconfig FILE")?)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut wc = watcher::Config::default();
    if streaming {
        wc = wc.streaming_lists();
    }

    let state = Arc::new(State::default());
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let watch_state = state.clone();
    tokio::spawn(async move {
        let mut listed = 0;
        let stream = reflector(writer, watcher::watcher(api, wc)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listed = 0,
                Ok(Event::InitApply(o)) => listed = listed.max(version(&o)),
                Ok(Event::InitDone) => {
                    watch_state.version.fetch_max(listed, Ordering::SeqCst);
                    watch_state
                        .objects
                        .store(reader.state().len() as i64, Ordering::SeqCst);
                    watch_state.ready.store(true, Ordering::SeqCst);
                }
                Ok(Event::Apply(o) | Event::Delete(o)) => {
                    watch_state.version.fetch_max(version(&o), Ordering::SeqCst);
                }
                Err(e) => eprintln!("watch error: {e}"),
            }
        }
    });

    let app = Router::new()
        .route(
            "/readyz",
            get({
                let s = state.clone();
                move || async move {
                    if s.ready.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "syncing\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let s = state.clone();
                move || async move {
                    format!(
                        "fleet_anchor_resource_version {}\nfleet_anchor_objects {}\n",
                        s.version.load(Ordering::SeqCst),
                        s.objects.load(Ordering::SeqCst)
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
