//! Command-line interface. Every flag also reads `REBOOT_WEBHOOK_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::{BootOnceMode, Mode};
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

/// `10s`, `1m30s`, `500ms`, `1.5s`: a Go duration, read by kube's parser.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    // That parser reads "" as 0s, and panics on a negative part (`1s-2s`) or
    // on a sum too large for a Duration: numbers of at most nine digits
    // cannot get there in the few thousand parts an argument or a request
    // line can hold.
    let unsigned = s
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c.is_alphabetic());
    let small = s.split(|c: char| !c.is_ascii_digit()).all(|n| n.len() <= 9);
    if s.is_empty() || !unsigned || !small {
        return None;
    }
    let d = Duration::from(s.parse::<kube::core::Duration>().ok()?);
    (d < Duration::from_secs(1_000_000_000)).then_some(d)
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 5s, 500ms or 1m"))
}

/// A duration above zero (a period: zero would mean "check all the time").
pub(crate) fn period(s: &str) -> Result<Duration, String> {
    duration(s).and_then(|d| {
        if d.is_zero() {
            Err(format!(
                "{s:?} is not a period above zero, like 1s or 500ms"
            ))
        } else {
            Ok(d)
        }
    })
}

/// A byte count: plain bytes, or with a Kubernetes binary suffix
/// (`Ki`, `Mi`, `Gi`), as in `16Mi`.
pub(crate) fn byte_size(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => return Err(format!("{s:?} is not a size like 16Mi, 512Ki or 1048576")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size like 16Mi, 512Ki or 1048576"))
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
    /// Read VirtualMachines from the YAML/JSON files in DIR instead of the API.
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
    #[arg(
        long,
        env = "REBOOT_WEBHOOK_VM_LIST_MODE",
        value_enum,
        default_value_t
    )]
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

#[cfg(test)]
mod tests {
    use super::{byte_size, parse_go_duration, period};
    use std::time::Duration;

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("10s", Some(10_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1.5s", Some(1500)),
            ("", None),
            ("10", None),
            ("s", None),
            ("10x", None),
        ] {
            assert_eq!(
                parse_go_duration(s).map(|d| d.as_millis() as u64),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn go_durations_kube_would_panic_on_are_refused() {
        for s in ["1s-2s", "-5s", "+5s", "9999999999h", "1s 2s"] {
            assert_eq!(parse_go_duration(s), None, "{s:?}");
        }
        assert_eq!(
            parse_go_duration("999999999ms"),
            Some(Duration::from_millis(999_999_999))
        );
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(
            parse_go_duration("0"),
            Some(Duration::ZERO),
            "as Go reads it"
        );
        assert_eq!(parse_go_duration("277778h"), None, "over 1e9 s");
    }

    #[test]
    fn periods_are_above_zero() {
        assert_eq!(period("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(period("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0", "0s", "0ms", "", "1x"] {
            assert!(period(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("16Mi"), Ok(16 << 20));
        assert_eq!(byte_size("512Ki"), Ok(512 << 10));
        assert_eq!(byte_size("1Gi"), Ok(1 << 30));
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "0",
            "0Mi",
            "16M",
            "16MB",
            "Mi",
            "-1",
            "1.5Mi",
            "99999999999999999999Gi",
            "17179869184Gi",
        ] {
            assert!(byte_size(bad).is_err(), "{bad:?}");
        }
    }
}
