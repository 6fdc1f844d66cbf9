//! Ingress status and leader election against the in-process API server: status written only
//! when it differs, following class changes and the published Service, left in place or cleared
//! on shutdown; only the leader writes; a replica takes over from a leader that stops renewing.

mod cluster_support;
mod support;

use cluster_support::{
    cluster_settings, lease_holder, start, status_addresses, status_writes, until_served,
    until_status_addresses, CONTROLLER, CONTROLLER_NAMESPACE, WAIT,
};
use model::ObjectKey;
use portcullis::cluster::ClusterSettings;
use serde_json::json;
use source::cluster::StatusConfig;
use support::spawn_simple_echo;
use testkube::objects::{endpoint_slice, ingress, ingress_class, service};
use testkube::ApiServer;

fn with_addresses(settings: ClusterSettings, addresses: &[&str]) -> ClusterSettings {
    ClusterSettings {
        status: StatusConfig {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            publish_service: None,
        },
        ..settings
    }
}

fn base(api: &ApiServer, port: u16) {
    api.apply(ingress_class("portcullis", CONTROLLER));
    api.apply(ingress_class("nginx", "k8s.io/ingress-nginx"));
    api.apply(service("default", "web", port));
    api.apply(endpoint_slice(
        "default",
        "web-1",
        "web",
        &[format!("127.0.0.1:{port}").parse().expect("addr")],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_when_it_differs_and_follows_the_class() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = spawn_simple_echo("web", "web-0").await;
    base(&api, web.addr().port());
    api.apply(ingress(
        "default",
        "web",
        "portcullis",
        Some("web.example"),
        "/",
        "web",
        web.addr().port(),
    ));
    let mut other = ingress(
        "default",
        "other",
        "nginx",
        Some("other.example"),
        "/",
        "web",
        web.addr().port(),
    );
    other["status"] = json!({ "loadBalancer": { "ingress": [{ "hostname": "nginx.example" }] } });
    api.apply(other.clone());
    let running = start(with_addresses(
        cluster_settings(&api, dir.path(), "solo"),
        &["203.0.113.7"],
    ))
    .await;
    until_status_addresses(&api, "default", "web", &["203.0.113.7"]).await;
    assert_eq!(
        status_addresses(&api, "default", "other").as_deref(),
        Some(&["nginx.example".to_string()][..]),
        "not ours: untouched"
    );

    // An endpoint change republishes; then `other` moves to our class. Once its status is
    // written, the round after the endpoint change is done too: `web` was not written again.
    api.apply(endpoint_slice(
        "default",
        "web-1",
        "web",
        &[web.addr(), "127.0.0.2:1".parse().expect("addr")],
    ));
    other["spec"]["ingressClassName"] = json!("portcullis");
    api.apply(other.clone());
    until_status_addresses(&api, "default", "other", &["203.0.113.7"]).await;
    let writes = status_writes(&api);
    assert_eq!(
        writes.iter().filter(|(_, name)| name == "web").count(),
        1,
        "{writes:?}"
    );

    // Moving to another class takes our address out.
    let mut moved = ingress(
        "default",
        "web",
        "nginx",
        Some("web.example"),
        "/",
        "web",
        web.addr().port(),
    );
    moved["status"] = api
        .get("networking.k8s.io/v1", "Ingress", "default", "web")
        .expect("web")["status"]
        .clone();
    api.apply(moved);
    until_status_addresses(&api, "default", "web", &[]).await;

    // By default, status stays in place on shutdown.
    running.shutdown().await;
    assert_eq!(
        status_addresses(&api, "default", "other").as_deref(),
        Some(&["203.0.113.7".to_string()][..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_published_service_and_is_cleared_on_shutdown_when_asked() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = spawn_simple_echo("web", "web-0").await;
    base(&api, web.addr().port());
    api.apply(ingress(
        "default",
        "web",
        "portcullis",
        Some("web.example"),
        "/",
        "web",
        web.addr().port(),
    ));
    let mut edge = service(CONTROLLER_NAMESPACE, "portcullis", 80);
    edge["spec"]["type"] = json!("LoadBalancer");
    edge["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.1" }] } });
    api.apply(edge.clone());
    let settings = ClusterSettings {
        status: StatusConfig {
            addresses: Vec::new(),
            publish_service: Some(ObjectKey::new(CONTROLLER_NAMESPACE, "portcullis")),
        },
        update_status_on_shutdown: true,
        ..cluster_settings(&api, dir.path(), "published")
    };
    let running = start(settings).await;
    until_status_addresses(&api, "default", "web", &["198.51.100.1"]).await;
    edge["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.2" }, { "hostname": "lb.example" }] } });
    api.apply(edge);
    until_status_addresses(&api, "default", "web", &["198.51.100.2", "lb.example"]).await;
    running.shutdown().await;
    assert_eq!(
        status_addresses(&api, "default", "web").as_deref(),
        Some(&[][..]),
        "cleared on shutdown: {:?}",
        api.requests().iter().rev().take(6).collect::<Vec<_>>()
    );
}

