//! Cluster mode against the in-process fake Kubernetes API
//! (`support::fake_api`): the real server, started with `--kubeconfig`,
//! watching KubeVirt resources for the gate and VirtualMachines for owners.
//!
//! Every wait polls with short sleeps until what it waits for is seen, with
//! a deadline only against a hang; no test sleeps a fixed time or wants
//! something done within a time (that is for benchmarks: `make
//! bench-scale`'s `watches_recover_promptly_after_an_outage`).

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_api::{
    at_generation, built_from, kubevirt_cr, realistic_vm, realistic_vmi_create, uid, Down, FakeApi,
    Res, Streaming, Verb,
};
use support::{bootonce_stamp, decoded_patch, review, serial, wait_until, TestServer};

const GATE: &str = "RecreateVMIOnReboot";
const GATE_MESSAGE: &str = "requires the feature gate RecreateVMIOnReboot";
const WAIT: Duration = Duration::from_secs(10);
/// A deadline only against a hang, for waits that take seconds by design.
const HANG: Duration = Duration::from_secs(60);

/// The fake API, the server pointed at it, and the kubeconfig file.
struct Cluster {
    fake: FakeApi,
    server: TestServer,
    _kubeconfig: tempfile::NamedTempFile,
}

impl Cluster {
    async fn start(fake: FakeApi, extra: &[&str]) -> Cluster {
        let kubeconfig = fake.kubeconfig();
        let path = kubeconfig.path().display().to_string();
        let mut flags = vec!["--kubeconfig", path.as_str()];
        flags.extend_from_slice(extra);
        let server = TestServer::start(&flags).await;
        Cluster {
            fake,
            server,
            _kubeconfig: kubeconfig,
        }
    }

    /// Starts and waits for `/readyz` 200.
    /// Ready and settled: both watches (VMs, KubeVirt) are open.
    ///
    /// Every start-up request has then been made, so request counts taken
    /// from now on see only what the test causes.
    async fn ready(fake: FakeApi) -> Cluster {
        Cluster::ready_with(fake, &[]).await
    }

    /// [`ready`](Self::ready) with these extra flags.
    async fn ready_with(fake: FakeApi, extra: &[&str]) -> Cluster {
        let c = Cluster::start(fake, extra).await;
        c.wait_ready().await;
        for r in [Res::Vm, Res::KubeVirt] {
            c.fake.wait_watches(r, 1, WAIT).await;
        }
        c
    }

    async fn readyz(&self) -> (u16, String) {
        self.server
            .get_text(&self.server.metrics_url("/readyz"))
            .await
    }

    async fn wait_ready(&self) {
        wait_until("/readyz 200", WAIT, || async {
            self.readyz().await.0 == 200
        })
        .await;
    }

    async fn lookups(&self, result: &str) -> f64 {
        self.server
            .metric(&format!(
                "kubevirt_reboot_webhook_owner_lookups_total{{result=\"{result}\"}}"
            ))
            .await
    }

    /// Reads of the freshness fence for `reason` (`generation`, `uid`).
    async fn fences(&self, reason: &str) -> f64 {
        self.server
            .metric(&format!(
                "kubevirt_reboot_webhook_owner_fence_reads_total{{reason=\"{reason}\"}}"
            ))
            .await
    }

    async fn cached_vms(&self) -> usize {
        self.server
            .metric("kubevirt_reboot_webhook_vm_cache_objects")
            .await as usize
    }

    async fn wait_cached_vms(&self, n: usize) {
        wait_until(&format!("vm_cache_objects == {n}"), WAIT, || async {
            self.cached_vms().await == n
        })
        .await;
    }

    /// The `response` of a review posted to `path`.
    async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, got) = self.server.post(path, review).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["response"]["uid"], review["request"]["uid"]);
        got["response"].clone()
    }

    /// `/mutate` of a VMI CREATE owned by VM `owner` with `owner_uid`.
    async fn mutate_vmi(&self, ns: &str, owner: &str, owner_uid: &str) -> Value {
        self.review("/mutate", &vmi_create(ns, owner, owner_uid))
            .await
    }

    /// Whether a VM CREATE with `rebootPolicy: Terminate` is allowed.
    async fn terminate_allowed(&self) -> bool {
        let resp = self.review("/validate", &vm_create_terminate()).await;
        let allowed = resp["allowed"].as_bool().expect("allowed");
        if !allowed {
            let msg = resp["status"]["message"].as_str().unwrap_or("");
            assert!(
                msg.contains(GATE_MESSAGE),
                "denied for another reason: {resp}"
            );
        }
        allowed
    }
}

/// What virt-controller sends when it creates the VMI of VM `owner`.
fn vmi_create(ns: &str, owner: &str, owner_uid: &str) -> Value {
    realistic_vmi_create(ns, owner, owner_uid, serial())
}

/// A user's VM CREATE with `rebootPolicy: Terminate`: needs the gate.
fn vm_create_terminate() -> Value {
    let vm = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {"domain": {
                "devices": {}, "resources": {"requests": {"memory": "1Gi"}},
                "rebootPolicy": "Terminate"}}}
        }
    });
    review("VirtualMachine", "CREATE", &vm, None)
}

/// The response is allowed and stamps the VMI as BootOnce.
fn assert_bootonce_patch(resp: &Value) {
    assert_eq!(resp["allowed"], true, "{resp}");
    let p = decoded_patch(resp).unwrap_or_else(|e| panic!("{e}: {resp}"));
    assert_eq!(p, Some(bootonce_stamp()), "{resp}");
}

/// The response is allowed and leaves the VMI alone.
fn assert_no_patch(resp: &Value) {
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(resp.get("patch").is_none(), "unexpected patch: {resp}");
}

fn vm(ns: &str, name: &str, i: u64, run_strategy: &str) -> Value {
    realistic_vm(ns, name, &uid(i), run_strategy)
}

