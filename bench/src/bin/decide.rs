//! The pure decision path for the load benchmark's four payloads, as
//! `Webhook::review` and the server chain it: decode the body, resolve the
//! owner (in memory: the BootOnce VM), decide, build the response, encode.
//!
//! `make -C bench decide` runs it (a release binary of this crate, not a
//! `cargo bench` target, so a release build does not also compile the
//! webhook's test-only dependencies); `DECIDE_ARGS='--max-time 5'` for more.

use std::sync::LazyLock;
use std::time::Duration;

use kubevirt_reboot_webhook::admission::review;
use kubevirt_reboot_webhook::admission::{
    self, Context, Endpoint, Owner, Policy, RunStrategy, Trusted, VmInfo,
};

use kubevirt_reboot_webhook_bench::payloads;

static PAYLOADS: LazyLock<Vec<payloads::Payload>> = LazyLock::new(payloads::all);

static POLICY: LazyLock<Policy> = LazyLock::new(|| Policy {
    trusted: Trusted::new("kubevirt", &[], &[]),
    ..Policy::default()
});

/// One review end to end without HTTP; returns the encoded answer.
fn review_once(endpoint: Endpoint, body: &[u8]) -> Vec<u8> {
    let review = review::decode(body).expect("payload decodes");
    let req = &review.request;
    let owner = match admission::owner_to_resolve(endpoint, req, &POLICY) {
        Some(_) => Owner::Found(VmInfo {
            uid: Some(payloads::VM_UID.to_owned()),
            run_strategy: RunStrategy::BootOnce,
            annotated: false,
        }),
        None => Owner::None,
    };
    let ctx = Context {
        policy: &POLICY,
        gate: true,
    };
    let verdict = admission::decide(endpoint, req, ctx, &owner);
    let response = review::response(&req.uid, &verdict);
    review::encode(&review.api_version, &response)
}

fn bench(bencher: divan::Bencher, name: &str) {
    let p = PAYLOADS
        .iter()
        .find(|p| p.name == name)
        .expect("payload exists");
    let endpoint = match p.path {
        "/mutate" => Endpoint::Mutate,
        _ => Endpoint::Validate,
    };
    // The answer must be exactly what the load benchmark checks for.
    let answer = review_once(endpoint, &p.body);
    payloads::check_answer(p, payloads::UID_TEMPLATE, &answer).unwrap_or_else(|e| panic!("{e}"));
    bencher
        .counter(divan::counter::BytesCount::new(p.body.len()))
        .bench(|| review_once(endpoint, divan::black_box(&p.body)));
}

#[divan::bench]
fn vmi_6k_mutate(bencher: divan::Bencher) {
    bench(bencher, "vmi-6k");
}

#[divan::bench]
fn vm_validate(bencher: divan::Bencher) {
    bench(bencher, "vm");
}

#[divan::bench]
fn vm_denied_validate(bencher: divan::Bencher) {
    bench(bencher, "vm-denied");
}

#[divan::bench]
fn vmi_500k_mutate(bencher: divan::Bencher) {
    bench(bencher, "vmi-500k");
}

/// For scale: only parsing the body into a `serde_json::Value`, which is
/// what the floor server does.
fn parse_only(bencher: divan::Bencher, name: &str) {
    let p = PAYLOADS
        .iter()
        .find(|p| p.name == name)
        .expect("payload exists");
    bencher
        .counter(divan::counter::BytesCount::new(p.body.len()))
        .bench(|| {
            // Dropped inside the timing, as the decision path drops its Review.
            drop(serde_json::from_slice::<serde_json::Value>(divan::black_box(&p.body)).unwrap())
        });
}

#[divan::bench]
fn parse_value_vmi_6k(bencher: divan::Bencher) {
    parse_only(bencher, "vmi-6k");
}

#[divan::bench]
fn parse_value_vm(bencher: divan::Bencher) {
    parse_only(bencher, "vm");
}

#[divan::bench]
fn parse_value_vmi_500k(bencher: divan::Bencher) {
    parse_only(bencher, "vmi-500k");
}

fn main() {
    // Short by default so `make bench` stays quick; `--max-time 5` for more.
    divan::Divan::default()
        .max_time(Duration::from_secs(1))
        .config_with_args()
        .main();
}
