//! Liveness and readiness state for `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Named readiness conditions plus the shutdown switch.
#[derive(Default)]
pub struct Readiness {
    parts: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
    shutting_down: AtomicBool,
}

impl Readiness {
    /// Registers a condition that starts not ready; set the returned flag when it is.
    pub fn part(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, flag.clone()));
        flag
    }

    /// From now on `/readyz` fails, so endpoints drop this pod.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else the list of what is not.
    pub fn check(&self) -> Result<(), String> {
        let mut missing: Vec<String> = self
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, f)| !f.load(Ordering::SeqCst))
            .map(|(n, _)| format!("{n} not ready"))
            .collect();
        if self.shutting_down.load(Ordering::SeqCst) {
            missing.insert(0, "shutting down".into());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}