#[test]
fn realistic_vm_is_about_three_kilobytes() {
    let v = vm("tenant-a", "vm-00001", 1, "BootOnce");
    let n = v.to_string().len();
    assert!((2500..=4000).contains(&n), "{n} bytes");
}

// 1. The gate follows the KubeVirt resource: enable list, disable list,
//    Beta default by observed version, and off without a resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_flips_with_the_kubevirt_resource() {
    let c = Cluster::ready(FakeApi::start().await).await;
    assert!(
        !c.terminate_allowed().await,
        "no KubeVirt resource: gate off"
    );
    assert_eq!(
        c.server
            .metric("kubevirt_reboot_webhook_feature_gate_enabled")
            .await,
        0.0
    );

    // (featureGates, disabledFeatureGates, observedKubeVirtVersion, gate on?, why)
    type Step = (
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        bool,
        &'static str,
    );
    let steps: [Step; 6] = [
        (&[], &[], "v1.8.0", false, "no lists, before Beta"),
        (&[GATE], &[], "v1.8.0", true, "featureGates lists it"),
        (
            &[],
            &[GATE],
            "v1.9.0",
            false,
            "moved to disabledFeatureGates",
        ),
        (&[], &[], "v1.9.0", true, "Beta default at v1.9.0"),
        (&[], &[], "v1.8.4", false, "before Beta again"),
        (&["RebootPolicy"], &[], "v1.8.4", true, "upstream gate name"),
    ];
    for (enabled, disabled, version, want, why) in steps {
        c.fake.apply(
            Res::KubeVirt,
            kubevirt_cr("kubevirt", enabled, disabled, Some(version)),
        );
        wait_until(why, WAIT, || async { c.terminate_allowed().await == want }).await;
        let gauge = c
            .server
            .metric("kubevirt_reboot_webhook_feature_gate_enabled")
            .await;
        assert_eq!(gauge, want as u8 as f64, "{why}: gauge");
    }

    // A KubeVirt resource elsewhere does not count.
    c.fake.apply(
        Res::KubeVirt,
        kubevirt_cr("other", &["RecreateVMIOnReboot"], &[], Some("v1.9.0")),
    );
    c.fake.delete(Res::KubeVirt, "kubevirt", "kubevirt");
    wait_until("resource deleted: gate off", WAIT, || async {
        !c.terminate_allowed().await
    })
    .await;
    assert_eq!(
        c.fake.count(Some(Verb::Get), None),
        0,
        "the gate never GETs"
    );
}

// 1b. The gate from the initial list is in force as soon as /readyz says so,
//     in the namespace given by --kubevirt-namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_from_the_initial_list_in_a_custom_namespace() {
    let fake = FakeApi::start().await;
    fake.apply(
        Res::KubeVirt,
        kubevirt_cr("kubevirt", &[], &["RecreateVMIOnReboot"], Some("v1.9.0")),
    );
    fake.apply(
        Res::KubeVirt,
        kubevirt_cr("kv-system", &[], &[], Some("v1.9.0")),
    );
    let c = Cluster::start(fake, &["--kubevirt-namespace", "kv-system"]).await;
    c.wait_ready().await;
    assert!(c.terminate_allowed().await, "Beta default in kv-system");
    let lists = c.fake.requests();
    assert!(
        lists.iter().any(|s| s.verb == Verb::List
            && s.path == "/apis/kubevirt.io/v1/namespaces/kv-system/kubevirts"),
        "{lists:?}"
    );
}

// 2. A VM created after start reaches the cache through the watch: its VMI
//    gets the BootOnce patch without a GET; updates and deletes follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_created_after_start_is_seen_through_the_watch() {
    let c = Cluster::ready(FakeApi::start().await).await;
    assert_eq!(c.cached_vms().await, 0);
    c.fake.wait_watches(Res::Vm, 1, WAIT).await;

    c.fake.apply(Res::Vm, vm("tenant-a", "late", 7, "BootOnce"));
    c.wait_cached_vms(1).await;
    assert_bootonce_patch(&c.mutate_vmi("tenant-a", "late", &uid(7)).await);
    assert_eq!(
        c.fake.count(Some(Verb::Get), None),
        0,
        "served from the cache"
    );
    assert_eq!(c.lookups("cache").await, 1.0);

    // MODIFIED: no longer BootOnce.
    c.fake.apply(Res::Vm, vm("tenant-a", "late", 7, "Always"));
    wait_until("runStrategy change applied", WAIT, || async {
        c.mutate_vmi("tenant-a", "late", &uid(7))
            .await
            .get("patch")
            .is_none()
    })
    .await;
    assert_eq!(c.fake.count(Some(Verb::Get), None), 0);

    // DELETED: gone from the cache; the next lookup asks the API once.
    c.fake.delete(Res::Vm, "tenant-a", "late");
    c.wait_cached_vms(0).await;
    assert_no_patch(&c.mutate_vmi("tenant-a", "late", &uid(7)).await);
    assert_eq!(c.fake.count(Some(Verb::Get), None), 1);
    assert_eq!(c.lookups("not_found").await, 1.0);
}

