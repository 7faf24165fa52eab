//! Per-object retry backoff after failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;

/// Failures in a row per object (by UID): the delay doubles from `min` up to `max`; a success
/// forgets the object.
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: Mutex::default(),
        }
    }

    pub fn failed(&self, key: String) -> Action {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_default();
        let delay = self.min.saturating_mul(1 << (*n).min(16));
        *n += 1;
        Action::requeue(delay.min(self.max))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}
