//! Command-line interface. Every flag also reads `REBOOT_WEBHOOK_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::{BootOnceMode, Mode, Policy, Trusted};
use crate::cluster::vm_cache::ListMode;
use crate::server::{Limits, Shutdown};
use crate::tls::TlsFiles;

#[derive(Parser, Debug)]
#[command(
    name = "kubevirt-reboot-webhook",
    version,
    about = "Admission webhook for KubeVirt rebootPolicy and runStrategy BootOnce (VEP 0171)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTPS admission webhook.
    Serve(Box<ServeArgs>),
    /// Judge manifests offline with the same decisions as the server.
    Check(CheckArgs),
    /// Write a development CA and serving certificate.
    Certs(CertsArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings shared by `serve` and `check`.
#[derive(Args, Debug, Clone)]
pub struct DecisionArgs {
    /// Namespace where KubeVirt and its service accounts live.
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_KUBEVIRT_NAMESPACE",
        default_value = "kubevirt"
    )]
    pub kubevirt_namespace: String,
    /// Extra trusted user (repeatable; comma separated in the environment).
    #[arg(
        long = "trusted-user",
        env = "REBOOT_WEBHOOK_TRUSTED_USER",
        value_delimiter = ','
    )]
    pub trusted_users: Vec<String>,
    /// Extra trusted group (repeatable; comma separated in the environment).
    #[arg(
        long = "trusted-group",
        env = "REBOOT_WEBHOOK_TRUSTED_GROUP",
        value_delimiter = ','
    )]
    pub trusted_groups: Vec<String>,
    /// `native`: KubeVirt implements runStrategy BootOnce. `compat`: stock
    /// KubeVirt; BootOnce VMs are rewritten to Once + Terminate + annotation.
    #[arg(long, env = "REBOOT_WEBHOOK_BOOTONCE", value_enum, default_value_t)]
    pub bootonce: BootOnceMode,
}

impl DecisionArgs {
    /// The policy both commands decide by: `serve` with its `--mode`,
    /// `check` always enforcing.
    pub fn policy(&self, mode: Mode) -> Policy {
        Policy {
            trusted: Trusted::new(
                &self.kubevirt_namespace,
                &self.trusted_users,
                &self.trusted_groups,
            ),
            mode,
            bootonce: self.bootonce,
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTPS address for POST /validate and /mutate. Port 0 picks a free
    /// port; the bound addresses are printed on stdout once listening.
    #[arg(long, env = "REBOOT_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsFiles,
    /// Static feature gates, comma separated; replaces the KubeVirt resource. "" = all off.
    #[arg(long, env = "REBOOT_WEBHOOK_FEATURE_GATES")]
    pub feature_gates: Option<String>,
    /// Read VirtualMachines from the YAML/JSON files in DIR (or from one
    /// file) instead of the API.
    #[arg(long, env = "REBOOT_WEBHOOK_OBJECTS")]
    pub objects: Option<PathBuf>,
    /// Kubeconfig for cluster mode; default: in-cluster, then KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "REBOOT_WEBHOOK_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces whose VirtualMachines are cached (repeatable); default all.
    #[arg(
        long = "watch-namespace",
        env = "REBOOT_WEBHOOK_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// How the VirtualMachine cache lists, at start and after a failed
    /// watch: `auto` (a streaming list, pages where the API server refuses
    /// it), `streaming`, `paginated` or `unpaginated`.
    #[arg(long, env = "REBOOT_WEBHOOK_VM_LIST_MODE", value_enum, default_value_t)]
    pub vm_list_mode: ListMode,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// `warn` turns every policy denial into an allowed response with
    /// warnings; a mutation that cannot read the VMI's owner still denies.
    #[arg(long, env = "REBOOT_WEBHOOK_MODE", value_enum, default_value_t)]
    pub mode: Mode,
    /// Plain HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub shutdown: Shutdown,
    #[command(flatten)]
    pub limits: Limits,
    /// Log format.
    #[arg(long, env = "REBOOT_WEBHOOK_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Hidden, for `make e2e`'s race scenario only: decide VMI owners from
    /// the cache without the freshness fence, as before it, to show the
    /// wrong verdicts the fence prevents. Never in a cluster.
    #[arg(long, hide = true)]
    pub e2e_skip_owner_fence: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Feature gates, comma separated ("" = all off).
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_FEATURE_GATES",
        default_value = "RecreateVMIOnReboot"
    )]
    pub feature_gates: String,
    /// VirtualMachine manifests (a directory or a file) that VMIs may be owned by.
    #[arg(long, env = "REBOOT_WEBHOOK_OBJECTS")]
    pub objects: Option<PathBuf>,
    /// Also read the subdirectories of directories given (as `kubectl apply -R`).
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Judge the objects as created by this user.
    #[arg(long = "as", default_value = "kubernetes-admin")]
    pub user: String,
    /// Groups of that user (repeatable).
    #[arg(long = "as-group")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// As in `serve`: `warn` turns every policy denial into an allowed
    /// response with warnings (exit 0); a VMI whose owner cannot be read
    /// still denies.
    #[arg(long, env = "REBOOT_WEBHOOK_MODE", value_enum, default_value_t)]
    pub mode: Mode,
    /// Namespaces the installed webhook is never called for (its
    /// configurations' namespaceSelector): their objects are not judged.
    /// Repeatable or comma separated; "" judges every namespace.
    #[arg(
        long = "exempt-namespace",
        value_delimiter = ',',
        default_value = "kube-system,kubevirt-reboot-webhook"
    )]
    pub exempt_namespaces: Vec<String>,
    /// Output format: human text or the AdmissionResponses as JSON.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
    /// Manifest files or directories (YAML or JSON, multi-document; in a
    /// directory the *.yaml, *.yml and *.json files); `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name or IP for the serving certificate (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
}