// 3. A VMI CREATE for a cached VM makes no API request at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_owner_lookups_make_no_api_requests() {
    let fake = FakeApi::start().await;
    fake.apply(Res::Vm, vm("tenant-a", "once", 1, "BootOnce"));
    fake.apply(Res::Vm, vm("tenant-a", "always", 2, "Always"));
    fake.apply(Res::Vm, vm("tenant-b", "halted", 3, "Halted"));
    let c = Cluster::ready(fake).await;
    c.wait_cached_vms(3).await;
    c.fake.wait_watches(Res::Vm, 1, WAIT).await;

    let before = c.fake.total();
    for _ in 0..3 {
        assert_bootonce_patch(&c.mutate_vmi("tenant-a", "once", &uid(1)).await);
        assert_no_patch(&c.mutate_vmi("tenant-a", "always", &uid(2)).await);
        assert_no_patch(&c.mutate_vmi("tenant-b", "halted", &uid(3)).await);
    }
    assert_eq!(c.fake.total(), before, "{:?}", c.fake.requests());
    assert_eq!(c.lookups("cache").await, 9.0);
    assert_eq!(c.lookups("api").await, 0.0);
    assert_eq!(c.fences("uid").await + c.fences("generation").await, 0.0);
    // A cached VM with another uid than the reference (deleted and
    // re-created?) is not taken for "the owner is gone": the API decides,
    // with one GET (here it has the cached VM, so the reference's VM is
    // gone: no patch).
    assert_no_patch(&c.mutate_vmi("tenant-a", "once", &uid(99)).await);
    assert_eq!(c.fake.count(Some(Verb::Get), None), 1);
    assert_eq!(c.fences("uid").await, 1.0);
    assert_eq!(c.lookups("api").await, 1.0);
}

// 4. A cache miss is exactly one GET of that VM, and its uid is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_miss_is_one_get_and_checks_the_uid() {
    let c = Cluster::ready(FakeApi::start().await).await;
    c.fake.wait_watches(Res::Vm, 1, WAIT).await;
    // Exists for GET but was never listed or watched.
    c.fake
        .put_hidden(Res::Vm, vm("tenant-a", "fresh", 5, "BootOnce"));
    let path = "/apis/kubevirt.io/v1/namespaces/tenant-a/virtualmachines/fresh";

    let before = c.fake.total();
    assert_bootonce_patch(&c.mutate_vmi("tenant-a", "fresh", &uid(5)).await);
    assert_eq!(c.fake.total(), before + 1, "{:?}", c.fake.requests());
    assert_eq!(c.fake.count(Some(Verb::Get), Some(Res::Vm)), 1);
    assert_eq!(c.fake.count_path(path), 1);
    assert_eq!(c.lookups("api").await, 1.0);

    // Same name, another uid: the VM the VMI belongs to is gone: no patch.
    assert_no_patch(&c.mutate_vmi("tenant-a", "fresh", &uid(6)).await);
    assert_eq!(c.fake.count_path(path), 2);

    // No such VM: 404, one GET, no patch.
    assert_no_patch(&c.mutate_vmi("tenant-a", "nope", &uid(8)).await);
    assert_eq!(
        c.fake
            .count_path("/apis/kubevirt.io/v1/namespaces/tenant-a/virtualmachines/nope"),
        1
    );
    assert_eq!(c.lookups("not_found").await, 1.0);
    assert_eq!(c.fake.total(), before + 3, "{:?}", c.fake.requests());
}

// 5. API down and the owner not cached: denied, asking to retry; cached
//    owners keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_and_cache_miss_is_denied_with_retry() {
    let fake = FakeApi::start().await;
    fake.apply(Res::Vm, vm("tenant-a", "cached", 1, "BootOnce"));
    let c = Cluster::ready(fake).await;
    c.wait_cached_vms(1).await;

    for mode in [Down::Refuse, Down::Unavailable] {
        c.fake.set_down(mode);
        let gets = c.fake.count(Some(Verb::Get), None);
        // The API server's own timeout bounds the wait for the owner.
        let resp = c
            .review(
                "/mutate?timeout=3s",
                &vmi_create("tenant-a", "missing", &uid(2)),
            )
            .await;
        assert_eq!(resp["allowed"], false, "{mode:?}: {resp}");
        let msg = resp["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("retry"), "{mode:?}: {msg}");
        // The lookup failed, not the deadline: retries until the deadline
        // would end in the deadline's message.
        assert!(
            msg.contains("is not cached and reading it from the Kubernetes API failed"),
            "{mode:?}: the lookup failed, not the deadline: {msg}"
        );
        // One attempt, not a burst of retries against a struggling API
        // server.
        let sent = usize::from(mode == Down::Unavailable);
        assert_eq!(c.fake.count(Some(Verb::Get), None), gets + sent, "{mode:?}");

        // The cache still answers for what it holds.
        assert_bootonce_patch(&c.mutate_vmi("tenant-a", "cached", &uid(1)).await);
        // And requests that need no owner are unaffected.
        assert!(!c.terminate_allowed().await);
        c.fake.set_down(Down::Up);
    }
    assert!(c.lookups("error").await >= 2.0);

    // Back up: misses are answered again.
    c.fake
        .put_hidden(Res::Vm, vm("tenant-a", "missing", 2, "BootOnce"));
    assert_bootonce_patch(&c.mutate_vmi("tenant-a", "missing", &uid(2)).await);
}

