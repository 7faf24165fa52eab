//! Who gets glusterd next. glusterd runs one transaction at a time per cluster (every node
//! takes its lock), and `quota enable` holds it for a second or more while it restarts
//! quotad. Left to itself, glusterd queues every command sent and grants its lock in no
//! particular order, so a burst's volumes interleave step by step and all finish at the end. Here each
//! volume takes a turn number when its work starts; at most `limit` gluster commands are out
//! at once, and a free slot goes to the waiting command with the lowest turn: a volume further
//! along goes first, while enough commands stay queued at glusterd to keep its lock busy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A volume's place in line: lower goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Turn(u64);

pub struct Turns {
    next: AtomicU64,
    state: Arc<Mutex<State>>,
}

struct State {
    limit: usize,
    out: usize,
    /// Waiting commands by (turn, arrival), each with where to send its slot.
    waiting: BTreeMap<(Turn, u64), oneshot::Sender<Slot>>,
    arrivals: u64,
}

/// A command's right to run; dropping it hands it to the next waiting command.
pub struct Slot {
    /// None once handed on.
    state: Option<Arc<Mutex<State>>>,
}

impl Turns {
    /// At most `limit` commands out at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            next: AtomicU64::new(0),
            state: Arc::new(Mutex::new(State {
                limit: limit.max(1),
                out: 0,
                waiting: BTreeMap::new(),
                arrivals: 0,
            })),
        }
    }

    /// The next turn: later than every turn taken before.
    pub fn take(&self) -> Turn {
        Turn(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits for a slot: given at once while fewer than the limit are out and nobody waits,
    /// else in turn order.
    pub async fn slot(&self, turn: Turn) -> Slot {
        let waiting = {
            let mut state = self.state.lock().expect("turns lock");
            if state.out < state.limit && state.waiting.is_empty() {
                state.out += 1;
                return Slot {
                    state: Some(self.state.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.insert((turn, arrival), tx);
            rx
        };
        // The sender lives in `waiting` until a slot is sent, and a slot always goes somewhere.
        waiting.await.expect("a waiting command is sent its slot")
    }

    /// Commands out now.
    #[cfg(test)]
    fn out(&self) -> usize {
        self.state.lock().expect("turns lock").out
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.state.take() else {
            return;
        };
        let mut state = shared.lock().expect("turns lock");
        // A waiter that gave up (its future dropped) refuses the slot: try the next one.
        while let Some((_, tx)) = state.waiting.pop_first() {
            match tx.send(Slot {
                state: Some(shared.clone()),
            }) {
                Ok(()) => return,
                // Emptied, so dropping it does not come back here.
                Err(mut refused) => drop(refused.state.take()),
            }
        }
        state.out -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_free_slot_goes_to_the_lowest_turn_waiting() {
        let turns = Arc::new(Turns::new(1));
        let first = turns.take();
        let held = turns.slot(first).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        // Later turns ask first; the earliest turn still gets the slot first.
        let later: Vec<Turn> = (0..3).map(|_| turns.take()).collect();
        let mut tasks = Vec::new();
        for turn in later.iter().rev().copied().chain([first]) {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = turns.slot(turn).await;
                order.lock().unwrap().push(turn);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            settle().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let mut expected = vec![first];
        expected.extend(later);
        assert_eq!(*order.lock().unwrap(), expected);
        assert_eq!(turns.out(), 0);
    }

    #[tokio::test]
    async fn no_more_than_the_limit_are_out() {
        let turns = Arc::new(Turns::new(3));
        let peak = Arc::new(Mutex::new((0usize, 0usize)));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (turns, peak) = (turns.clone(), peak.clone());
                let turn = turns.take();
                tokio::spawn(async move {
                    let _slot = turns.slot(turn).await;
                    {
                        let mut p = peak.lock().unwrap();
                        p.0 += 1;
                        p.1 = p.1.max(p.0);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    peak.lock().unwrap().0 -= 1;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.lock().unwrap().1, 3);
        assert_eq!(turns.out(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_a_slot() {
        let turns = Turns::new(1);
        let held = turns.slot(turns.take()).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(5), turns.slot(turns.take()));
        assert!(gave_up.await.is_err());
        drop(held);
        assert_eq!(turns.out(), 0);
        let again = tokio::time::timeout(Duration::from_secs(1), turns.slot(turns.take()));
        assert!(again.await.is_ok());
    }
}
