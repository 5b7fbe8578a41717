//! What `check` and `--objects` accept: any valid YAML stream (JSON
//! documents separated by `---` too), one JSON document, a JSON array, a
//! `kind: List`, and directories (`-R` for their subdirectories); errors
//! name the file, the document and the position, once.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use support::{bin_command, examples};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `check --output json ARGS`: the judged objects (exit 0 or 1 expected).
fn judged(args: &[&str], paths: &[&Path]) -> (i32, Vec<Value>) {
    let out = bin_command()
        .args(["check", "--output", "json"])
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "exit {code}: {}", stderr(&out));
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

fn vm(name: &str, run_strategy: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"runStrategy": run_strategy, "template": {"spec": {"domain": {"devices": {}}}}}
    })
}

fn vmi(owner: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": owner, "namespace": "default",
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "name": owner, "uid": format!("uid-{owner}"), "controller": true}]},
        "spec": {"domain": {"devices": {}}}
    })
}

/// JSON documents separated by `---` (pretty-printed, as `jq` writes them),
/// one JSON document, a JSON array and a `kind: List` are all read.
#[test]
fn json_in_every_shape_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
    let files = [
        (
            "stream.yaml",
            format!(
                "{}\n---\n{}\n",
                pretty(&vm("a", "BootOnce")),
                pretty(&vmi("a"))
            ),
            2,
        ),
        ("one.json", pretty(&vm("b", "Always")), 1),
        (
            "array.json",
            pretty(&json!([vm("c", "BootOnce"), vmi("c")])),
            2,
        ),
        (
            "list.json",
            pretty(
                &json!({"apiVersion": "v1", "kind": "List", "items": [vm("d", "BootOnce"), vmi("d")]}),
            ),
            2,
        ),
    ];
    for (name, text, objects) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, judged) = judged(&[], &[&path]);
        assert_eq!(code, 0, "{name}: {judged:?}");
        assert_eq!(judged.len(), objects, "{name}");
        // Where a VMI is next to its BootOnce owner, it is stamped.
        if objects == 2 {
            assert_eq!(judged[1]["kind"], "VirtualMachineInstance", "{name}");
            assert_eq!(judged[1]["mutation"]["patchType"], "JSONPatch", "{name}");
        }
    }
}

/// Directories are read like `kubectl apply -f DIR`: the YAML and JSON
/// files in them, other files skipped; `-R` also reads subdirectories.
/// `--objects` takes a directory or a file.
#[test]
fn directories_and_recursive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("vm.yaml"), vm("top", "Always").to_string()).unwrap();
    std::fs::write(root.join("README.md"), "# not a manifest: {{").unwrap();
    std::fs::write(root.join("notes.txt"), "kind: [broken").unwrap();
    std::fs::write(root.join(".git/config.json"), "{broken").unwrap();
    std::fs::write(root.join("sub/vm.yml"), vm("sub", "BootOnce").to_string()).unwrap();
    std::fs::write(root.join("sub/deeper/vmi.json"), vmi("sub").to_string()).unwrap();

    let (_, flat) = judged(&[], &[root]);
    let names: Vec<&str> = flat.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["top"], "only the directory's own manifest files");

    let (_, all) = judged(&["-R"], &[root]);
    let sources: Vec<String> = all
        .iter()
        .map(|j| {
            let s = j["source"].as_str().unwrap();
            s.strip_prefix(root.to_str().unwrap())
                .unwrap_or(s)
                .to_owned()
        })
        .collect();
    assert_eq!(
        sources,
        ["/vm.yaml", "/sub/vm.yml", "/sub/deeper/vmi.json"],
        "files before subdirectories, sorted; hidden directories skipped"
    );
    // The VMI's owner came from another directory of the same run.
    assert_eq!(all[2]["mutation"]["patchType"], "JSONPatch");

    // --objects with -R reads the tree; and a single file works too.
    let vmi_only = root.join("sub/deeper/vmi.json");
    for objects in [root.to_path_buf(), root.join("sub/vm.yml")] {
        let (_, j) = judged(
            &["-R", "--objects", objects.to_str().unwrap()],
            &[&vmi_only],
        );
        assert_eq!(j[0]["mutation"]["patchType"], "JSONPatch", "{objects:?}");
    }

    // The repository's own examples directory.
    let (code, j) = judged(&[], &[&examples()]);
    assert_eq!(code, 0);
    assert_eq!(j.len(), 3);
}

/// A broken file: exit 2, one line naming the file, the document and the
/// position; an OS error appears once.
#[test]
fn errors_name_file_document_and_position_once() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        format!("{}\n---\n{{\n  \"kind\": [1, 2}}\n", vm("a", "Always")),
    )
    .unwrap();
    let out = bin_command().arg("check").arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("broken.yaml: document 2: ") && err.contains("line 4 column"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    for (path, os) in [
        ("/nonexistent/vm.yaml", "No such file or directory"),
        ("/nonexistent-dir/", "No such file or directory"),
    ] {
        let out = bin_command().args(["check", path]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot read {path}")), "{err}");
        assert_eq!(err.matches(os).count(), 1, "{path}: once: {err}");
    }
    let out = bin_command()
        .args(["check", "--objects", "/nonexistent/objects"])
        .arg(examples().join("terminate-vm.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).matches("No such file").count(),
        1,
        "{}",
        stderr(&out)
    );
}