// 6. /readyz follows the initial lists; /healthz does not depend on the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_cache_sync() {
    // The VM list is slow.
    let fake = FakeApi::start().await;
    fake.apply(Res::Vm, vm("tenant-a", "a", 1, "BootOnce"));
    fake.hold_lists(Res::Vm, true);
    let c = Cluster::start(fake, &[]).await;
    wait_until("only the VM cache unsynced", WAIT, || async {
        c.readyz().await == (503, "not ready: virtualmachine cache not ready\n".into())
    })
    .await;
    wait_until("the VM list arrived", WAIT, || async {
        c.fake.count(Some(Verb::List), Some(Res::Vm)) >= 1
    })
    .await;
    let health = c.server.get_text(&c.server.metrics_url("/healthz")).await;
    assert_eq!(health, (200, "ok\n".into()));
    c.fake.hold_lists(Res::Vm, false);
    c.wait_ready().await;
    assert_eq!(c.cached_vms().await, 1);

    // The KubeVirt list fails.
    let fake = FakeApi::start().await;
    fake.fail_lists(Res::KubeVirt, Some(500));
    let c2 = Cluster::start(fake, &[]).await;
    wait_until("only the gate cache unsynced", WAIT, || async {
        c2.readyz().await == (503, "not ready: kubevirt gate cache not ready\n".into())
    })
    .await;
    c2.fake.fail_lists(Res::KubeVirt, None);
    c2.wait_ready().await;

    // API gone: alive all the same.
    for mode in [Down::Refuse, Down::Unavailable] {
        c2.fake.set_down(mode);
        for _ in 0..5 {
            let health = c2.server.get_text(&c2.server.metrics_url("/healthz")).await;
            assert_eq!(health, (200, "ok\n".into()), "{mode:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c2.fake.set_down(Down::Up);
}

// 7. A 410 relist neither loses nor duplicates entries: changes the watch
//    never delivered (deleted/added/modified while it was broken) show up
//    after the relist, over several pages, and over a streaming list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_410_converges_without_loss_or_duplicates() {
    relist_converges("paginated", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_relist_after_410_converges_without_loss_or_duplicates() {
    relist_converges("auto", 1).await;
}

/// Test 7 with `--vm-list-mode MODE`, whose list of 1,200 VMs is `calls` requests.
async fn relist_converges(mode: &str, calls: usize) {
    const N: u64 = 1200; // three pages of 500
    let fake = FakeApi::start().await;
    let strategy = |i: u64| {
        if i.is_multiple_of(10) {
            "BootOnce"
        } else {
            "Always"
        }
    };
    fake.load(
        Res::Vm,
        (0..N).map(|i| {
            vm(
                &format!("ns-{}", i % 7),
                &format!("vm-{i:05}"),
                i,
                strategy(i),
            )
        }),
    );
    let c = Cluster::ready_with(fake, &["--vm-list-mode", mode]).await;
    assert_eq!(c.cached_vms().await, N as usize);
    assert_eq!(
        c.fake.count(Some(Verb::List), Some(Res::Vm)),
        calls,
        "{mode}: paged by 500, or one streaming list"
    );
    c.fake.wait_watches(Res::Vm, 1, WAIT).await;
    let ns = |i: u64| format!("ns-{}", i % 7);
    let name = |i: u64| format!("vm-{i:05}");

    // Changes the watch never delivers.
    c.fake.delete_silently(Res::Vm, &ns(10), &name(10));
    c.fake.delete_silently(Res::Vm, &ns(11), &name(11));
    c.fake
        .apply_silently(Res::Vm, vm("ns-new", "vm-new", 5000, "BootOnce"));
    c.fake
        .apply_silently(Res::Vm, vm(&ns(20), &name(20), 20, "Always"));
    // Not seen yet: the cache still has vm-10 and knows no vm-new.
    let before = c.fake.total();
    assert_bootonce_patch(&c.mutate_vmi(&ns(10), &name(10), &uid(10)).await);
    assert_eq!(c.fake.total(), before, "vm-10 still cached");

    let lists = c.fake.count(Some(Verb::List), Some(Res::Vm));
    c.fake.expire_watches(Res::Vm);
    c.wait_cached_vms(c.fake.len(Res::Vm)).await;
    assert_eq!(c.cached_vms().await as u64, N - 1);
    assert!(
        c.fake.count(Some(Verb::List), Some(Res::Vm)) >= lists + calls,
        "relisted"
    );
    c.fake.wait_watches(Res::Vm, 1, WAIT).await; // watching again

    let gets = c.fake.count(Some(Verb::Get), None);
    assert_bootonce_patch(&c.mutate_vmi("ns-new", "vm-new", &uid(5000)).await);
    assert_no_patch(&c.mutate_vmi(&ns(20), &name(20), &uid(20)).await);
    for i in (0..N).step_by(37).filter(|i| ![10, 11].contains(i)) {
        let resp = c.mutate_vmi(&ns(i), &name(i), &uid(i)).await;
        match strategy(i) {
            _ if i == 20 => assert_no_patch(&resp),
            "BootOnce" => assert_bootonce_patch(&resp),
            _ => assert_no_patch(&resp),
        }
    }
    assert_eq!(c.fake.count(Some(Verb::Get), None), gets, "all cache hits");
    // Deleted while the watch was broken: gone from the cache (one GET, 404).
    assert_no_patch(&c.mutate_vmi(&ns(10), &name(10), &uid(10)).await);
    assert_eq!(c.fake.count(Some(Verb::Get), None), gets + 1);

    // The resumed watch delivers again.
    c.fake
        .apply(Res::Vm, vm("ns-new", "vm-live", 6000, "BootOnce"));
    c.wait_cached_vms(N as usize).await;

    // The other way to 410: the watch request itself is refused with it.
    let lists = c.fake.count(Some(Verb::List), Some(Res::Vm));
    c.fake.force_gone_next_watch(Res::Vm);
    c.fake.close_watches(Res::Vm);
    wait_until("relisted again", WAIT, || async {
        c.fake.count(Some(Verb::List), Some(Res::Vm)) >= lists + calls
            && c.fake.open_watches(Res::Vm) == 1
    })
    .await;
    c.wait_cached_vms(N as usize).await;
    assert_eq!(c.fake.len(Res::Vm), N as usize);
}

// 8. While the VM watch is not live, a cache hit may be wrong: changes made
//    during an outage (history expired, so the watch cannot replay them)
//    are honoured by the first VMI CREATE after the API returns, and come
//    from the cache again once the watch is back (how soon: `make
//    bench-scale`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_an_outage_are_honoured_at_once_and_cached_again() {
    const STALE: &str = "kubevirt_reboot_webhook_vm_cache_stale";
    for mode in [Down::Refuse, Down::Unavailable] {
        let fake = FakeApi::start().await;
        fake.apply(Res::Vm, vm("tenant-a", "flip", 1, "Always"));
        fake.apply(Res::Vm, vm("tenant-a", "doomed", 2, "BootOnce"));
        let c = Cluster::ready(fake).await;
        c.wait_cached_vms(2).await;
        assert_eq!(c.server.metric(STALE).await, 0.0, "{mode:?}");

        let attempts = c.fake.total() + c.fake.refused();
        c.fake.set_down(mode);
        // An Always VM switched to BootOnce, a BootOnce VM deleted, a new
        // one: none of it reaches the watch.
        c.fake
            .apply_silently(Res::Vm, vm("tenant-a", "flip", 1, "BootOnce"));
        c.fake.delete_silently(Res::Vm, "tenant-a", "doomed");
        c.fake
            .apply_silently(Res::Vm, vm("tenant-a", "fresh", 3, "BootOnce"));
        c.fake.force_gone_next_watch(Res::Vm);
        wait_until("the cache knows it is stale", WAIT, || async {
            c.server.metric(STALE).await == 1.0
        })
        .await;
        let since = c
            .server
            .metric("kubevirt_reboot_webhook_vm_cache_stale_since_timestamp_seconds")
            .await;
        assert!(since > 1.7e9, "{mode:?}: stale since {since}");
        // While the API is down the last known state is all there is.
        let stale_hits = c.lookups("stale_cache").await;
        assert_no_patch(&c.mutate_vmi("tenant-a", "flip", &uid(1)).await);
        assert_eq!(c.lookups("stale_cache").await, stale_hits + 1.0);
        // An outage, not a blip: the watches fail a few more times first
        // (each failure is a request answered 503, or a connection refused).
        wait_until("failed reconnects during the outage", WAIT, || async {
            c.fake.total() + c.fake.refused() >= attempts + 4
        })
        .await;

        c.fake.set_down(Down::Up);
        // The first VMI CREATEs after: each owner as the API has it now.
        assert_bootonce_patch(&c.mutate_vmi("tenant-a", "flip", &uid(1)).await);
        assert_no_patch(&c.mutate_vmi("tenant-a", "doomed", &uid(2)).await);
        assert_bootonce_patch(&c.mutate_vmi("tenant-a", "fresh", &uid(3)).await);

        // And from the cache again, without GETs, once the watch is back.
        wait_until("owners from the cache again", WAIT, || async {
            let gets = c.fake.count(Some(Verb::Get), None);
            let flip = c.mutate_vmi("tenant-a", "flip", &uid(1)).await;
            let fresh = c.mutate_vmi("tenant-a", "fresh", &uid(3)).await;
            assert_bootonce_patch(&flip);
            assert_bootonce_patch(&fresh);
            c.fake.count(Some(Verb::Get), None) == gets
        })
        .await;
        assert_eq!(c.server.metric(STALE).await, 0.0, "{mode:?}");
        // The deleted VM is gone from the cache: a GET that finds nothing.
        assert_no_patch(&c.mutate_vmi("tenant-a", "doomed", &uid(2)).await);
    }
}

// 9. With --watch-namespace, each namespace has its own watch and its own
//    relists: a relist in one namespace sweeps only that namespace, so the
//    VMs of the other (listed by another watch, in that watch's list
//    generation) stay cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_in_one_watched_namespace_sweeps_only_that_namespace() {
    const PER_NS: u64 = 40;
    let fake = FakeApi::start().await;
    fake.load(
        Res::Vm,
        (0..2 * PER_NS).map(|i| {
            let ns = if i < PER_NS { "tenant-a" } else { "tenant-b" };
            vm(ns, &format!("vm-{i:03}"), i, "BootOnce")
        }),
    );
    // Not watched: never cached.
    fake.apply(Res::Vm, vm("tenant-c", "other", 999, "BootOnce"));
    let c = Cluster::start(
        fake,
        &[
            "--watch-namespace",
            "tenant-a",
            "--watch-namespace",
            "tenant-b",
        ],
    )
    .await;
    c.wait_ready().await;
    c.fake.wait_watches(Res::Vm, 2, WAIT).await; // one watch per namespace
    c.wait_cached_vms(2 * PER_NS as usize).await;

    // Both watches end; the first to come back is told its history is gone
    // (410) and relists; the other resumes from where it was.
    let lists = c.fake.count(Some(Verb::List), Some(Res::Vm));
    c.fake.force_gone_next_watch(Res::Vm);
    c.fake.close_watches(Res::Vm);
    wait_until(
        "one namespace relisted and both watch again",
        WAIT,
        || async {
            c.fake.count(Some(Verb::List), Some(Res::Vm)) == lists + 1
                && c.fake.open_watches(Res::Vm) == 2
        },
    )
    .await;
    let relisted = c
        .fake
        .requests()
        .into_iter()
        .rfind(|s| s.verb == Verb::List && s.res == Some(Res::Vm))
        .map(|s| s.path)
        .unwrap();
    assert!(
        relisted.contains("/namespaces/tenant-a/") || relisted.contains("/namespaces/tenant-b/"),
        "{relisted}"
    );
    // The relist completed (its sweep runs at its end) and swept nothing of
    // the other namespace, whose entries carry another watch's list
    // generation.
    wait_until("the relist completed", WAIT, || async {
        c.server
            .metric("kubevirt_reboot_webhook_vm_cache_stale")
            .await
            == 0.0
    })
    .await;
    assert_eq!(
        c.cached_vms().await,
        2 * PER_NS as usize,
        "relisted {relisted}"
    );

    // Every VM of both namespaces still comes from the cache.
    let gets = c.fake.count(Some(Verb::Get), None);
    for i in 0..2 * PER_NS {
        let ns = if i < PER_NS { "tenant-a" } else { "tenant-b" };
        assert_bootonce_patch(&c.mutate_vmi(ns, &format!("vm-{i:03}"), &uid(i)).await);
    }
    assert_eq!(c.fake.count(Some(Verb::Get), None), gets, "all cache hits");
    // Outside the watched namespaces: one GET.
    assert_bootonce_patch(&c.mutate_vmi("tenant-c", "other", &uid(999)).await);
    assert_eq!(c.fake.count(Some(Verb::Get), None), gets + 1);
}

/// When each `res` list call arrived, from the `after`th on.
fn list_arrivals(fake: &FakeApi, res: Res, after: usize) -> Vec<Instant> {
    let lists = fake
        .requests()
        .into_iter()
        .filter(|s| s.verb == Verb::List && s.res == Some(res));
    lists.skip(after).map(|s| s.at).collect()
}

/// Checks that the gaps between list calls grow as the reconnect delays
/// do: the `k`th gap is at least the shortest `k`th delay,
/// min(0.2 s × 2^k, 1.5 s) (each delay is that plus 0-100 % jitter). The
/// client waits its delay before it asks again, so a gap can only come out
/// longer than its delay on a loaded machine, never shorter: a lower bound
/// holds on any machine. (The upper bounds, that the delays are short, are
/// a timing target: `make bench-scale` measures them.)
fn assert_backs_off(what: &str, arrivals: &[Instant]) {
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    for (k, gap) in gaps.iter().enumerate() {
        let shortest = Duration::from_millis(200 << k.min(3)).min(Duration::from_millis(1500));
        assert!(
            *gap >= shortest,
            "{what}: gap {k} between list calls is {gap:?}, shorter than the shortest delay {shortest:?}; gaps {gaps:?}"
        );
    }
}

// 10. Both watches (VirtualMachines, KubeVirt) keep reconnecting through an
//     outage, on growing delays: a backoff, not a retry every 0.2-0.4 s.
//     The delays themselves are src/cluster/mod.rs's paused-time unit
//     tests; that they stay short (0.2 s doubling to at most 3 s, not
//     kube-runtime's or client-go's 0.8 s doubling to 30 s) is measured by
//     `make bench-scale` (`watches_recover_promptly_after_an_outage`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_watches_retry_on_the_short_backoff() {
    const CALLS: usize = 5;
    let c = Cluster::ready(FakeApi::start().await).await;
    let lists = |r: Res| c.fake.count(Some(Verb::List), Some(r));
    let before = (lists(Res::Vm), lists(Res::KubeVirt));
    for r in [Res::Vm, Res::KubeVirt] {
        // 500 is not retried by the client itself: one call per attempt.
        c.fake.fail_lists(r, Some(500));
        c.fake.expire_watches(r);
    }
    wait_until(
        &format!("{CALLS} failing list calls per watch"),
        HANG,
        || async { lists(Res::Vm) >= before.0 + CALLS && lists(Res::KubeVirt) >= before.1 + CALLS },
    )
    .await;
    // Both watches say they are not live; the gate keeps its state.
    for stale in ["vm_cache_stale", "feature_gate_stale"] {
        let m = format!("kubevirt_reboot_webhook_{stale}");
        assert_eq!(c.server.metric(&m).await, 1.0, "{m} during the outage");
    }
    for r in [Res::Vm, Res::KubeVirt] {
        c.fake.fail_lists(r, None);
    }
    assert_backs_off(
        "VirtualMachine watch",
        &list_arrivals(&c.fake, Res::Vm, before.0),
    );
    assert_backs_off(
        "KubeVirt watch",
        &list_arrivals(&c.fake, Res::KubeVirt, before.1),
    );
    // And both come back once lists succeed.
    for r in [Res::Vm, Res::KubeVirt] {
        c.fake.wait_watches(r, 1, HANG).await;
    }
    c.wait_ready().await;
    for stale in ["vm_cache_stale", "feature_gate_stale"] {
        let m = format!("kubevirt_reboot_webhook_{stale}");
        wait_until(&format!("{m} == 0"), WAIT, || async {
            c.server.metric(&m).await == 0.0
        })
        .await;
    }
}

