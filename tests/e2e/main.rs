//! Tests against the real environment (`e2e/env up`): kube-apiserver + controller-manager and
//! three glusterd nodes reached over SSH. Run them with `e2e/test`.

mod env_smoke;
mod expansion;
mod heketi;
mod heketi_standin;
mod operations;
mod provision;
mod scenario;
mod support;
