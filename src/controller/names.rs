//! The names of the objects a watch sees, kept current from its events: all the repair of
//! Endpoints and Services needs to know of them, at a fraction of a cached object's size.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

#[derive(Clone)]
pub struct Names {
    state: Arc<RwLock<State>>,
    listed: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    names: HashSet<String>,
    /// Filled during a (re)list, then swapped in whole, as kube's stores do.
    relisting: Option<HashSet<String>>,
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Names {
    /// The names `api`'s watch sees, and the stream of the objects it saw deleted (only a
    /// deletion calls for a repair); an object comes out once its name is forgotten.
    pub fn watch<K>(
        api: Api<K>,
        config: watcher::Config,
    ) -> (
        Self,
        impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    )
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let names = Names {
            state: Arc::default(),
            listed: tokio::sync::watch::Sender::new(false),
        };
        let writer = names.clone();
        let stream = watcher(api, config)
            .default_backoff()
            .try_filter_map(move |event| {
                writer.apply(&event);
                futures::future::ready(Ok(match event {
                    watcher::Event::Delete(obj) => Some(obj),
                    _ => None,
                }))
            });
        (names, stream)
    }

    /// [`Self::watch`] when `allowed`; otherwise no names, listed at once, and a stream that
    /// yields nothing (an install without access to these objects).
    pub fn watch_if<K>(
        allowed: bool,
        api: Api<K>,
        config: watcher::Config,
    ) -> (Self, BoxStream<'static, Result<K, watcher::Error>>)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        if allowed {
            let (names, stream) = Self::watch(api, config);
            return (names, stream.boxed());
        }
        let names = Names {
            state: Arc::default(),
            listed: tokio::sync::watch::Sender::new(true),
        };
        (names, futures::stream::pending().boxed())
    }

    fn apply<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut state = self.state.write().expect("names lock");
        match event {
            watcher::Event::Apply(obj) => {
                state.names.insert(key(obj));
            }
            watcher::Event::Delete(obj) => {
                state.names.remove(&key(obj));
            }
            watcher::Event::Init => state.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                state.relisting.get_or_insert_default().insert(key(obj));
            }
            watcher::Event::InitDone => {
                state.names = state.relisting.take().unwrap_or_default();
                self.listed.send_replace(true);
            }
        }
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let state = self.state.read().expect("names lock");
        state.names.contains(&format!("{namespace}/{name}"))
    }

    /// Waits for the first complete list.
    pub async fn wait_listed(&self) {
        let _ = self.listed.subscribe().wait_for(|listed| *listed).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Endpoints;
    use kube::api::ObjectMeta;

    use super::*;

    fn ep(name: &str) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn follows_lists_and_changes() {
        let names = Names {
            state: Arc::default(),
            listed: tokio::sync::watch::Sender::new(false),
        };
        names.apply(&watcher::Event::<Endpoints>::Init);
        names.apply(&watcher::Event::InitApply(ep("a")));
        assert!(
            !names.contains("ns", "a"),
            "not before the list is complete"
        );
        names.apply(&watcher::Event::<Endpoints>::InitDone);
        assert!(names.contains("ns", "a") && *names.listed.borrow());
        names.apply(&watcher::Event::Apply(ep("b")));
        names.apply(&watcher::Event::Delete(ep("a")));
        assert!(names.contains("ns", "b") && !names.contains("ns", "a"));
        // A relist replaces everything.
        names.apply(&watcher::Event::<Endpoints>::Init);
        names.apply(&watcher::Event::InitApply(ep("c")));
        names.apply(&watcher::Event::<Endpoints>::InitDone);
        assert!(names.contains("ns", "c") && !names.contains("ns", "b"));
    }
}