// 11. A watch that fails right after each successful list (here: every
//     watch request meets 410 Gone; in a cluster, the watch verb denied or a
//     proxy that cuts watches) backs off like a failing list: the delays
//     start again only after a watch stayed live for a minute. Restarting
//     them at each completed list relisted every 0.2-0.4 s (about 25 lists
//     in 8 s, per replica and watch): gaps this test refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_failing_after_each_list_back_off_too() {
    const CALLS: usize = 5;
    // A streaming list is its own watch: no watch request after it to fail.
    let c = Cluster::ready_with(FakeApi::start().await, &["--vm-list-mode", "paginated"]).await;
    let lists = |r: Res| c.fake.count(Some(Verb::List), Some(r));
    let before = (lists(Res::Vm), lists(Res::KubeVirt));
    for r in [Res::Vm, Res::KubeVirt] {
        for _ in 0..1000 {
            c.fake.force_gone_next_watch(r);
        }
        c.fake.close_watches(r);
    }
    wait_until(&format!("{CALLS} relists per watch"), HANG, || async {
        lists(Res::Vm) >= before.0 + CALLS && lists(Res::KubeVirt) >= before.1 + CALLS
    })
    .await;
    // Each list succeeds; the delays before them grow all the same.
    assert_backs_off(
        "VirtualMachine watch",
        &list_arrivals(&c.fake, Res::Vm, before.0),
    );
    assert_backs_off(
        "KubeVirt watch",
        &list_arrivals(&c.fake, Res::KubeVirt, before.1),
    );
    // The lists themselves complete: the replica stays ready.
    c.wait_ready().await;
}

