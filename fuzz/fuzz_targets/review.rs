//! Request decoding and every decision on arbitrary bytes: no panic, and a
//! produced patch always applies to the object it was made for.
#![no_main]

use kubevirt_reboot_webhook::admission::review::{decode, encode, response};
use kubevirt_reboot_webhook::admission::{
    decide, owner_to_resolve, BootOnceMode, Context, Endpoint, Mode, Owner, Policy, RunStrategy, Trusted, VmInfo,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(review) = decode(data) else { return };
    let owners = [
        Owner::None,
        Owner::NotFound,
        Owner::Unavailable("down".into()),
        Owner::Found(VmInfo { uid: None, run_strategy: RunStrategy::BootOnce, annotated: false }),
        Owner::Found(VmInfo { uid: None, run_strategy: RunStrategy::Once, annotated: true }),
        Owner::Found(VmInfo { uid: None, run_strategy: RunStrategy::Other, annotated: false }),
    ];
    for bootonce in [BootOnceMode::Native, BootOnceMode::Compat] {
        for mode in [Mode::Enforce, Mode::Warn] {
            let policy = Policy { trusted: Trusted::new("kubevirt", &[], &[]), mode, bootonce };
            for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                let _ = owner_to_resolve(endpoint, &review.request, &policy);
                for gate in [false, true] {
                    for owner in &owners {
                        let v = decide(endpoint, &review.request, Context { policy: &policy, gate }, owner);
                        if !v.patch.is_empty() {
                            let mut obj = review.request.object.clone().expect("patched requests have objects");
                            json_patch::patch(&mut obj, &v.patch).expect("our patch applies to its own object");
                        }
                        let _ = encode(&review.api_version, &response(&review.request.uid, &v));
                    }
                }
            }
        }
    }
});
