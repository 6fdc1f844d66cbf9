//! Diagnostics as Events against the in-process API server: on the object they name, naming the
//! field, once while they last, counted up when they come back, limited per object, and only
//! from the leader.

mod cluster_support;
mod support;

use std::time::Duration;

use cluster_support::{cluster_settings, events_about, lease_holder, start, CONTROLLER, WAIT};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ingress_gets_events_from_the_leader_once_counted_and_limited() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    api.apply(ingress_class("portcullis", CONTROLLER));
    api.apply(service("default", "web", 80));
    api.apply(endpoint_slice(
        "default",
        "web-1",
        "web",
        &["10.0.0.1:80".parse().expect("addr")],
    ));
    api.apply(ingress_with_paths(
        "bad",
        "bad.example",
        &["relative", "/ok", "also-relative"],
    ));
    let a = start(limited(cluster_settings(&api, dir.path(), "events-a"))).await;
    let b = start(limited(cluster_settings(&api, dir.path(), "events-b"))).await;
    let leader = api
        .wait_for(WAIT, lease_holder)
        .await
        .expect("someone leads");

    let two = api
        .wait_for(WAIT, |api| {
            let events = events_about(api, "Ingress", "default", "bad");
            (events.len() == 2).then_some(events)
        })
        .await
        .expect("two Events about the bad Ingress");
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
    // Ingress has its Events, that republish has been dealt with.
    api.apply(endpoint_slice(
        "default",
        "web-1",
        "web",
        &["10.0.0.2:80".parse().expect("addr")],
    ));
    api.apply(ingress_with_paths(
        "flood",
        "flood.example",
        &["a", "b", "c", "d", "e"],
    ));
    let flood = api
        .wait_for(WAIT, |api| {
            let events = events_about(api, "Ingress", "default", "flood");
            (events.len() == 3).then_some(events)
        })
        .await
        .expect("Events about the flood Ingress");
    assert_eq!(flood.len(), 3, "at most the burst per object");
    let again = events_about(&api, "Ingress", "default", "bad");
    assert!(again.iter().all(|(_, _, count)| *count == 1), "{again:?}");

    // Fixed, then broken the same way again: the same Event, counted twice.
    api.apply(ingress_with_paths("bad", "bad.example", &["/"]));
    api.apply(ingress_with_paths(
        "fixed-marker",
        "marker.example",
        &["relative"],
    ));
    api.wait_for(WAIT, |api| {
        (events_about(api, "Ingress", "default", "fixed-marker").len() == 1).then_some(())
    })
    .await
    .expect("the marker's Event");
    api.apply(ingress_with_paths(
        "bad",
        "bad.example",
        &["relative", "/ok", "also-relative"],
    ));
    let counted = api
        .wait_for(WAIT, |api| {
            events_about(api, "Ingress", "default", "bad")
                .iter()
                .any(|(_, note, count)| note.contains("paths[0].path") && *count == 2)
                .then_some(())
        })
        .await;
    assert!(
        counted.is_some(),
        "{:?}",
        events_about(&api, "Ingress", "default", "bad")
    );

    let writers: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.resource == "events" && (r.verb == "create" || r.verb == "patch"))
        .map(|r| r.token)
        .collect();
    assert!(
        !writers.is_empty()
            && writers
                .iter()
                .all(|t| t.as_deref() == Some(leader.as_str())),
        "{writers:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