// 12. The freshness fence: virt-controller creates a VMI from a VM change
//     that this webhook's watch has not delivered yet (its VMI carries the
//     VM's new generation in kubevirt.io/vm-generation): the VM is read from
//     the API (one GET), both ways. A VMI without the annotation is decided
//     from the cache as before. If that GET fails, the older cached VM
//     decides, as a stale cache would. Once the watch delivers, the cache
//     answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_change_the_watch_has_not_delivered_is_read_from_the_api() {
    let flip = |strategy: &str, generation: i64| {
        at_generation(vm("tenant-a", "flip", 1, strategy), generation)
    };
    let fake = FakeApi::start().await;
    fake.apply(Res::Vm, flip("Always", 1));
    let cluster = Cluster::ready(fake).await;
    let c = &cluster;
    c.wait_cached_vms(1).await;
    let gets = || c.fake.count(Some(Verb::Get), None);
    let start = |generation: Option<i64>| async move {
        let review = built_from(vmi_create("tenant-a", "flip", &uid(1)), generation);
        c.review("/mutate", &review).await
    };
    assert_no_patch(&start(Some(1)).await);
    assert_eq!(gets(), 0, "fresh: from the cache");

    // Switched to BootOnce; the watch is behind; the VMI comes at once.
    c.fake.hold_events(Res::Vm, true);
    c.fake.apply(Res::Vm, flip("BootOnce", 2));
    assert_bootonce_patch(&start(Some(2)).await);
    assert_eq!(gets(), 1);
    assert_eq!(c.fences("generation").await, 1.0);
    assert_eq!(c.lookups("api").await, 1.0);
    // Without the annotation: the cache's answer, as before the fence.
    assert_no_patch(&start(None).await);
    assert_eq!(gets(), 1);

    // And back to Always: not stamped.
    c.fake.apply(Res::Vm, flip("Always", 3));
    assert_no_patch(&start(Some(3)).await);
    assert_eq!(gets(), 2);
    assert_eq!(c.fences("generation").await, 2.0);

    // The GET fails: the older cached VM (generation 1, Always) decides.
    c.fake.apply(Res::Vm, flip("BootOnce", 4));
    c.fake.fail_gets(Res::Vm, Some(500));
    assert_no_patch(&start(Some(4)).await);
    assert_eq!(c.lookups("stale_cache").await, 1.0);
    c.fake.fail_gets(Res::Vm, None);

    // The watch delivers: from the cache again, also for VMIs built from
    // an older generation.
    c.fake.hold_events(Res::Vm, false);
    wait_until("the watch delivered generation 4", WAIT, || async {
        let before = gets();
        let resp = start(Some(4)).await;
        gets() == before && resp.get("patch").is_some()
    })
    .await;
    let (before, fences) = (gets(), c.fences("generation").await);
    for generation in [Some(4), Some(2), None] {
        assert_bootonce_patch(&start(generation).await);
    }
    assert_eq!((gets(), c.fences("generation").await), (before, fences));
}