/// The tokens of the successful status writes since request number `since`.
fn successful_status_writers(api: &ApiServer, since: usize) -> Vec<Option<String>> {
    api.requests()[since..]
        .iter()
        .filter(|r| r.resource == "ingresses/status" && r.code == 200)
        .map(|r| r.token.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status_and_another_replica_takes_over() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = spawn_simple_echo("web", "web-0").await;
    base(&api, web.addr().port());
    api.apply(ingress(
        "default",
        "web",
        "portcullis",
        Some("web.example"),
        "/",
        "web",
        web.addr().port(),
    ));
    let a = start(with_addresses(
        cluster_settings(&api, dir.path(), "replica-a"),
        &["203.0.113.7"],
    ))
    .await;
    let b = start(with_addresses(
        cluster_settings(&api, dir.path(), "replica-b"),
        &["203.0.113.7"],
    ))
    .await;
    let leader = api
        .wait_for(WAIT, lease_holder)
        .await
        .expect("someone leads");
    let (follower, follower_running, leader_running) = if leader == "replica-a" {
        ("replica-b", b, a)
    } else {
        ("replica-a", a, b)
    };
    until_status_addresses(&api, "default", "web", &["203.0.113.7"]).await;
    // Every replica serves.
    until_served(&leader_running, "web.example", "/", "web").await;
    until_served(&follower_running, "web.example", "/", "web").await;
    let writes = status_writes(&api);
    assert!(
        writes
            .iter()
            .all(|(token, _)| token.as_deref() == Some(leader.as_str())),
        "{writes:?}"
    );

    // The leader loses the API (its token is refused): it cannot renew, and the other replica
    // takes the Lease once it has gone unrenewed for a lease duration.
    api.reject_token(&leader);
    let took_over = api
        .wait_for(WAIT, |api| (lease_holder(api)? == follower).then_some(()))
        .await;
    assert!(took_over.is_some(), "the follower never took over");
    let before = api.requests().len();
    let port = web.addr().port();
    api.apply(ingress(
        "default",
        "late",
        "portcullis",
        Some("late.example"),
        "/",
        "web",
        port,
    ));
    until_status_addresses(&api, "default", "late", &["203.0.113.7"]).await;
    let after = successful_status_writers(&api, before);
    let by_follower = after.iter().all(|t| t.as_deref() == Some(follower));
    assert!(!after.is_empty() && by_follower, "{after:?}");

    // A leader that shuts down hands the Lease over at once.
    api.accept_token(&leader);
    follower_running.shutdown().await;
    let back = api
        .wait_for(WAIT, |api| (lease_holder(api)? == leader).then_some(()))
        .await;
    assert!(
        back.is_some(),
        "the Lease was not taken back after the hand-over"
    );
    leader_running.shutdown().await;
}
