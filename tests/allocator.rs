//! `serve` runs with glibc's heap top padding (src/allocator.rs): it
//! executes itself once with `glibc.malloc.top_pad` in `GLIBC_TUNABLES`,
//! keeps its pid, arguments and stdout, and leaves a `top_pad` that was
//! already set alone.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use kubevirt_reboot_webhook::allocator::TOP_PAD;
use support::{serve_command, standalone_flags, Certs, Spawned};

/// The child's environment as it runs, from /proc.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("read /proc/PID/environ")
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn tunables(pid: u32) -> Option<String> {
    environ(pid)
        .into_iter()
        .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES=").map(str::to_owned))
}

#[test]
fn serve_runs_with_the_heap_top_pad() {
    let certs = Certs::new();
    let mut cmd = serve_command(&certs);
    cmd.args(standalone_flags()).env_remove("GLIBC_TUNABLES");
    let server = Spawned::start(&mut cmd, Duration::from_secs(30));
    // The same pid served (it printed its addresses) and runs with the tunable.
    assert_eq!(tunables(server.id()).as_deref(), Some(TOP_PAD));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.id())).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("RecreateVMIOnReboot"),
        "the arguments are kept"
    );
}

#[test]
fn a_top_pad_already_set_is_kept() {
    let certs = Certs::new();
    for set in ["glibc.malloc.top_pad=0", "glibc.malloc.arena_max=4"] {
        let mut cmd = serve_command(&certs);
        cmd.args(standalone_flags()).env("GLIBC_TUNABLES", set);
        let server = Spawned::start(&mut cmd, Duration::from_secs(30));
        let want = if set.contains("top_pad") {
            set.to_owned()
        } else {
            format!("{set}:{TOP_PAD}")
        };
        assert_eq!(tunables(server.id()), Some(want));
    }
}