// 13. A VM deleted and re-created under the same name (a new uid) before
//     the watch delivers it: the new VM's VMI is decided from the API, with
//     or without kubevirt.io/vm-generation, not taken for "owner gone" (which
//     left it unstamped). If that GET fails, the cached VM is another VM and
//     no answer: denied with "retry". Once the watch delivers, a VMI of the
//     old VM is "not found" by the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_vm_is_read_from_the_api_not_taken_for_gone() {
    let fake = FakeApi::start().await;
    fake.apply(
        Res::Vm,
        at_generation(vm("tenant-a", "re", 1, "BootOnce"), 5),
    );
    let cluster = Cluster::ready(fake).await;
    let c = &cluster;
    c.wait_cached_vms(1).await;
    let gets = || c.fake.count(Some(Verb::Get), None);
    let start = |owner_uid: String, generation: Option<i64>| async move {
        let review = built_from(vmi_create("tenant-a", "re", &owner_uid), generation);
        c.review("/mutate", &review).await
    };

    c.fake.hold_events(Res::Vm, true);
    c.fake.delete(Res::Vm, "tenant-a", "re");
    c.fake.apply(
        Res::Vm,
        at_generation(vm("tenant-a", "re", 2, "BootOnce"), 1),
    );
    for generation in [Some(1), None] {
        assert_bootonce_patch(&start(uid(2), generation).await);
    }
    assert_eq!(gets(), 2);
    assert_eq!(c.fences("uid").await, 2.0);

    c.fake.fail_gets(Res::Vm, Some(500));
    let resp = start(uid(2), Some(1)).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    let msg = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("cached only with another uid") && msg.contains("retry"),
        "{msg}"
    );
    c.fake.fail_gets(Res::Vm, None);

    c.fake.hold_events(Res::Vm, false);
    wait_until("the watch delivered the new VM", WAIT, || async {
        let before = gets();
        let resp = start(uid(2), Some(1)).await;
        gets() == before && resp.get("patch").is_some()
    })
    .await;
    let (before, fences) = (gets(), c.fences("uid").await);
    assert_no_patch(&start(uid(1), Some(5)).await);
    assert_eq!(gets(), before + 1);
    assert_eq!(c.fences("uid").await, fences + 1.0);
}

