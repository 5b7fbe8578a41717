//! The two server processes: their set-up (certificates, the owner VM),
//! start on a loopback port, and what `/proc` says about them and the
//! machine.

use std::fs;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use kubevirt_reboot_webhook::allocator;
use kubevirt_reboot_webhook_bench::payloads;

use crate::options::{Opts, Which};

/// A server process; killed (by pid) when dropped.
pub struct Server {
    pub which: Which,
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a fresh server on loopback port 0 and reads the address it bound
/// from the `listening admission=https://ADDR ...` line it prints; the rest
/// of its output goes to its log file.
pub fn start(which: Which, o: &Opts) -> anyhow::Result<Server> {
    let certs = o.workdir.join("certs");
    let log_path = o.workdir.join(format!("{}.log", which.name()));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = match which {
        Which::Ours => {
            let mut c = Command::new(&o.ours);
            c.arg("serve")
                .args(["--listen", "127.0.0.1:0"])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .arg("--feature-gates")
                .arg("RecreateVMIOnReboot")
                .arg("--objects")
                .arg(o.workdir.join("objects"))
                .arg("--shutdown-delay")
                .arg("0s");
            c
        }
        Which::Floor => {
            let mut c = Command::new(&o.floor);
            c.args(["--listen", "127.0.0.1:0"]);
            c
        }
    };
    // Both with glibc malloc as `serve` sets it up for itself (src/allocator.rs):
    // ours executes itself with it, the floor is given it, so that neither
    // one's costs depend on its heap's luck (bench/README.md, "Page faults").
    match which {
        Which::Ours => cmd.env_remove("GLIBC_TUNABLES"),
        Which::Floor => cmd.env("GLIBC_TUNABLES", allocator::TOP_PAD),
    };
    cmd.arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", which.name()))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead as _, Write as _};
        let (mut tx, mut log) = (Some(tx), log);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(tx) = tx.take_if(|_| line.starts_with("listening ")) {
                let _ = tx.send(line.clone());
            }
            let _ = writeln!(log, "{line}");
        }
    });
    // Killed on any early return below.
    let mut server = Server {
        which,
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let line = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(line) => line,
        Err(_) => {
            let status = server.child.try_wait()?;
            bail!(
                "{} printed no listening address within 15 s (exit: {status:?}); see {}",
                which.name(),
                log_path.display()
            );
        }
    };
    server.addr = line
        .strip_prefix("listening admission=https://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{}: unexpected line {line:?}", which.name()))?;
    Ok(server)
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, so utime (14) and stime (15) are 11 and 12.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Busy ticks of the whole machine (all CPUs), from `/proc/stat`.
pub fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: user, nice, system and
    // steal (another guest had our CPU). Interrupt time is left out: loopback
    // networking lands there and belongs to the benchmark itself.
    [0, 1, 2, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum()
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn prepare(o: &Opts) -> anyhow::Result<()> {
    for bin in [&o.ours, &o.floor] {
        if !bin.exists() {
            bail!("{} not found; run `make -C bench run`", bin.display());
        }
    }
    fs::create_dir_all(o.workdir.join("objects"))?;
    for log in ["ours.log", "floor.log"] {
        let _ = fs::remove_file(o.workdir.join(log));
    }
    let certs = o.workdir.join("certs");
    let status = Command::new(&o.ours)
        .arg("certs")
        .arg("--out")
        .arg(&certs)
        .arg("--host")
        .arg("localhost")
        .arg("--host")
        .arg("127.0.0.1")
        .status()
        .context("kubevirt-reboot-webhook certs")?;
    if !status.success() {
        bail!("kubevirt-reboot-webhook certs failed: {status}");
    }
    fs::write(
        o.workdir.join("objects/owner-vm.json"),
        serde_json::to_vec_pretty(&payloads::owner_vm())?,
    )?;
    Ok(())
}
