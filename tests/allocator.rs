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

/// The child's environment block as it runs, from /proc, NULs and all:
/// glibc writes a NUL after each tunable's value in `GLIBC_TUNABLES` as it
/// parses it, so its later tunables show up as pieces of their own.
fn environ(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    String::from_utf8_lossy(&raw).into_owned()
}

/// Whether `serve` executed itself again (it marks the new image).
fn reexecuted(env: &str) -> bool {
    env.split('\0')
        .any(|kv| kv == "KUBEVIRT_REBOOT_WEBHOOK_MALLOC_TUNED=1")
}

#[test]
fn serve_runs_with_the_heap_top_pad() {
    let certs = Certs::new();
    let mut cmd = serve_command(&certs);
    cmd.args(standalone_flags()).env_remove("GLIBC_TUNABLES");
    let server = Spawned::start(&mut cmd, Duration::from_secs(30));
    // The same pid served (it printed its addresses) and runs with the tunable.
    let env = environ(server.id());
    assert!(reexecuted(&env), "{env:?}");
    assert!(
        env.split('\0')
            .any(|kv| kv == format!("GLIBC_TUNABLES={TOP_PAD}")),
        "{env:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.id())).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("RecreateVMIOnReboot"),
        "the arguments are kept"
    );
}

#[test]
fn a_top_pad_already_set_is_kept() {
    let certs = Certs::new();
    // Set by the user: no second execution, the value as it was.
    let mut cmd = serve_command(&certs);
    cmd.args(standalone_flags())
        .env("GLIBC_TUNABLES", "glibc.malloc.top_pad=0");
    let server = Spawned::start(&mut cmd, Duration::from_secs(30));
    let env = environ(server.id());
    assert!(!reexecuted(&env), "{env:?}");
    assert!(!env.contains(TOP_PAD), "{env:?}");
    drop(server);
    // Other tunables: ours is added after them.
    let mut cmd = serve_command(&certs);
    cmd.args(standalone_flags())
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=4");
    let server = Spawned::start(&mut cmd, Duration::from_secs(30));
    let env = environ(server.id());
    assert!(reexecuted(&env), "{env:?}");
    assert!(
        env.contains("GLIBC_TUNABLES=glibc.malloc.arena_max=4") && env.contains(TOP_PAD),
        "{env:?}"
    );
}