// 14. The VM cache lists with a streaming list by default (a watch with
//     sendInitialEvents=true, no list request at all), and each
//     --vm-list-mode makes the requests it names. The default's case is the
//     guard against a regression to unpaginated lists: every list of VMs
//     it makes is a streaming list or a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_mode_makes_its_own_requests() {
    let streaming = |q: &str| {
        q.contains("watch=true")
            && q.contains("sendInitialEvents=true")
            && q.contains("resourceVersionMatch=NotOlderThan")
    };
    let page = |q: &str| q.contains("limit=500") && !q.contains("watch=");
    let unpaginated = |q: &str| !q.contains("limit=") && !q.contains("watch=");
    for mode in [
        None,
        Some("streaming"),
        Some("paginated"),
        Some("unpaginated"),
    ] {
        let fake = FakeApi::start().await;
        fake.load(
            Res::Vm,
            (0..600).map(|i| vm("tenant-a", &format!("vm-{i:03}"), i, "Always")),
        );
        let flags: Vec<&str> = mode.map_or(vec![], |m| vec!["--vm-list-mode", m]);
        let c = Cluster::ready_with(fake, &flags).await;
        assert_eq!(c.cached_vms().await, 600, "{mode:?}");
        let lists: Vec<String> = (c.fake.requests().into_iter())
            .filter(|s| s.verb == Verb::List && s.res == Some(Res::Vm))
            .map(|s| s.query)
            .collect();
        let ok = match mode {
            // 600 VMs: two pages.
            Some("paginated") => lists.len() == 2 && lists.iter().all(|q| page(q)),
            Some("unpaginated") => lists.len() == 1 && unpaginated(&lists[0]),
            _ => lists.len() == 1 && streaming(&lists[0]),
        };
        assert!(ok, "{mode:?}: {lists:?}");
        c.server.stop().await;
    }
}

// 15. Where the API server refuses streaming lists (kube-apiserver with the
//     WatchList feature off answers 422), the default mode lists in pages,
//     syncs, and relists in pages without asking again; `streaming` alone
//     does not fall back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streaming_lists_fall_back_to_pages() {
    let fake = FakeApi::start().await;
    fake.streaming_lists(Res::Vm, Streaming::Refused);
    fake.load(
        Res::Vm,
        (0..600).map(|i| vm("tenant-a", &format!("vm-{i:03}"), i, "BootOnce")),
    );
    let c = Cluster::ready(fake).await;
    assert_eq!(c.cached_vms().await, 600);
    let vm_lists = || {
        (c.fake.requests().into_iter())
            .filter(|s| s.verb == Verb::List && s.res == Some(Res::Vm))
            .map(|s| s.query)
            .collect::<Vec<_>>()
    };
    let lists = vm_lists();
    assert!(
        lists.len() == 3
            && lists[0].contains("sendInitialEvents=true")
            && lists[1..].iter().all(|q| q.contains("limit=500")),
        "one refused streaming list, then two pages: {lists:?}"
    );
    // A relist: pages again, no second streaming attempt.
    c.fake.expire_watches(Res::Vm);
    wait_until("relisted in pages", WAIT, || async {
        vm_lists().len() >= 5 && c.fake.open_watches(Res::Vm) == 1
    })
    .await;
    assert!(
        vm_lists()[3..].iter().all(|q| q.contains("limit=500")),
        "{:?}",
        vm_lists()
    );
    assert_bootonce_patch(&c.mutate_vmi("tenant-a", "vm-007", &uid(7)).await);
    assert_eq!(c.fake.count(Some(Verb::Get), None), 0, "from the cache");

    // --vm-list-mode streaming keeps asking, and is not ready.
    let fake = FakeApi::start().await;
    fake.streaming_lists(Res::Vm, Streaming::Refused);
    let c = Cluster::start(fake, &["--vm-list-mode", "streaming"]).await;
    wait_until("three refused streaming lists", WAIT, || async {
        c.fake.count(Some(Verb::List), Some(Res::Vm)) >= 3
    })
    .await;
    assert!(
        (c.fake.requests().into_iter())
            .filter(|s| s.res == Some(Res::Vm))
            .all(|s| s.query.contains("sendInitialEvents=true")),
        "{:?}",
        c.fake.requests()
    );
    assert_eq!(c.readyz().await.0, 503);
}

// 16. A streaming list that ends before its end marker (a server or proxy
//     that ignores sendInitialEvents and ends the watch) falls back to pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_streaming_list_falls_back_to_pages() {
    let fake = FakeApi::start().await;
    fake.streaming_lists(Res::Vm, Streaming::Unfinished);
    fake.load(
        Res::Vm,
        (0..50).map(|i| vm("tenant-a", &format!("vm-{i:03}"), i, "Always")),
    );
    let c = Cluster::ready(fake).await;
    assert_eq!(c.cached_vms().await, 50);
    let lists: Vec<String> = (c.fake.requests().into_iter())
        .filter(|s| s.verb == Verb::List && s.res == Some(Res::Vm))
        .map(|s| s.query)
        .collect();
    assert!(
        lists.len() == 3
            && lists[..2]
                .iter()
                .all(|q| q.contains("sendInitialEvents=true"))
            && lists[2].contains("limit=500"),
        "the streaming list, started again once by kube's watcher, then a page: {lists:?}"
    );
}

// 17. vm_cache_resource_version says how far the cache got: after the list,
//     its newest object; then each change the watch delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_reports_the_newest_resource_version_it_holds() {
    let fake = FakeApi::start().await;
    for i in 0..3 {
        fake.apply(Res::Vm, vm("tenant-a", &format!("vm-{i}"), i, "Always"));
    }
    let newest = fake.apply(Res::Vm, vm("tenant-a", "vm-3", 3, "Always"));
    let c = Cluster::ready(fake).await;
    let version = || {
        c.server
            .metric("kubevirt_reboot_webhook_vm_cache_resource_version")
    };
    assert_eq!(version().await, newest as f64, "after the list");
    let changed = c.fake.apply(Res::Vm, vm("tenant-a", "vm-1", 1, "BootOnce"));
    wait_until("the change applied", WAIT, || async {
        version().await == changed as f64
    })
    .await;
    let deleted_at = {
        c.fake.delete(Res::Vm, "tenant-a", "vm-2");
        changed + 1
    };
    wait_until("the delete applied", WAIT, || async {
        version().await == deleted_at as f64
    })
    .await;
}
