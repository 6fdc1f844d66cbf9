//! The cluster source against the in-process API server: every kind reaching the snapshot,
//! objects read by name, paged lists, dropped watches, `410 Gone` after compaction, an API server
//! that goes away and comes back, readiness, and endpoint changes that skip the debounce.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use model::{ObjectKey, Snapshot};
use portcullis_source::cluster::{connect, Access, ClusterConfig, ClusterSource, Retry};
use serde_json::json;
use testkube::objects::{config_map, endpoint_slice, ingress, ingress_class, secret, service};
use testkube::ApiServer;

const WAIT: Duration = Duration::from_secs(20);
const CONTROLLER: &str = "portcullis.io/ingress-controller";

fn fast() -> ClusterConfig {
    ClusterConfig {
        debounce: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        retry: Retry {
            min: Duration::from_millis(20),
            max: Duration::from_millis(300),
        },
        page_size: Some(2),
        ..ClusterConfig::default()
    }
}

async fn start(api: &ApiServer, dir: &tempfile::TempDir, config: ClusterConfig) -> ClusterSource {
    let client = connect(&Access::Kubeconfig(api.kubeconfig(dir.path(), "source")))
        .await
        .expect("a client for the test API server");
    ClusterSource::start(client, config)
}

/// Waits for a snapshot for which `check` holds.
async fn until(
    source: &ClusterSource,
    what: &str,
    check: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut updates = source.updates();
    let found = tokio::time::timeout(
        WAIT,
        updates.wait_for(|u| u.as_ref().is_some_and(|u| check(&u.snapshot))),
    )
    .await;
    match found {
        Ok(Ok(update)) => update
            .as_ref()
            .map(|u| u.snapshot.clone())
            .expect("checked"),
        _ => panic!("no snapshot with {what} within {WAIT:?}"),
    }
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn keys<T>(map: &std::collections::BTreeMap<ObjectKey, T>) -> BTreeSet<ObjectKey> {
    map.keys().cloned().collect()
}

fn server_keys(api: &ApiServer, api_version: &str, kind: &str) -> BTreeSet<ObjectKey> {
    api.list(api_version, kind)
        .iter()
        .map(|o| {
            key(
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

fn first_address(slice: &model::EndpointSlice) -> Option<&str> {
    slice
        .endpoints
        .as_ref()?
        .first()?
        .addresses
        .first()
        .map(String::as_str)
}

fn base(api: &ApiServer) {
    api.apply(ingress_class("portcullis", CONTROLLER));
    for name in ["a", "b", "c"] {
        api.apply(ingress(
            "apps",
            name,
            "portcullis",
            Some(&format!("{name}.example")),
            "/",
            "web",
            80,
        ));
    }
    api.apply(service("apps", "web", 80));
    api.apply(endpoint_slice(
        "apps",
        "web-1",
        "web",
        &["10.0.0.1:8080".parse().expect("addr")],
    ));
    api.apply(secret(
        "apps",
        "tls",
        "kubernetes.io/tls",
        &[("tls.crt", "Yw=="), ("tls.key", "aw==")],
    ));
    api.apply(secret("apps", "users", "Opaque", &[("auth", "dTpw")]));
    api.apply(secret("apps", "unrelated", "Opaque", &[("x", "eQ==")]));
    api.apply(config_map("apps", "headers", &[("X-A", "1")]));
}

/// Changes one object of every kind `base` made (and the named Secret and ConfigMap).
fn update_every_kind(api: &ApiServer) {
    api.apply(config_map("apps", "headers", &[("X-A", "2")]));
    api.apply(secret("apps", "users", "Opaque", &[("auth", "djpx")]));
    api.apply(service("apps", "web", 81));
    api.apply(endpoint_slice(
        "apps",
        "web-1",
        "web",
        &["10.0.0.2:8080".parse().expect("addr")],
    ));
    api.apply(ingress_class("portcullis", "example.com/other"));
    api.apply(secret(
        "apps",
        "tls",
        "kubernetes.io/tls",
        &[("tls.crt", "ZA=="), ("tls.key", "aw==")],
    ));
    api.apply(ingress(
        "apps",
        "b",
        "portcullis",
        Some("b.example"),
        "/v2",
        "web",
        80,
    ));
}

/// Whether `s` shows every change [`update_every_kind`] made.
fn every_update_seen(s: &Snapshot) -> bool {
    let cm = s.config_maps.get(&key("apps", "headers"));
    let svc = s.services.get(&key("apps", "web"));
    let slice = s.endpoint_slices.get(&key("apps", "web-1"));
    let class = s.ingress_classes.get(&key("", "portcullis"));
    let b = s.ingresses.get(&key("apps", "b"));
    let users = s.secrets.get(&key("apps", "users"));
    let tls = s.secrets.get(&key("apps", "tls"));
    cm.and_then(|c| c.data.as_ref())
        .is_some_and(|d| d.get("X-A").map(String::as_str) == Some("2"))
        && svc
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .is_some_and(|p| p[0].port == 81)
        && slice.is_some_and(|s| first_address(s) == Some("10.0.0.2"))
        && class
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.controller.as_deref())
            == Some("example.com/other")
        && b.and_then(|b| b.spec.as_ref())
            .and_then(|s| s.rules.as_ref())
            .is_some_and(|r| {
                r[0].http
                    .as_ref()
                    .is_some_and(|h| h.paths[0].path.as_deref() == Some("/v2"))
            })
        && users
            .and_then(|u| u.data.as_ref())
            .is_some_and(|d| d.get("auth").is_some_and(|v| v.0 == b"v:q"))
        && tls
            .and_then(|t| t.data.as_ref())
            .is_some_and(|d| d.get("tls.crt").is_some_and(|v| v.0 == b"d"))
}

#[tokio::test]
async fn every_kind_reaches_the_snapshot_and_named_objects_are_read_by_name() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    base(&api);
    let source = start(&api, &dir, fast()).await;
    let first = until(&source, "the initial lists", |_| true).await;
    assert_eq!(first.ingresses.len(), 3, "paged through continue tokens");
    assert_eq!(
        keys(&first.secrets),
        BTreeSet::from([key("apps", "tls")]),
        "only TLS Secrets are watched whole"
    );
    assert!(first.config_maps.is_empty());
    assert!(source.sync_state().borrow().ready);

    // Annotations name a Secret and a ConfigMap: both are read, by name.
    let mut a = ingress("apps", "a", "portcullis", Some("a.example"), "/", "web", 80);
    a["metadata"]["annotations"] = json!({
        "nginx.ingress.kubernetes.io/auth-secret": "users",
        "nginx.ingress.kubernetes.io/custom-headers": "apps/headers",
    });
    api.apply(a.clone());
    until(&source, "the named Secret and ConfigMap", |s| {
        s.secrets.contains_key(&key("apps", "users"))
            && s.config_maps.contains_key(&key("apps", "headers"))
    })
    .await;
    let named: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.resource == "configmaps")
        .collect();
    assert!(
        !named.is_empty()
            && named
                .iter()
                .all(|r| r.namespace.as_deref() == Some("apps") && r.verb != "get")
    );

    // Updates of every kind.
    update_every_kind(&api);
    until(&source, "every update", every_update_seen).await;

    // Deletions of every kind; once nothing names them, named objects leave the snapshot.
    api.delete("networking.k8s.io/v1", "Ingress", "apps", "c");
    api.delete("v1", "Service", "apps", "web");
    api.delete("discovery.k8s.io/v1", "EndpointSlice", "apps", "web-1");
    api.delete("networking.k8s.io/v1", "IngressClass", "", "portcullis");
    api.delete("v1", "Secret", "apps", "tls");
    a["metadata"]["annotations"] = json!({});
    api.apply(a);
    let last = until(&source, "every deletion", |s| {
        s.ingresses.len() == 2
            && s.services.is_empty()
            && s.endpoint_slices.is_empty()
            && s.ingress_classes.is_empty()
            && s.secrets.is_empty()
            && s.config_maps.is_empty()
    })
    .await;
    assert!(!last.secrets.contains_key(&key("apps", "unrelated")));
}

#[tokio::test]
async fn dropped_watches_compaction_and_an_outage_lose_and_duplicate_nothing() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    base(&api);
    let source = start(&api, &dir, fast()).await;
    until(&source, "the initial lists", |_| true).await;

    // The server ends every watch; changes made meanwhile arrive through the new watches.
    api.drop_watches();
    api.apply(ingress("apps", "d", "portcullis", None, "/d", "web", 80));
    until(
        &source,
        "the Ingress added after the watches were dropped",
        |s| s.ingresses.contains_key(&key("apps", "d")),
    )
    .await;

    // The server goes away; while it is away objects change and history is compacted, so the
    // watches come back to `410 Gone` and must list again.
    api.stop().await;
    api.delete("networking.k8s.io/v1", "Ingress", "apps", "a");
    api.delete("discovery.k8s.io/v1", "EndpointSlice", "apps", "web-1");
    api.apply(ingress("apps", "e", "portcullis", None, "/e", "web", 80));
    api.apply(service("apps", "web", 90));
    api.compact();
    api.restart().await;
    let port = |s: &Snapshot| {
        s.services
            .get(&key("apps", "web"))
            .and_then(|svc| svc.spec.as_ref())
            .and_then(|p| p.ports.as_ref())
            .map(|p| p[0].port)
    };
    // Every kind lists again on its own: wait until all of them match the server.
    until(
        &source,
        "the objects as the server has them after the outage",
        |s| {
            keys(&s.ingresses) == server_keys(&api, "networking.k8s.io/v1", "Ingress")
                && keys(&s.services) == server_keys(&api, "v1", "Service")
                && keys(&s.endpoint_slices)
                    == server_keys(&api, "discovery.k8s.io/v1", "EndpointSlice")
                && keys(&s.ingress_classes)
                    == server_keys(&api, "networking.k8s.io/v1", "IngressClass")
                && port(s) == Some(90)
        },
    )
    .await;
    let relisted = api
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "ingresses")
        .count();
    assert!(
        relisted >= 2,
        "the Ingress watch listed again after the 410"
    );

    // Watches resume from bookmarks too.
    api.bookmark();
    api.apply(ingress("apps", "f", "portcullis", None, "/f", "web", 80));
    until(&source, "an Ingress after a bookmark", |s| {
        s.ingresses.contains_key(&key("apps", "f"))
    })
    .await;
}

