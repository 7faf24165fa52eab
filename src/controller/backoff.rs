//! Per-object retry backoff after failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;

/// Failures in a row per object (by UID): the delay doubles from `min` up to `max`; a success
/// forgets the object. So does time: an object still failing fails again within `max`, so an
/// entry older than twice that belongs to an object that went away (the map never grows with
/// the objects ever seen).
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
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
        let stale = self.max.saturating_mul(2);
        failures.retain(|_, (_, at)| at.elapsed() < stale);
        let (n, at) = failures.entry(key).or_insert((0, Instant::now()));
        let delay = self.min.saturating_mul(1 << (*n).min(16));
        *n += 1;
        *at = Instant::now();
        Action::requeue(delay.min(self.max))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_reset_on_success_and_old_entries_expire() {
        let ms = Duration::from_millis;
        let b = Backoff::new(ms(10), ms(40));
        let delays: Vec<_> = (0..4).map(|_| b.failed("a".into())).collect();
        assert_eq!(delays, [10, 20, 40, 40].map(|d| Action::requeue(ms(d))));
        b.succeeded("a");
        assert_eq!(b.failed("a".into()), Action::requeue(ms(10)));
        b.failed("a".into());
        std::thread::sleep(ms(100));
        // "b" failing clears "a", whose object would have failed again by now if it existed.
        b.failed("b".into());
        assert_eq!(b.failures.lock().unwrap().len(), 1);
        assert_eq!(b.failed("a".into()), Action::requeue(ms(10)));
    }
}
