//! External programs the manifests, chart and monitoring tests run: Helm
//! (built by `make helm` from e2e/helm at its pinned version), kubectl and
//! promtool.
//!
//! A missing program skips the test locally, and fails it in CI
//! (`CI=true`), where .ci/run installs all three. A skip is reported where a
//! person sees it: `make test` sets `KRW_TEST_SKIPS` to a file, each skip
//! adds a line to it (test, program, how to get it), and the Makefile ends
//! with a line naming what was skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the tests run in CI: `CI` set to anything but empty, `0` or
/// `false`, as CI systems set it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

/// The program, or `None` (after recording the skip) when it is missing
/// outside CI.
fn found(name: &str, path: Option<PathBuf>, how: &str) -> Option<PathBuf> {
    if let Some(p) = path {
        return Some(p);
    }
    assert!(!in_ci(), "{name} is needed in CI and was not found: {how}");
    record_skip(&format!("{name} not found ({how})"));
    None
}

/// The running test as `binary::test`: libtest names each test's thread
/// after the test; the binary is `NAME-HASH`.
fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem()?.to_str().map(str::to_owned))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, _hash)) => name.to_owned(),
            None => stem,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// Notes on stdout (seen with `--nocapture`) that this test skipped its
/// checks, and appends `TEST<tab>WHY` to the file `KRW_TEST_SKIPS` names, for
/// `make test` to report.
pub fn record_skip(why: &str) {
    let test = current_test();
    println!("note: {why}; skipping {test}");
    let Some(file) = std::env::var_os("KRW_TEST_SKIPS").filter(|v| !v.is_empty()) else {
        return;
    };
    // One write of one short line: appends from parallel tests do not mix.
    let line = format!("{test}\t{why}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        panic!("recording the skip in {}: {e}", Path::new(&file).display());
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A version of a module that e2e/helm/go.mod requires.
pub fn gomod_version(module: &str) -> String {
    let path = repo().join("e2e/helm/go.mod");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(module)).then(|| words.next().map(str::to_owned))?
        })
        .unwrap_or_else(|| panic!("{module} is not required in {}", path.display()))
}

/// `$HELM`, else where `make helm` puts the pinned release (the Makefile's
/// HELM_CACHE: `$KRW_CACHE` or `${XDG_CACHE_HOME:-~/.cache}/kubevirt-reboot-webhook`,
/// then `helm-<version>/helm`).
pub fn helm() -> Option<PathBuf> {
    let path = match std::env::var_os("HELM").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            let cache = std::env::var_os("KRW_CACHE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                        .map(|c| c.join("kubevirt-reboot-webhook"))
                });
            cache
                .map(|c| {
                    c.join(format!("helm-{}", gomod_version("helm.sh/helm/v3")))
                        .join("helm")
                })
                .filter(|p| p.is_file())
        }
    };
    found("helm", path, "run `make helm` or set HELM")
}

/// The program `$var` names, else `name` on PATH.
fn env_or_path(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| on_path(name))
}

/// `$KUBECTL`, else kubectl on PATH (as the Makefile's `KUBECTL`).
pub fn kubectl() -> Option<PathBuf> {
    let path = env_or_path("KUBECTL", "kubectl");
    found("kubectl", path, "put kubectl on PATH or set KUBECTL")
}

pub fn promtool() -> Option<PathBuf> {
    let path = env_or_path("PROMTOOL", "promtool");
    found(
        "promtool",
        path,
        "apt-get install prometheus, or set PROMTOOL",
    )
}

/// Runs a program; its stdout on success, else stdout and stderr as the error.
pub fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {} failed ({}):\n{stdout}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a program that must succeed.
pub fn ok(program: &Path, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The documents of a multi-document YAML text, empty ones left out.
pub fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("document {i}: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The objects `kubectl kustomize DIR` renders; panics when it fails.
pub fn kustomize(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = ok(kubectl, &["kustomize", dir.to_str().expect("utf-8 path")]);
    yaml_docs(&out).unwrap_or_else(|e| panic!("kubectl kustomize {}: {e}", dir.display()))
}