#[tokio::test]
async fn nothing_is_handed_on_before_every_list_has_synced() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    base(&api);
    api.reject_token("source");
    let source = start(&api, &dir, fast()).await;
    // Every list is refused: the error names the watches and why.
    let refused = source
        .first(Duration::from_millis(300))
        .await
        .expect_err("nothing synced");
    assert!(refused.to_string().contains("Ingress"), "{refused}");
    let state = source.sync_state().borrow().clone();
    assert!(
        !state.ready && state.synced.is_empty() && state.waiting.len() == 5,
        "{state}"
    );
    assert!(source.updates().borrow().is_none());

    api.accept_token("source");
    let s = source
        .first(WAIT)
        .await
        .expect("synced once the token is accepted");
    assert_eq!(s.ingresses.len(), 3);
    let state = source.sync_state().borrow().clone();
    assert!(state.ready && state.waiting.is_empty(), "{state}");
    assert_eq!(
        state.to_string(),
        "synced: Ingress, IngressClass, Service, EndpointSlice, Secret (type=kubernetes.io/tls)\n"
    );
}

#[tokio::test]
async fn endpoint_changes_are_not_held_back_by_the_debounce() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    base(&api);
    // A debounce no test waits out: whatever arrives was handed on without it.
    let config = ClusterConfig {
        debounce: Duration::from_secs(3600),
        max_delay: Duration::from_secs(3600),
        ..fast()
    };
    let source = start(&api, &dir, config).await;
    let first = until(&source, "the initial lists", |_| true).await;
    api.apply(ingress(
        "apps",
        "held",
        "portcullis",
        None,
        "/held",
        "web",
        80,
    ));
    api.apply(endpoint_slice(
        "apps",
        "web-1",
        "web",
        &["10.0.0.9:8080".parse().expect("addr")],
    ));
    let s = until(&source, "the endpoint change", |s| {
        s.endpoint_slices
            .get(&key("apps", "web-1"))
            .and_then(|s| first_address(s))
            == Some("10.0.0.9")
    })
    .await;
    assert!(!Arc::ptr_eq(&first, &s));
    assert!(
        s.ingresses.contains_key(&key("apps", "held")),
        "changes pending before it go along"
    );
}

