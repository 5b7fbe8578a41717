//! glibc malloc, tuned for `serve`: each heap keeps 8 MiB free at its top
//! instead of handing it back to the kernel after every large review.
//!
//! A review of a large object allocates and frees a few MiB (the body, the
//! JSON parser's scratch for a long string, the decoded string). glibc
//! returns the free top of a heap to the kernel as soon as it passes the
//! trim threshold, and the next review takes it back page by page, each
//! page a fault and a page of zeroes. How much of that a process does
//! depends on where its long-lived allocations happened to land: for the
//! 500 KB VMI, 11 to 214 page faults per review from one process to the
//! next of the same binary, and 1.3 to 2.3 ms of CPU per review with them
//! (bench/README.md, "Page faults"). With `glibc.malloc.top_pad` at 8 MiB
//! it is 0 to 3 faults and about the lowest of those costs, every time.
//! After a burst RSS stays nearer its peak, by at most the pad for each
//! heap; 16 MiB (0 or 1 fault) raised the benchmark's peak RSS over its
//! 40 MiB target.
//!
//! glibc reads its tunables from `GLIBC_TUNABLES` when a process starts
//! (`mallopt` would take unsafe code, which this crate forbids), so `serve`
//! executes itself again, once, with the tunable added. A `top_pad` already
//! in `GLIBC_TUNABLES` is left as it is: `glibc.malloc.top_pad=0` restores
//! glibc's default.

/// The tunable `serve` adds to `GLIBC_TUNABLES`.
pub const TOP_PAD: &str = "glibc.malloc.top_pad=8388608";

/// Set on the executed image, so that it never executes itself again.
const DONE: &str = "KUBEVIRT_REBOOT_WEBHOOK_MALLOC_TUNED";

/// The `GLIBC_TUNABLES` to run with, or `None` when `current` already
/// sets `top_pad`.
pub fn tunables(current: Option<&str>) -> Option<String> {
    let sets_top_pad = |t: &str| {
        t.split(':')
            .any(|kv| kv.starts_with("glibc.malloc.top_pad="))
    };
    match current.map(str::trim) {
        Some(t) if sets_top_pad(t) => None,
        Some(t) if !t.is_empty() => Some(format!("{t}:{TOP_PAD}")),
        _ => Some(TOP_PAD.to_owned()),
    }
}

/// Executes this program again with [`TOP_PAD`] in `GLIBC_TUNABLES`, the
/// same arguments and everything else inherited (pid, open files). Returns
/// when the tunable is already set, after the first such execution, or when
/// executing fails (then the process runs on with glibc's default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_or_reexec() {
    use std::os::unix::process::CommandExt as _;

    if std::env::var_os(DONE).is_some() {
        return;
    }
    let Some(value) = tunables(std::env::var("GLIBC_TUNABLES").ok().as_deref()) else {
        return;
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("note: running without {TOP_PAD}: {e}");
            return;
        }
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .env(DONE, "1")
        .exec();
    eprintln!("note: running without {TOP_PAD}: could not execute again: {err}");
}

/// Not glibc on Linux: nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_or_reexec() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_pad_is_added_once_and_a_set_one_is_kept() {
        assert_eq!(tunables(None).as_deref(), Some(TOP_PAD));
        assert_eq!(tunables(Some("")).as_deref(), Some(TOP_PAD));
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2")),
            Some(format!("glibc.malloc.arena_max=2:{TOP_PAD}"))
        );
        assert_eq!(tunables(Some("glibc.malloc.top_pad=0")), None);
        assert_eq!(tunables(Some(&format!("a=1:{TOP_PAD}"))), None);
    }
}
