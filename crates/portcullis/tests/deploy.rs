//! What users apply: `deploy/*.yaml` and the Helm chart in `deploy/helm/portcullis` parse as valid
//! Kubernetes objects (k8s-openapi reads and writes every field back unchanged, so a misspelt
//! field fails), the chart renders the same objects as the flat manifests, the Deployment's flags
//! exist, and the RBAC rules grant exactly the calls the controller makes — checked both against
//! the list the code declares and against the requests a running controller sends.

mod cluster_support;
mod deploy_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use model::k8s_openapi;
use model::ObjectKey;
use portcullis::cluster::ClusterSettings;
use serde_json::{json, Value};
use source::cluster::{EventConfig, StatusConfig, API_CALLS};
use testkube::objects::{config_map, endpoint_slice, ingress, ingress_class, secret, service};
use testkube::ApiServer;

use deploy_support::template::render;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document of `text` as JSON (empty documents skipped).
fn documents(text: &str, origin: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// Reads `object` as the k8s-openapi type of its kind and checks that nothing is lost on the way
/// back (an unknown or misspelt field would be).
fn check_object(object: &Value, origin: &str) {
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    let kind = object["kind"].as_str().unwrap_or("");
    let back = match kind {
        "Namespace" => roundtrip::<core::v1::Namespace>(object),
        "ServiceAccount" => roundtrip::<core::v1::ServiceAccount>(object),
        "Service" => roundtrip::<core::v1::Service>(object),
        "ClusterRole" => roundtrip::<rbac::v1::ClusterRole>(object),
        "ClusterRoleBinding" => roundtrip::<rbac::v1::ClusterRoleBinding>(object),
        "Role" => roundtrip::<rbac::v1::Role>(object),
        "RoleBinding" => roundtrip::<rbac::v1::RoleBinding>(object),
        "IngressClass" => roundtrip::<networking::v1::IngressClass>(object),
        "Deployment" => roundtrip::<apps::v1::Deployment>(object),
        "PodDisruptionBudget" => roundtrip::<policy::v1::PodDisruptionBudget>(object),
        other => panic!("{origin}: unexpected kind {other:?}"),
    };
    let back = back.unwrap_or_else(|e| panic!("{origin}: {kind} is not valid: {e}"));
    assert_eq!(
        &back, object,
        "{origin}: {kind} does not read back unchanged"
    );
}

fn flat_manifests() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read a manifest");
            documents(&text, &f.display().to_string())
        })
        .collect()
}

/// Renders the chart with its values.yaml, `overrides` merged in, as release `portcullis` in
/// namespace `portcullis`.
fn render_chart(overrides: Value) -> Vec<Value> {
    let chart = repo().join("deploy/helm/portcullis");
    let read =
        |p: &str| std::fs::read_to_string(chart.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut values = documents(&read("values.yaml"), "values.yaml").remove(0);
    testkube::merge_patch(&mut values, &overrides);
    let meta = documents(&read("Chart.yaml"), "Chart.yaml").remove(0);
    let root = json!({
        "Values": values,
        "Release": { "Name": "portcullis", "Namespace": "portcullis", "Service": "Helm" },
        "Chart": { "Version": meta["version"], "AppVersion": meta["appVersion"], "Name": meta["name"] },
    });
    let mut templates: Vec<PathBuf> = std::fs::read_dir(chart.join("templates"))
        .expect("templates/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    templates.sort();
    templates
        .iter()
        .flat_map(|t| {
            let text = std::fs::read_to_string(t).expect("read a template");
            let origin = t.display().to_string();
            let rendered = render(&text, &root).unwrap_or_else(|e| panic!("{origin}: {e}"));
            documents(&rendered, &origin)
        })
        .collect()
}

fn by_id(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|o| {
            let id = (
                o["kind"].as_str().unwrap_or("").to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            (id, o)
        })
        .collect()
}

#[test]
fn the_flat_manifests_are_valid_objects() {
    let objects = flat_manifests();
    for o in &objects {
        check_object(o, "deploy/");
    }
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let want: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]
    .into();
    assert_eq!(kinds, want);
    let objects = by_id(objects);
    let deployment = &objects[&("Deployment".to_string(), "portcullis".to_string())];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let env: Vec<&str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["args"]
        .as_array()
        .expect("args")
        .contains(&json!("--admin-addr=0.0.0.0:10254")));
    let class = &objects[&("IngressClass".to_string(), "portcullis".to_string())];
    assert_eq!(
        class["spec"]["controller"],
        "portcullis.io/ingress-controller"
    );
    assert_eq!(
        objects[&("Service".to_string(), "portcullis".to_string())]["spec"]["type"],
        "LoadBalancer"
    );
}