/// Waits for an update after revision `after`.
async fn update_after(source: &ClusterSource, after: u64) -> portcullis_source::cluster::Update {
    let mut updates = source.updates();
    let found = tokio::time::timeout(
        WAIT,
        updates.wait_for(|u| u.as_ref().is_some_and(|u| u.revision > after)),
    )
    .await;
    match found {
        Ok(Ok(update)) => update.clone().expect("checked"),
        _ => panic!("no update after revision {after} within {WAIT:?}"),
    }
}

#[tokio::test]
async fn updates_say_what_changed_since_the_update_before() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    base(&api);
    let source = start(&api, &dir, fast()).await;
    let first = update_after(&source, 0).await;
    assert_eq!(
        first.changes.since,
        u64::MAX,
        "nothing came before the first"
    );
    assert!(first.changes.objects.is_empty());

    api.apply(endpoint_slice(
        "apps",
        "web-1",
        "web",
        &["10.0.0.7:8080".parse().expect("addr")],
    ));
    let second = update_after(&source, first.revision).await;
    assert_eq!(second.changes.since, first.revision);
    assert_eq!(
        *second.changes.objects,
        [(model::Kind::EndpointSlice, key("apps", "web-1"))]
    );

    api.apply(service("apps", "web", 81));
    let third = update_after(&source, second.revision).await;
    assert_eq!(third.changes.since, second.revision);
    assert_eq!(
        *third.changes.objects,
        [(model::Kind::Service, key("apps", "web"))]
    );

    assert!(api.delete("networking.k8s.io/v1", "Ingress", "apps", "b"));
    let fourth = update_after(&source, third.revision).await;
    assert_eq!(fourth.changes.since, third.revision);
    assert_eq!(
        *fourth.changes.objects,
        [(model::Kind::Ingress, key("apps", "b"))]
    );
}
