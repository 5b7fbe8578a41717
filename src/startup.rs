//! `serve`: wire the sources, the TLS material and the server together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::cli::{LogFormat, ServeArgs};
use crate::cluster;
use crate::feature_gate::{self, GateFlag, GateSource};
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::owners::{StaticVms, VmSource};
use crate::server::{self, AppState};
use crate::tls::TlsConfig;
use crate::webhook::Webhook;

/// Sets up logging and a runtime, then serves until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let started = start(args, shutdown_signal()).await?;
        // One line on stdout with the addresses actually bound, so that a
        // port 0 in --listen/--metrics-listen can be found by whoever started us.
        println!(
            "listening admission=https://{} metrics=http://{}",
            started.addr, started.metrics_addr
        );
        started.task.await.context("server task")?
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: in a pod, stderr is a pipe and
    // escape codes would end up in `kubectl logs` and log pipelines.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A running server.
pub struct Started {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Loads certificates, starts the sources, binds both ports and spawns the
/// server; returns once it accepts connections.
pub async fn start(
    args: ServeArgs,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Started> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let cert_ready = readiness.part("certificate");

    let (tls, expiry) = TlsConfig::load(args.tls).context("loading the TLS certificate and key")?;
    if let Some(e) = expiry {
        metrics.cert_expiry.set(e as f64);
    }
    cert_ready.store(true, Ordering::SeqCst);
    tls.spawn_reloader(metrics.clone());

    let needs_cluster = args.feature_gates.is_none() || args.objects.is_none();
    let client = if needs_cluster {
        Some(
            cluster::client(args.kubeconfig.as_deref())
                .await
                .context("no --feature-gates/--objects given, so a Kubernetes API is needed")?,
        )
    } else {
        None
    };

    let gate: Arc<dyn GateSource> = match (&args.feature_gates, &client) {
        (Some(list), _) => {
            let on = feature_gate::parse_list(list);
            tracing::info!(enabled = on, "feature gate from --feature-gates");
            metrics.gate_enabled.set(on as i64);
            Arc::new(GateFlag::new(on))
        }
        (None, Some(c)) => cluster::kubevirt_gate::spawn(
            c.clone(),
            &args.decision.kubevirt_namespace,
            metrics.clone(),
            readiness.part("kubevirt gate cache"),
        ),
        (None, None) => unreachable!("client is built when gates need the cluster"),
    };
    let vms: Arc<dyn VmSource> = match (&args.objects, &client) {
        (Some(path), _) => {
            // A directory (its top level) or one file, as `check --objects`.
            let vms = StaticVms::from_path(path, false)
                .with_context(|| format!("reading --objects {}", path.display()))?;
            tracing::info!(count = vms.len(), path = %path.display(), "VirtualMachines from files");
            Arc::new(vms)
        }
        (None, Some(c)) => cluster::vm_cache::VmCache::spawn(
            c.clone(),
            args.watch_namespaces.clone(),
            args.vm_list_mode,
            metrics.clone(),
            readiness.part("virtualmachine cache"),
            !args.e2e_skip_owner_fence,
        ),
        (None, None) => unreachable!("client is built when VMs need the cluster"),
    };

    let webhook = Arc::new(Webhook {
        policy: args.decision.policy(args.mode),
        gate,
        vms,
        metrics: metrics.clone(),
    });
    let state = AppState::new(webhook, readiness, args.limits);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let health_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding --metrics-listen {}", args.metrics_listen))?;
    let addr = listener.local_addr()?;
    let metrics_addr = health_listener.local_addr()?;
    tracing::info!(%addr, %metrics_addr, mode = ?args.mode, bootonce = ?args.decision.bootonce, "serving admission on https://{addr} (/validate, /mutate); health and metrics on http://{metrics_addr}");

    let task = tokio::spawn(server::run(
        listener,
        health_listener,
        state,
        tls,
        args.shutdown,
        signal,
    ));
    Ok(Started {
        addr,
        metrics_addr,
        metrics,
        task,
    })
}