/// The flags `portcullis run` knows, from its help.
fn run_flags() -> BTreeSet<String> {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--help"])
        .output()
        .expect("portcullis run --help");
    String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

#[test]
fn the_deployment_passes_only_flags_that_exist() {
    let known = run_flags();
    let objects = by_id(flat_manifests());
    let deployment = &objects[&("Deployment".to_string(), "portcullis".to_string())];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args");
    assert_eq!(args[0], "run");
    for arg in &args[1..] {
        let flag = arg.as_str().and_then(|a| a.split('=').next()).unwrap_or("");
        assert!(known.contains(flag), "portcullis run has no {flag}");
    }
}

/// Drops the labels only Helm adds.
fn without_helm_labels(mut o: Value) -> Value {
    if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    o
}

#[test]
fn the_chart_renders_the_flat_manifests() {
    let rendered = render_chart(json!({}));
    for o in &rendered {
        check_object(o, "deploy/helm/portcullis");
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    let rendered = by_id(rendered.into_iter().map(without_helm_labels).collect());
    let mut flat = by_id(flat_manifests());
    // Helm installs into a namespace it is given; it does not create it.
    flat.remove(&("Namespace".to_string(), "portcullis".to_string()));
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        flat.keys().collect::<Vec<_>>()
    );
    for (id, object) in &flat {
        assert_eq!(
            &rendered[id], object,
            "{id:?} differs between the chart and deploy/"
        );
    }
}

#[test]
fn the_chart_values_reach_the_objects() {
    let rendered = by_id(render_chart(json!({
        "replicaCount": 3,
        "image": { "repository": "registry.example/portcullis", "tag": "1.2.3" },
        "ingressClass": { "name": "edge", "default": true },
        "publishService": { "pathOverride": "infra/edge-lb" },
        "extraArgs": ["--watch-namespace=apps", "--workers=2"],
        "nodeSelector": { "kubernetes.io/os": "linux" },
        "tolerations": [{ "key": "edge", "operator": "Exists", "effect": "NoSchedule" }],
        "service": { "type": "NodePort", "annotations": { "lb.example/internal": "true" }, "externalTrafficPolicy": "" },
        "resources": { "requests": { "cpu": "1" } },
    })));
    for o in rendered.values() {
        check_object(o, "deploy/helm/portcullis with values");
    }
    let class = &rendered[&("IngressClass".to_string(), "edge".to_string())];
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    let deployment = &rendered[&("Deployment".to_string(), "portcullis".to_string())];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(container["image"], "registry.example/portcullis:1.2.3");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "edge");
    assert_eq!(
        container["resources"],
        json!({ "requests": { "cpu": "1", "memory": "128Mi" }, "limits": { "memory": "512Mi" } })
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--ingress-class=edge"));
    assert!(args.contains(&"--publish-service=infra/edge-lb"));
    assert!(args.ends_with(&["--watch-namespace=apps", "--workers=2"]));
    let known = run_flags();
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap_or("");
        assert!(known.contains(flag), "portcullis run has no {flag}");
    }
    let service = &rendered[&("Service".to_string(), "portcullis".to_string())];
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(
        service["metadata"]["annotations"]["lb.example/internal"],
        "true"
    );
    assert!(service["spec"].get("externalTrafficPolicy").is_none());
}

