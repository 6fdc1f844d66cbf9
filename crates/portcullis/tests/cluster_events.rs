//! Diagnostics as Events against the in-process API server: on the object they name, naming the
//! field, once while they last, counted up when they come back, limited per object, and only
//! from the leader.

mod cluster_support;
mod support;

use std::time::Duration;

use cluster_support::{
    cluster_settings, events_about, lease_holder, start, until_events, CONTROLLER, WAIT,
};
use portcullis::cluster::ClusterSettings;
use serde_json::{json, Value};
use source::cluster::EventConfig;
use testkube::objects::{endpoint_slice, ingress, ingress_class, service};
use testkube::ApiServer;

/// An Ingress with one rule whose paths are `paths` (each a path string, all to `web:80`).
fn ingress_with_paths(name: &str, host: &str, paths: &[&str]) -> Value {
    let mut ing = ingress("default", name, "portcullis", Some(host), "/", "web", 80);
    ing["spec"]["rules"][0]["http"]["paths"] = json!(paths
        .iter()
        .map(|p| json!({
            "path": p,
            "pathType": "Prefix",
            "backend": { "service": { "name": "web", "port": { "number": 80 } } },
        }))
        .collect::<Vec<_>>());
    ing
}

fn limited(settings: ClusterSettings) -> ClusterSettings {
    ClusterSettings {
        events: EventConfig {
            burst: 3,
            refill: Duration::from_secs(3600),
            ..settings.events
        },
        ..settings
    }
}

/// The paths of the bad Ingress: two errors.
const BAD: &[&str] = &["relative", "/ok", "also-relative"];

fn seed(api: &ApiServer) {
    api.apply(ingress_class("portcullis", CONTROLLER));
    api.apply(service("default", "web", 80));
    let endpoint = "10.0.0.1:80".parse().expect("addr");
    api.apply(endpoint_slice("default", "web-1", "web", &[endpoint]));
    api.apply(ingress_with_paths("bad", "bad.example", BAD));
}

/// The tokens of the replicas that created or patched Events.
fn event_writers(api: &ApiServer) -> Vec<Option<String>> {
    api.requests()
        .into_iter()
        .filter(|r| r.resource == "events" && (r.verb == "create" || r.verb == "patch"))
        .map(|r| r.token)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ingress_gets_events_from_the_leader_once_counted_and_limited() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    seed(&api);
    let a = start(limited(cluster_settings(&api, dir.path(), "events-a"))).await;
    let b = start(limited(cluster_settings(&api, dir.path(), "events-b"))).await;
    let leader = api
        .wait_for(WAIT, lease_holder)
        .await
        .expect("someone leads");

    let two = until_events(&api, "Ingress", "default", "bad", |e| e.len() == 2).await;
    let mut notes: Vec<&str> = two.iter().map(|(_, note, _)| note.as_str()).collect();
    notes.sort();
    assert!(
        notes[0].starts_with("spec.rules[0].http.paths[0].path: "),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("spec.rules[0].http.paths[2].path: "),
        "{notes:?}"
    );
    assert!(two
        .iter()
        .all(|(reason, _, count)| reason == "Rejected" && *count == 1));

    // A republish that leaves the diagnostics as they are says nothing new; once a later bad
    // Ingress has its Events, that republish has been dealt with. That one has five problems and
    // gets only the burst of three.
    let moved = "10.0.0.2:80".parse().expect("addr");
    api.apply(endpoint_slice("default", "web-1", "web", &[moved]));
    api.apply(ingress_with_paths(
        "flood",
        "flood.example",
        &["a", "b", "c", "d", "e"],
    ));
    let flood = until_events(&api, "Ingress", "default", "flood", |e| e.len() == 3).await;
    assert_eq!(flood.len(), 3, "at most the burst per object");
    let again = events_about(&api, "Ingress", "default", "bad");
    assert!(again.iter().all(|(_, _, count)| *count == 1), "{again:?}");

    // Fixed, then (once a marker's Event shows the fix was seen) broken the same way again: the
    // same Event, counted twice.
    api.apply(ingress_with_paths("bad", "bad.example", &["/"]));
    api.apply(ingress_with_paths(
        "fixed-marker",
        "marker.example",
        &["relative"],
    ));
    until_events(&api, "Ingress", "default", "fixed-marker", |e| e.len() == 1).await;
    api.apply(ingress_with_paths("bad", "bad.example", BAD));
    until_events(&api, "Ingress", "default", "bad", |e| {
        e.iter()
            .any(|(_, note, count)| note.contains("paths[0].path") && *count == 2)
    })
    .await;

    let writers = event_writers(&api);
    let by_leader = writers
        .iter()
        .all(|t| t.as_deref() == Some(leader.as_str()));
    assert!(!writers.is_empty() && by_leader, "{writers:?}");
    a.shutdown().await;
    b.shutdown().await;
}
