//! Helpers for the cluster-mode tests: starting Portcullis against the in-process API server with
//! settings fast enough for tests, and waiting on what it serves and writes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use model::ObjectKey;
use portcullis::cluster::ClusterSettings;
use portcullis::{Running, Settings};
use serde_json::Value;
use source::cluster::{Access, ClusterConfig, ElectionConfig, EventConfig, Retry, StatusConfig};
use testkube::ApiServer;

use crate::support::{send, TestRequest};

/// How long anything may take to happen.
pub const WAIT: Duration = Duration::from_secs(20);
/// Our controller name.
pub const CONTROLLER: &str = "portcullis.io/ingress-controller";
/// The namespace the controller runs in.
pub const CONTROLLER_NAMESPACE: &str = "portcullis";

/// Watching with short debounce and retry times.
pub fn source_config() -> ClusterConfig {
    ClusterConfig {
        debounce: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        retry: Retry {
            min: Duration::from_millis(20),
            max: Duration::from_millis(300),
        },
        ..ClusterConfig::default()
    }
}

/// Cluster settings for replica `token` (its kubeconfig token and its election identity), with a
/// one-second Lease.
pub fn cluster_settings(api: &ApiServer, dir: &Path, token: &str) -> ClusterSettings {
    ClusterSettings {
        access: Access::Kubeconfig(api.kubeconfig(dir, token)),
        source: source_config(),
        status: StatusConfig::default(),
        update_status_on_shutdown: false,
        election: ElectionConfig {
            lease_duration: Duration::from_millis(1000),
            renew_deadline: Duration::from_millis(600),
            retry_period: Duration::from_millis(100),
            ..ElectionConfig::new(
                ObjectKey::new(CONTROLLER_NAMESPACE, "portcullis-leader"),
                token.to_string(),
            )
        },
        events: EventConfig::new(String::new(), String::new()),
    }
}

/// Starts Portcullis in cluster mode with `cluster`.
pub async fn start(cluster: ClusterSettings) -> Running {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let settings = Settings {
        manifests: Vec::new(),
        http_addr: loopback,
        https_addr: None,
        admin_addr: Some(loopback),
        translate: translate::Options::default(),
        proxy: proxy::ProxyConfig {
            workers: 1,
            ..crate::support::quiet_proxy()
        },
    };
    portcullis::cluster::start(settings, cluster)
        .await
        .expect("Portcullis starts in cluster mode")
}

/// Polls `host`+`path` through the proxy until the echo named `service` answers.
pub async fn until_served(running: &Running, host: &str, path: &str, service: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match send(running.http_addr, &TestRequest::get(host, path)).await {
            Ok(r) if r.served_by() == service => return,
            Ok(r) => last = r.served_by(),
            Err(e) => last = e,
        }
        tokio::task::yield_now().await;
    }
    panic!("{host}{path} not served by {service} within {WAIT:?} (last: {last})");
}

/// Polls until a request for `host`+`path` gets `status`.
pub async fn until_status(running: &Running, host: &str, path: &str, status: StatusCode) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = send(running.http_addr, &TestRequest::get(host, path)).await {
            if r.status == status {
                return;
            }
        }
        tokio::task::yield_now().await;
    }
    panic!("{host}{path} never answered {status}");
}

/// `/readyz`: its status and text.
pub async fn readyz(running: &Running) -> (StatusCode, String) {
    let admin = running.admin_addr.expect("admin server");
    let r = send(admin, &TestRequest::get("admin", "/readyz"))
        .await
        .expect("/readyz answers");
    (r.status, r.text())
}

/// Waits until the published table satisfies `check`.
pub async fn wait_table(running: &Running, check: impl Fn(&table::Table) -> bool) {
    let mut generations = running.generations.clone();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if check(&running.published.load()) {
                return;
            }
            if generations.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok() && check(&running.published.load()),
        "the table never got there"
    );
}

/// The addresses in an Ingress's status on the server (`None`: no such Ingress).
pub fn status_addresses(api: &ApiServer, namespace: &str, name: &str) -> Option<Vec<String>> {
    let ingress = api.get("networking.k8s.io/v1", "Ingress", namespace, name)?;
    let list = ingress["status"]["loadBalancer"]["ingress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Some(
        list.iter()
            .map(|e: &Value| {
                e["ip"]
                    .as_str()
                    .or(e["hostname"].as_str())
                    .unwrap_or("")
                    .to_string()
            })
            .collect(),
    )
}

/// Waits until Ingress `namespace/name` has exactly `want` in its status.
pub async fn until_status_addresses(api: &ApiServer, namespace: &str, name: &str, want: &[&str]) {
    let found = api
        .wait_for(WAIT, |api| {
            (status_addresses(api, namespace, name)? == want).then_some(())
        })
        .await;
    assert!(
        found.is_some(),
        "status of {namespace}/{name} never became {want:?} (it is {:?})",
        status_addresses(api, namespace, name)
    );
}

/// The holder of the election Lease on the server.
pub fn lease_holder(api: &ApiServer) -> Option<String> {
    api.get(
        "coordination.k8s.io/v1",
        "Lease",
        CONTROLLER_NAMESPACE,
        "portcullis-leader",
    )?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

/// Status writes so far, by the token that made them.
pub fn status_writes(api: &ApiServer) -> Vec<(Option<String>, String)> {
    api.requests()
        .into_iter()
        .filter(|r| r.resource == "ingresses/status" && (r.verb == "update" || r.verb == "patch"))
        .map(|r| (r.token, r.name.unwrap_or_default()))
        .collect()
}

/// The Events on the server about `kind` `namespace/name`: (reason, note, series count, token of
/// the replica that created it).
pub fn events_about(
    api: &ApiServer,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, u64)> {
    api.list("events.k8s.io/v1", "Event")
        .iter()
        .filter(|e| {
            e["regarding"]["kind"] == kind
                && e["regarding"]["namespace"].as_str().unwrap_or("") == namespace
                && e["regarding"]["name"] == name
        })
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
                e["series"]["count"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

/// Waits until the Events about `kind` `namespace/name` satisfy `check`; returns them.
pub async fn until_events(
    api: &ApiServer,
    kind: &str,
    namespace: &str,
    name: &str,
    check: impl Fn(&[(String, String, u64)]) -> bool,
) -> Vec<(String, String, u64)> {
    api.wait_for(WAIT, |api| {
        let events = events_about(api, kind, namespace, name);
        check(&events).then_some(events)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the Events about {kind} {namespace}/{name} never got there: {:?}",
            events_about(api, kind, namespace, name)
        )
    })
}