/// (group, resource, verb) triples of RBAC rules.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    out.insert((
                        group.as_str().unwrap_or("").to_string(),
                        resource.as_str().unwrap_or("").to_string(),
                        verb.as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn declared(own_namespace: bool) -> BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .filter(|c| c.own_namespace == own_namespace)
        .flat_map(|c| {
            c.verbs
                .iter()
                .map(move |v| (c.group.to_string(), c.resource.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_the_calls_the_code_declares() {
    let objects = by_id(flat_manifests());
    let cluster = &objects[&("ClusterRole".to_string(), "portcullis".to_string())];
    let role = &objects[&("Role".to_string(), "portcullis".to_string())];
    assert_eq!(grants(&cluster["rules"]), declared(false));
    assert_eq!(grants(&role["rules"]), declared(true));
    assert_eq!(role["metadata"]["namespace"], "portcullis");
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let b = &objects[&(binding.to_string(), "portcullis".to_string())];
        assert_eq!(
            b["subjects"],
            json!([{ "kind": "ServiceAccount", "name": "portcullis", "namespace": "portcullis" }])
        );
    }
}

/// An Ingress in `apps` routing `host` and `path` to `web:80`.
fn app_ingress(name: &str, host: &str, path: &str) -> Value {
    ingress("apps", name, "portcullis", Some(host), path, "web", 80)
}

/// Objects that make the controller use every kind of call: a published Service, an Ingress naming
/// a Secret and a ConfigMap, and one with a problem (for Events).
fn seed(api: &ApiServer) {
    let ns = cluster_support::CONTROLLER_NAMESPACE;
    api.apply(ingress_class("portcullis", cluster_support::CONTROLLER));
    api.apply(service("apps", "web", 80));
    let endpoint = "10.0.0.1:80".parse().expect("addr");
    api.apply(endpoint_slice("apps", "web-1", "web", &[endpoint]));
    let mut edge = service(ns, "portcullis", 80);
    edge["spec"]["type"] = json!("LoadBalancer");
    edge["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.1" }] } });
    api.apply(edge);
    api.apply(secret("apps", "users", "Opaque", &[("auth", "dTpw")]));
    api.apply(config_map("apps", "headers", &[("X-A", "1")]));
    let mut web = app_ingress("web", "web.example", "/");
    web["metadata"]["annotations"] = json!({
        "nginx.ingress.kubernetes.io/auth-secret": "users",
        "nginx.ingress.kubernetes.io/custom-headers": "headers",
    });
    api.apply(web);
    api.apply(app_ingress("bad", "bad.example", "relative"));
}

/// The calls made, as (group, resource, verb), cluster-wide (`false`) and in the controller's
/// namespace (`true`).
fn calls_made(api: &ApiServer) -> BTreeMap<bool, BTreeSet<(String, String, String)>> {
    let mut made: BTreeMap<bool, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for r in api.requests() {
        let own = r.resource == "leases";
        if own {
            let ns = r.namespace.as_deref();
            assert_eq!(
                ns,
                Some(cluster_support::CONTROLLER_NAMESPACE),
                "Leases only in the controller's namespace"
            );
        }
        let call = (r.group.to_string(), r.resource.clone(), r.verb.to_string());
        made.entry(own).or_default().insert(call);
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_controller_makes_exactly_the_declared_calls() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    seed(&api);
    let ns = cluster_support::CONTROLLER_NAMESPACE;
    let settings = ClusterSettings {
        status: StatusConfig {
            addresses: Vec::new(),
            publish_service: Some(ObjectKey::new(ns, "portcullis")),
        },
        update_status_on_shutdown: true,
        events: EventConfig::new(String::new(), String::new()),
        ..cluster_support::cluster_settings(&api, dir.path(), "rbac")
    };
    let running = cluster_support::start(settings).await;
    cluster_support::until_status_addresses(&api, "apps", "web", &["198.51.100.1"]).await;
    cluster_support::until_events(&api, "Ingress", "apps", "bad", |e| !e.is_empty()).await;
    // Fixed, and once that was seen (the marker's Event says so) broken again: the Event's count
    // goes up (a patch).
    api.apply(app_ingress("bad", "bad.example", "/"));
    api.apply(app_ingress("marker", "m.example", "relative"));
    cluster_support::until_events(&api, "Ingress", "apps", "marker", |e| !e.is_empty()).await;
    api.apply(app_ingress("bad", "bad.example", "relative"));
    cluster_support::until_events(&api, "Ingress", "apps", "bad", |e| {
        e.iter().any(|(_, _, n)| *n > 1)
    })
    .await;
    // Shutting down clears status (re-reading each Ingress) and hands the Lease over.
    running.shutdown().await;

    let made = calls_made(&api);
    let cluster_wide = made.get(&false).cloned().unwrap_or_default();
    assert_eq!(cluster_wide, declared(false), "cluster-wide calls");
    let own = made.get(&true).cloned().unwrap_or_default();
    assert_eq!(own, declared(true), "calls in the controller's namespace");
}
