//! Events. kube's `Recorder` folds the repeats of an event into a series keyed by object and
//! reason, and keeps the first note: a claim whose failure changed cause would go on showing
//! the old one. Repeats are folded per note instead, as client-go's correlator does.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use super::Context;

/// Distinct notes remembered; past that they start over (a recorder's series lasts minutes).
const NOTES_KEPT: usize = 512;

pub struct Events {
    client: Client,
    reporter: Reporter,
    by_note: Mutex<HashMap<String, Recorder>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            by_note: Mutex::default(),
        }
    }

    fn recorder(&self, note: &str) -> Recorder {
        let mut by_note = self.by_note.lock().expect("events lock");
        if by_note.len() >= NOTES_KEPT && !by_note.contains_key(note) {
            by_note.clear();
        }
        by_note
            .entry(note.to_string())
            .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
            .clone()
    }
}

/// Each reload of the topology file (or refusal of a bad one) as an event on its ConfigMap,
/// where the admin who edited it looks.
pub async fn tell_reloads(
    client: Client,
    reporter: Reporter,
    map: ObjectReference,
    mut told: tokio::sync::mpsc::UnboundedReceiver<crate::gluster::backend::reload::Told>,
) {
    let events = Events::new(client, reporter);
    while let Some(told) = told.recv().await {
        let (type_, reason, note) = match told {
            Ok(note) => (EventType::Normal, "TopologyReloaded", note),
            Err(why) => (EventType::Warning, "TopologyRefused", why),
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.clone()),
            action: "Reload".into(),
            secondary: None,
        };
        if let Err(e) = events.recorder(&note).publish(&event, &map).await {
            tracing::warn!(error = %e, "cannot publish {reason}");
        }
    }
}

impl Context {
    pub(super) async fn publish<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let recorder = self.events.recorder(&note);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let mut regarding = obj.object_ref(&());
        // Events about cluster-scoped objects (PVs) live in "default". API servers before 1.22
        // validate an event before filling in its namespace from the request, and refuse it
        // unless the reference names that namespace too.
        regarding.namespace.get_or_insert_with(|| "default".into());
        if let Err(e) = recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}
