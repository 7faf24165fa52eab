//! Turns at the nodes for the volumes of a burst, oldest first. The nodes' CPU and disks are
//! shared by every step in flight: when each step waits its turn behind the steps of volumes
//! asked for earlier, the first volumes finish first instead of the whole burst together.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// At most `width` holders at once; a freed place goes to the waiter asked for first (the
/// lowest rank), not to whoever came to the gate first.
pub struct Gate {
    width: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: usize,
    /// By rank, then the order of coming (a rank may wait twice).
    waiting: BTreeMap<(u64, u64), oneshot::Sender<()>>,
    came: u64,
}

/// A place at the gate, given back when dropped.
pub struct Pass<'g>(&'g Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A waiter dropped (its future cancelled) takes itself off the list, or gives back the place
/// handed to it meanwhile.
struct Waiter<'g> {
    gate: &'g Gate,
    key: Option<(u64, u64)>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let handed = self.gate.lock().waiting.remove(&key).is_none();
        if handed {
            self.gate.give_back();
        }
    }
}

impl Gate {
    pub fn new(width: usize) -> Self {
        Gate {
            width: width.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gate lock")
    }

    /// Waits for a place, ahead of every waiter of a higher `rank`.
    pub async fn enter(&self, rank: u64) -> Pass<'_> {
        let (key, handed) = {
            let mut state = self.lock();
            if state.held < self.width && state.waiting.is_empty() {
                state.held += 1;
                return Pass(self);
            }
            let (tx, rx) = oneshot::channel();
            let key = (rank, state.came);
            state.came += 1;
            state.waiting.insert(key, tx);
            (key, rx)
        };
        let mut waiter = Waiter {
            gate: self,
            key: Some(key),
        };
        // The sender is dropped only once its place is handed over.
        let _ = handed.await;
        waiter.key = None;
        Pass(self)
    }

    /// The place goes to the first waiter, or back to the gate.
    fn give_back(&self) {
        let mut state = self.lock();
        match state.waiting.pop_first() {
            // Handed over even if that waiter is being dropped: its `Waiter` gives it back.
            Some((_, next)) => drop(next.send(())),
            None => state.held -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_freed_place_goes_to_the_lowest_rank() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.enter(5).await;
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for rank in [9, 3, 7] {
            let (entering, tx) = (gate.clone(), tx.clone());
            waiting.push(tokio::spawn(async move {
                let _pass = entering.enter(rank).await;
                tx.send(rank).unwrap();
            }));
            // Each is on the list before the next comes.
            while gate.lock().waiting.len() < waiting.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(rank) = order.recv().await {
            got.push(rank);
        }
        assert_eq!(got, [3, 7, 9]);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_loses_no_place() {
        let gate = Gate::new(1);
        let first = gate.enter(1).await;
        {
            let cancelled = gate.enter(2);
            tokio::pin!(cancelled);
            assert!(futures::poll!(cancelled.as_mut()).is_pending());
            // Handed the place, then dropped before it takes it.
            drop(first);
        }
        let _again = tokio::time::timeout(std::time::Duration::from_secs(5), gate.enter(3))
            .await
            .expect("the place came back");
        let state = gate.lock();
        assert_eq!((state.held, state.waiting.len()), (1, 0));
    }
}
