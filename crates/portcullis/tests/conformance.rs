//! The Ingress conformance case tables in `tests/data/conformance/` run through the real proxy:
//! every scenario of kubernetes-sigs/ingress-controller-conformance, the 2019 legacy checks, the
//! Gateway API HTTPRoute cases that also fit Ingress, and the kubernetes.io pathType and wildcard
//! tables.
//!
//! Each scenario gets its own manifest folder, echo pods on loopback ports and its own Portcullis
//! with HTTP and HTTPS listeners; https requests (and http requests redirected to https) go over TLS
//! with the scenario's self-signed Secret, like the suite's client.
//! A test runs all of its scenarios and reports every failure at the end, so one failure does not
//! hide the others.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::uri::Authority;
use http::{Method, Uri};
use hyper_util::rt::TokioIo;
use model::{Object, Parsed};
use portcullis::Running;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use support::{
    deploy, endpoint_slice_yaml, ingress_yaml, read_response, routed_backend, send,
    send_following_redirects, spawn_echo, start, start_with_https, translate_folder,
    write_manifest, EchoIdentity, Echoed, IngressPath, IngressRule, ServiceSpec, TestRequest,
    TestResponse, NAMESPACE, REQUEST_TIMEOUT,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::extensions::GeneralName;

/// The class the conformance suite's Ingresses carry.
const CLASS: &str = "conformance";
/// The class of the legacy 2019 manifests.
const LEGACY_CLASS: &str = "ambassador";

// ---------------------------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------------------------

/// The case tables, as copied into the repository (`tests/data/conformance/`, see its README).
const SCENARIOS: &str = include_str!("data/conformance/scenarios.json");
const PATH_EXAMPLES: &str = include_str!("data/conformance/path_examples.json");
const GATEWAY_CASES: &str = include_str!("data/conformance/gateway_api_extra_cases.json");

fn parse_table<T: DeserializeOwned>(file: &str, text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| {
        panic!("{file} does not have the shape this runner knows (a new kind of expectation?): {e}")
    })
}

#[derive(Deserialize)]
struct Scenarios {
    case_count: usize,
    cases: Vec<Case>,
    legacy_checks: Legacy,
}

#[derive(Clone, Debug, Deserialize)]
struct Case {
    id: String,
    ingress_manifests: Vec<IngressManifest>,
    backends: Vec<BackendSpec>,
    requests: Vec<CaseRequest>,
    setup: Vec<serde_json::Value>,
    ingress_status_expectation: String,
}

#[derive(Clone, Debug, Deserialize)]
struct IngressManifest {
    name: String,
    effective_manifest_derived: String,
}

#[derive(Clone, Debug, Deserialize)]
struct BackendSpec {
    service: String,
    service_port: u16,
    service_port_name: Option<String>,
    deployment: String,
    replicas: usize,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
struct CaseRequest {
    method: String,
    scheme: String,
    host_header: Option<String>,
    sni: Option<String>,
    path: String,
    count: usize,
    expect: Expect,
}

/// Every expectation a scenario request can carry; an unknown one fails the parse, so nothing new
/// in the data passes unchecked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<u16>,
    backend_service: Option<String>,
    backend_port_in_ingress: Option<PortRef>,
    response_proto: Option<String>,
    response_headers: Option<Vec<KeyValue>>,
    backend_saw_method: Option<String>,
    backend_saw_path: Option<String>,
    backend_saw_proto: Option<String>,
    backend_saw_host: Option<String>,
    backend_saw_headers: Option<Vec<KeyValue>>,
    tls_certificate_hostname: Option<String>,
    status_all: Option<u16>,
    distinct_pods: Option<usize>,
    #[allow(dead_code)]
    distinct_pods_note: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortRef {
    number: Option<u16>,
    name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct KeyValue {
    key: String,
    value: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Legacy {
    manifests: Vec<LegacyManifest>,
    checks: Vec<LegacyCheck>,
}

#[derive(Clone, Debug, Deserialize)]
struct LegacyManifest {
    file: String,
    yaml: String,
}

#[derive(Clone, Debug, Deserialize)]
struct LegacyCheck {
    check: String,
    manifest_file: String,
    request: LegacyRequest,
    expect: LegacyExpect,
}

#[derive(Clone, Debug, Deserialize)]
struct LegacyRequest {
    method: String,
    scheme: String,
    host_header: Option<String>,
    path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyExpect {
    status: u16,
    backend_test_id: Option<String>,
    backend_saw_path: Option<String>,
    backend_saw_host: Option<String>,
}

#[derive(Deserialize)]
struct GatewayCases {
    tests: Vec<GatewayTest>,
}

#[derive(Clone, Debug, Deserialize)]
struct GatewayTest {
    test: String,
    cases: Vec<GatewayCase>,
}

#[derive(Clone, Debug, Deserialize)]
struct GatewayCase {
    host: Option<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: GatewayExpect,
    applies_to_ingress: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum GatewayExpect {
    Status(u16),
    Backend(String),
}

#[derive(Deserialize)]
struct PathExamples {
    path_examples: Vec<PathRow>,
    /// The table's rows with one request each ("(all paths)" counts once).
    path_example_cases_expanded: Vec<serde_json::Value>,
    host_wildcard_examples: Vec<HostRow>,
}

#[derive(Clone, Debug, Deserialize)]
struct PathRow {
    row: u32,
    paths: Vec<PathSpec>,
    request_paths: Option<Vec<String>>,
    matches: bool,
    matching_path_derived: Option<PathSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct PathSpec {
    path: String,
    #[serde(rename = "pathType")]
    path_type: String,
}

#[derive(Clone, Debug, Deserialize)]
struct HostRow {
    row: u32,
    rule_host: String,
    request_host_header: String,
    matches: bool,
}

// ---------------------------------------------------------------------------------------------
// Running sub-cases and collecting failures
// ---------------------------------------------------------------------------------------------

/// Runs one sub-case on its own task, so that even a panic in it becomes a reported failure.
async fn isolated<F, T>(label: &str, run: F) -> Result<T, String>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(run).await.map_err(|e| {
        let why = if e.is_panic() {
            let payload = e.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string())
        } else {
            e.to_string()
        };
        format!("{label}: aborted: {why}")
    })
}

/// What a test's sub-cases found: how many cases they checked, and every failure.
#[derive(Default)]
struct Tally {
    ran: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Runs a sub-case that returns how many cases it checked and its failures, adding them (or
    /// its panic) to the tally.
    async fn sub_case<F>(&mut self, label: &str, run: F)
    where
        F: Future<Output = (usize, Vec<String>)> + Send + 'static,
    {
        match isolated(label, run).await {
            Ok((ran, found)) => {
                self.ran += ran;
                self.failures.extend(found);
            }
            Err(aborted) => self.failures.push(aborted),
        }
    }

    /// Passes only if every one of the `expected` cases the data holds was checked and none
    /// failed; data without cases fails too, since it would check nothing.
    fn report(self, what: &str, expected: usize) {
        let Tally { ran, mut failures } = self;
        if expected == 0 {
            failures.push("the data holds no cases".into());
        } else if ran != expected {
            failures.insert(
                0,
                format!("checked {ran} of the {expected} cases in the data"),
            );
        }
        if failures.is_empty() {
            eprintln!("{what}: all {ran} cases passed");
            return;
        }
        panic!(
            "{what}: {} failure(s), {ran} of {expected} cases checked:\n  - {}",
            failures.len(),
            failures.join("\n  - ")
        );
    }
}

fn temp_folder() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary manifest folder")
}

/// Whether a header list (response headers or the echo's) satisfies a `key`/`value` expectation:
/// the key is present, and `*` or one of its values equals `value`.
fn header_matches(values: &[String], expected: &str) -> bool {
    !values.is_empty() && (expected == "*" || values.iter().any(|v| v == expected))
}

fn response_header_values(response: &TestResponse, key: &str) -> Vec<String> {
    response
        .headers
        .get_all(key)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite's client: a new connection per request, TLS without verification, redirects by hand
// ---------------------------------------------------------------------------------------------

/// A response and, when it came over TLS, the certificate the server presented (DER).
struct Exchange {
    response: TestResponse,
    certificate: Option<Vec<u8>>,
}

/// The suite's TLS client: no verification, HTTP/1.1 only (Go's transport offers no h2 once a
/// custom TLS configuration is set).
fn suite_tls_config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(support::SkipVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends one request over a new TLS connection to `addr` with SNI `server_name`.
async fn send_tls(
    addr: SocketAddr,
    server_name: &str,
    request: &TestRequest,
) -> Result<Exchange, String> {
    let exchange = async {
        let config = suite_tls_config()?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("server name {server_name:?}: {e}"))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} for {server_name}: {e}"))?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.as_ref().to_vec());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 over TLS with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(request.to_hyper()?)
            .await
            .map_err(|e| format!("{} {}: {e}", request.method, request.target))?;
        Ok(Exchange {
            response: read_response(response).await?,
            certificate,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no response over TLS within {REQUEST_TIMEOUT:?}"))?
}

/// Sends a request the way the suite does: a new connection for each request, Host (and for https
/// the SNI) set to the URL's host, and redirects followed by hand with the same method to the
/// Location's scheme, host and path (the query is dropped), always connecting to Portcullis's own
/// listener for that scheme.
async fn suite_send(
    running: &Running,
    scheme: &str,
    host: &str,
    sni: Option<&str>,
    method: &Method,
    path: &str,
) -> Result<Exchange, String> {
    let mut scheme = scheme.to_ascii_lowercase();
    let mut host = host.to_string();
    let mut sni = sni.map(str::to_string);
    let mut path = path.to_string();
    for _ in 0..10 {
        let wire = TestRequest::go_client(method.clone(), host.clone(), path.clone());
        let exchange = match scheme.as_str() {
            "http" => Exchange {
                response: send(running.http_addr, &wire).await?,
                certificate: None,
            },
            "https" => {
                let addr = running
                    .https_addr
                    .ok_or("Portcullis was started without an HTTPS listener")?;
                let name = sni.clone().unwrap_or_else(|| {
                    Authority::try_from(host.as_str())
                        .map(|a| a.host().to_string())
                        .unwrap_or_else(|_| host.clone())
                });
                send_tls(addr, &name, &wire).await?
            }
            other => return Err(format!("scheme {other:?} is not supported")),
        };
        let status = exchange.response.status.as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(exchange);
        }
        let location = exchange
            .response
            .headers
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| format!("redirect {status} without a Location"))?;
        let uri = Uri::try_from(location).map_err(|e| format!("bad Location {location:?}: {e}"))?;
        if let Some(next) = uri.scheme_str() {
            scheme = next.to_ascii_lowercase();
        }
        if let Some(authority) = uri.authority() {
            host = authority.as_str().to_string();
            sni = Some(authority.host().to_string());
        }
        path = uri.path().to_string();
    }
    Err("more than 10 redirects".into())
}

/// Go's `cert.VerifyHostname` for DNS names: an exact SAN, or a `*.` SAN covering one label.
fn san_covers(san: &str, host: &str) -> bool {
    if san.eq_ignore_ascii_case(host) {
        return true;
    }
    match (san.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

/// The suite's certificate step: the first DNS SAN is `name`, and the certificate verifies for it.
fn certificate_verifies(der: Option<&[u8]>, name: &str) -> Result<(), String> {
    let der = der.ok_or("no certificate: the response did not come over TLS")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the served certificate does not parse: {e}"))?;
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .map_err(|e| format!("the served certificate's SANs do not parse: {e}"))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(dns) => Some(dns.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if sans.first().map(String::as_str) != Some(name) {
        return Err(format!(
            "the served certificate's first DNS SAN is {:?}, expected {name:?} (all: {sans:?})",
            sans.first()
        ));
    }
    if !sans.iter().any(|san| san_covers(san, name)) {
        return Err(format!(
            "the served certificate does not verify for {name}: {sans:?}"
        ));
    }
    Ok(())
}

/// The suite's TLS Secret step: a self-signed certificate (CN=default, O=Acme Co) for the step's
/// DNS names, as a `kubernetes.io/tls` Secret. The suite's key is RSA-2048; this one is the
/// generator's default (ECDSA P-256), which no expectation depends on.
fn write_tls_secret(dir: &Path, step: &serde_json::Value) -> Result<(), String> {
    let name = step
        .get("secret_name")
        .and_then(|n| n.as_str())
        .ok_or("the step names no secret_name")?;
    let dns_names: Vec<String> = step
        .get("dns_names")
        .and_then(|n| n.as_array())
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut params = rcgen::CertificateParams::new(dns_names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "default");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Acme Co");
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let indent = |pem: &str| {
        pem.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.pem()),
        indent(&key.serialize_pem())
    );
    write_manifest(dir, &format!("secret-{name}.yaml"), &yaml);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// scenarios.json: the conformance suite
// ---------------------------------------------------------------------------------------------

/// The replica count a `scale_backend` setup step asks for, if any.
fn scaled_replicas(case: &Case, service: &str) -> Option<usize> {
    case.setup.iter().find_map(|step| {
        let is_scale = step.get("action").and_then(|a| a.as_str()) == Some("scale_backend");
        let same = step.get("service").and_then(|s| s.as_str()) == Some(service);
        if is_scale && same {
            step.get("replicas")
                .and_then(|r| r.as_u64())
                .and_then(|r| usize::try_from(r).ok())
        } else {
            None
        }
    })
}

/// The (host, path) pairs of an Ingress manifest's rules, read with the project's own parser.
fn rule_targets(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for parsed in model::parse_manifests(yaml, "scenario")
        .into_iter()
        .flatten()
    {
        let object = match parsed {
            Parsed::Object(o) | Parsed::Converted { object: o, .. } => o,
            Parsed::Skipped { .. } => continue,
        };
        let Object::Ingress(ingress) = object else {
            continue;
        };
        for rule in ingress.spec.and_then(|s| s.rules).into_iter().flatten() {
            let host = rule.host.unwrap_or_default();
            for path in rule.http.map(|h| h.paths).into_iter().flatten() {
                out.push((host.clone(), path.path.unwrap_or_else(|| "/".into())));
            }
        }
    }
    out
}

/// Setup steps this runner reproduces: the namespace is `default`, Ingresses are written to the
/// folder, the status steps become the translation check, scaling sets the replica count, and the
/// TLS Secret is made with a fresh self-signed certificate.
const KNOWN_SETUP: [&str; 6] = [
    "create_namespace",
    "create_tls_secret",
    "apply_ingress",
    "wait_ingress_status_address",
    "expect_no_ingress_status_address",
    "scale_backend",
];

async fn run_case(case: Case) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let dir = temp_folder();
    for step in &case.setup {
        let action = step.get("action").and_then(|a| a.as_str()).unwrap_or("");
        if !KNOWN_SETUP.contains(&action) {
            failures.push(format!(
                "{}: setup step {action:?} is not reproduced by this runner",
                case.id
            ));
        }
        if action == "create_tls_secret" {
            if let Err(e) = write_tls_secret(dir.path(), step) {
                failures.push(format!("{}: cannot make the TLS Secret: {e}", case.id));
            }
        }
    }
    for manifest in &case.ingress_manifests {
        write_manifest(
            dir.path(),
            &format!("ingress-{}.yaml", manifest.name),
            &manifest.effective_manifest_derived,
        );
    }
    let first_ingress = case
        .ingress_manifests
        .first()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let specs: Vec<ServiceSpec> = case
        .backends
        .iter()
        .map(|b| ServiceSpec {
            name: b.service.clone(),
            port: b.service_port,
            port_name: b.service_port_name.clone(),
            replicas: scaled_replicas(&case, &b.service).unwrap_or(b.replicas),
            deployment: b.deployment.clone(),
            ingress: b
                .env
                .get("INGRESS_NAME")
                .cloned()
                .unwrap_or_else(|| first_ingress.clone()),
        })
        .collect();
    let _deployed = deploy(dir.path(), NAMESPACE, &specs).await;

    // The suite's status step: our class's Ingresses get an address, others never do.
    let (_, translation) = translate_folder(dir.path(), CLASS);
    let selected: BTreeSet<String> = translation
        .ingresses
        .iter()
        .map(|k| k.name.clone())
        .collect();
    let address_absent = case.ingress_status_expectation == "address_absent";
    for manifest in &case.ingress_manifests {
        let chosen = selected.contains(&manifest.name);
        if address_absent && chosen {
            failures.push(format!(
                "{}: Ingress {} must not be served (its class is not ours), but translation selected it",
                case.id, manifest.name
            ));
        }
        if address_absent {
            let explained = translation.diagnostics.iter().any(|d| {
                d.kind() == "Ingress"
                    && d.object() == format!("{NAMESPACE}/{}", manifest.name)
                    && d.field.as_deref() == Some("spec.ingressClassName")
            });
            if !explained {
                failures.push(format!(
                    "{}: no diagnostic explains why Ingress {} is ignored (got {:?})",
                    case.id, manifest.name, translation.diagnostics
                ));
            }
        } else if !chosen {
            failures.push(format!(
                "{}: Ingress {} of class {CLASS} was not selected (diagnostics: {:?})",
                case.id, manifest.name, translation.diagnostics
            ));
        }
    }

    let running = start_with_https(dir.path(), CLASS).await;
    for request in &case.requests {
        run_case_request(&running, &case, request, &mut failures).await;
    }
    if address_absent {
        // Not served means not routed: every host and path of the ignored Ingress answers 404.
        for manifest in &case.ingress_manifests {
            for (host, path) in rule_targets(&manifest.effective_manifest_derived) {
                let host = if host.is_empty() {
                    running.http_addr.to_string()
                } else {
                    host
                };
                let request = TestRequest::go_client(Method::GET, host.clone(), path.clone());
                match send_following_redirects(running.http_addr, &request).await {
                    Ok(r) if r.status.as_u16() == 404 => {}
                    Ok(r) => failures.push(format!(
                        "{}: GET http://{host}{path} for the ignored Ingress {}: expected 404, got {} from {}",
                        case.id,
                        manifest.name,
                        r.status.as_u16(),
                        r.served_by()
                    )),
                    Err(e) => failures.push(format!("{}: GET http://{host}{path}: {e}", case.id)),
                }
            }
        }
    }
    running.shutdown().await;
    (1, failures)
}

async fn run_case_request(
    running: &Running,
    case: &Case,
    request: &CaseRequest,
    failures: &mut Vec<String>,
) {
    let host = request
        .host_header
        .clone()
        .unwrap_or_else(|| running.http_addr.to_string());
    let label = format!(
        "{}: {} {}://{}{} (Host {})",
        case.id,
        request.method,
        request.scheme,
        request.host_header.as_deref().unwrap_or("<proxy address>"),
        request.path,
        host
    );
    let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
        failures.push(format!("{label}: unusable method"));
        return;
    };
    let expect = &request.expect;

    if let Some(port) = &expect.backend_port_in_ingress {
        let service = expect.backend_service.clone().unwrap_or_default();
        let port = match (port.number, &port.name) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => String::new(),
        };
        let want = format!("{NAMESPACE}/{service}:{port}");
        let got = routed_backend(&running.published.load(), &host, &request.path);
        if got.as_deref() != Some(want.as_str()) {
            failures.push(format!(
                "{label}: the table routes it to {got:?}, expected backend {want}"
            ));
        }
    }

    let mut responses = Vec::new();
    for n in 0..request.count.max(1) {
        let sent = suite_send(
            running,
            &request.scheme,
            &host,
            request.sni.as_deref(),
            &method,
            &request.path,
        )
        .await;
        match sent {
            Ok(exchange) => responses.push(exchange),
            Err(e) => failures.push(format!("{label} (request #{}): {e}", n + 1)),
        }
    }

    if let Some(status) = expect.status_all {
        let bad: Vec<u16> = responses
            .iter()
            .map(|r| r.response.status.as_u16())
            .filter(|s| *s != status)
            .collect();
        if !bad.is_empty() {
            failures.push(format!(
                "{label}: all {} responses must be {status}; {} were not: {bad:?}",
                request.count,
                bad.len()
            ));
        }
        if let Some(want) = expect.distinct_pods {
            let pods: BTreeSet<String> = responses
                .iter()
                .filter(|r| r.response.status.as_u16() == status)
                .filter_map(|r| r.response.echo().map(|e| e.pod))
                .collect();
            if pods.len() != want {
                failures.push(format!(
                    "{label}: responses came from {} distinct pods, expected exactly {want}: {pods:?}",
                    pods.len()
                ));
            }
        }
    } else if expect.distinct_pods.is_some() {
        failures.push(format!("{label}: distinct_pods without status_all"));
    }

    for (n, exchange) in responses.iter().enumerate() {
        let mut problems = check_response(expect, exchange);
        if !problems.is_empty() {
            if responses.len() > 1 {
                problems.insert(0, format!("response #{}", n + 1));
            }
            failures.push(format!("{label}: {}", problems.join("; ")));
            break;
        }
    }
}

/// Checks every per-response expectation; returns what does not hold.
fn check_response(expect: &Expect, exchange: &Exchange) -> Vec<String> {
    let response = &exchange.response;
    let mut problems = Vec::new();
    let echo: Echoed = response.echo().unwrap_or_default();
    let body_hint = || {
        let text = response.text();
        text.chars().take(200).collect::<String>()
    };
    if let Some(status) = expect.status {
        if response.status.as_u16() != status {
            problems.push(format!(
                "status {} (expected {status}), body {:?}",
                response.status.as_u16(),
                body_hint()
            ));
        }
    }
    if let Some(service) = &expect.backend_service {
        if &echo.service != service {
            problems.push(format!(
                "served by {:?} (expected {service:?})",
                response.served_by()
            ));
        }
    }
    if let Some(proto) = &expect.response_proto {
        if response.proto() != proto {
            problems.push(format!(
                "response proto {} (expected {proto})",
                response.proto()
            ));
        }
    }
    for kv in expect.response_headers.iter().flatten() {
        let values = response_header_values(response, &kv.key);
        if !header_matches(&values, &kv.value) {
            problems.push(format!(
                "response header {}: {values:?} (expected {:?}); all headers: {:?}",
                kv.key, kv.value, response.headers
            ));
        }
    }
    let mut saw = |what: &str, got: &str, want: &Option<String>| {
        if let Some(want) = want {
            if got != want {
                problems.push(format!("backend saw {what} {got:?} (expected {want:?})"));
            }
        }
    };
    saw("method", &echo.method, &expect.backend_saw_method);
    let want_path = expect.backend_saw_path.as_ref().map(|p| {
        if p.starts_with('/') {
            p.clone()
        } else {
            format!("/{p}")
        }
    });
    saw("path", &echo.path, &want_path);
    saw("proto", &echo.proto, &expect.backend_saw_proto);
    saw("host", &echo.host, &expect.backend_saw_host);
    for kv in expect.backend_saw_headers.iter().flatten() {
        let values = echo.header(&kv.key);
        if !header_matches(values, &kv.value) {
            problems.push(format!(
                "backend saw header {}: {values:?} (expected {:?})",
                kv.key, kv.value
            ));
        }
    }
    if let Some(name) = &expect.tls_certificate_hostname {
        if let Err(e) = certificate_verifies(exchange.certificate.as_deref(), name) {
            problems.push(e);
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_scenarios() {
    let scenarios: Scenarios = parse_table("scenarios.json", SCENARIOS);
    let mut tally = Tally::default();
    if scenarios.cases.len() != scenarios.case_count {
        tally.failures.push(format!(
            "the data says it holds {} cases but lists {}",
            scenarios.case_count,
            scenarios.cases.len()
        ));
    }
    for case in scenarios.cases {
        let label = case.id.clone();
        tally.sub_case(&label, run_case(case)).await;
    }
    tally.report("conformance scenarios", scenarios.case_count);
}

// ---------------------------------------------------------------------------------------------
// legacy_checks: the 2019 v1beta1 manifests
// ---------------------------------------------------------------------------------------------

async fn run_legacy_manifest(
    manifest: LegacyManifest,
    checks: Vec<LegacyCheck>,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let label = manifest.file.clone();
    let dir = temp_folder();
    let file_name = Path::new(&manifest.file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "legacy.yaml".into());
    write_manifest(dir.path(), &file_name, &manifest.yaml);

    let mut services = Vec::new();
    let mut skipped = Vec::new();
    for parsed in model::parse_manifests(&manifest.yaml, &manifest.file) {
        match parsed {
            Ok(Parsed::Object(Object::Service(svc))) => services.push(svc),
            Ok(Parsed::Skipped { kind, name }) => skipped.push(format!("{kind} {name}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{label}: does not parse: {e}")),
        }
    }
    if !skipped.iter().any(|s| s.contains("Deployment")) {
        failures.push(format!(
            "{label}: its Deployment should be read and skipped; skipped: {skipped:?}"
        ));
    }

    // The manifests' Services select Pods; in a folder, EndpointSlices say where those are.
    let mut echoes = Vec::new();
    for svc in &services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let port_name = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| p.name.clone());
        let echo = spawn_echo(EchoIdentity {
            namespace: NAMESPACE.into(),
            ingress: String::new(),
            service: name.clone(),
            pod: format!("{name}-0"),
        })
        .await;
        write_manifest(
            dir.path(),
            &format!("endpointslice-{name}.yaml"),
            &endpoint_slice_yaml(
                NAMESPACE,
                &name,
                &format!("{name}-legacy"),
                port_name.as_deref(),
                echo.addr(),
                true,
            ),
        );
        echoes.push(echo);
    }

    let (load, translation) = translate_folder(dir.path(), LEGACY_CLASS);
    let errors: Vec<_> = load
        .diagnostics
        .iter()
        .chain(&translation.diagnostics)
        .filter(|d| d.severity == model::Severity::Error)
        .collect();
    if !errors.is_empty() {
        failures.push(format!("{label}: errors reading it: {errors:?}"));
    }
    if translation.ingresses.is_empty() {
        failures.push(format!(
            "{label}: its Ingress (class {LEGACY_CLASS}) was not selected: {:?}",
            translation.diagnostics
        ));
    }

    let mut checked = 0;
    let running = start(dir.path(), LEGACY_CLASS).await;
    for check in checks {
        let req = &check.request;
        let name = format!("{label} {}", check.check);
        if req.scheme != "http" {
            failures.push(format!("{name}: scheme {} is not handled", req.scheme));
            continue;
        }
        let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
            failures.push(format!("{name}: unusable method {}", req.method));
            continue;
        };
        let host = req
            .host_header
            .clone()
            .unwrap_or_else(|| running.http_addr.to_string());
        let wire = TestRequest::go_client(method, host.clone(), req.path.clone());
        let response = match send_following_redirects(running.http_addr, &wire).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let echo = response.echo().unwrap_or_default();
        let mut problems = Vec::new();
        if response.status.as_u16() != check.expect.status {
            problems.push(format!(
                "status {} (expected {})",
                response.status.as_u16(),
                check.expect.status
            ));
        }
        if let Some(id) = &check.expect.backend_test_id {
            if &echo.service != id {
                problems.push(format!(
                    "served by {:?} (expected TestId {id:?})",
                    response.served_by()
                ));
            }
        }
        if let Some(path) = &check.expect.backend_saw_path {
            if &echo.path != path {
                problems.push(format!(
                    "backend saw path {:?} (expected {path:?})",
                    echo.path
                ));
            }
        }
        if let Some(want) = &check.expect.backend_saw_host {
            if &echo.host != want {
                problems.push(format!(
                    "backend saw host {:?} (expected {want:?})",
                    echo.host
                ));
            }
        }
        checked += 1;
        if !problems.is_empty() {
            failures.push(format!(
                "{name}: GET http://{host}{}: {}",
                req.path,
                problems.join("; ")
            ));
        }
    }
    running.shutdown().await;
    drop(echoes);
    (checked, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_legacy_checks() {
    let scenarios: Scenarios = parse_table("scenarios.json", SCENARIOS);
    let legacy = scenarios.legacy_checks;
    let mut tally = Tally::default();
    for check in &legacy.checks {
        if !legacy
            .manifests
            .iter()
            .any(|m| m.file == check.manifest_file)
        {
            tally.failures.push(format!(
                "{}: manifest {} is not in the data",
                check.check, check.manifest_file
            ));
        }
    }
    for manifest in legacy.manifests {
        let checks: Vec<LegacyCheck> = legacy
            .checks
            .iter()
            .filter(|c| c.manifest_file == manifest.file)
            .cloned()
            .collect();
        let label = manifest.file.clone();
        tally
            .sub_case(&label, run_legacy_manifest(manifest, checks))
            .await;
    }
    tally.report("legacy checks", legacy.checks.len());
}

// ---------------------------------------------------------------------------------------------
// gateway_api_extra_cases.json: HTTPRoute tests written as Ingresses
// ---------------------------------------------------------------------------------------------

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";
const GATEWAY_PORT: u16 = 8080;

fn prefix(path: &str, service: &str) -> IngressPath {
    IngressPath::new(path, "Prefix", service, GATEWAY_PORT)
}

fn exact(path: &str, service: &str) -> IngressPath {
    IngressPath::new(path, "Exact", service, GATEWAY_PORT)
}

fn rule(host: Option<&str>, paths: Vec<IngressPath>) -> IngressRule {
    IngressRule::new(host, paths)
}

fn one_ingress(name: &str, rules: &[IngressRule]) -> Vec<(String, String)> {
    vec![(
        format!("ingress-{name}.yaml"),
        ingress_yaml(NAMESPACE, name, CLASS, None, rules),
    )]
}

/// No matches (PathPrefix `/`), no hostnames → v1.
fn http_route_simple_same_namespace() -> Vec<(String, String)> {
    one_ingress(
        "gateway-conformance-infra-test",
        &[rule(None, vec![prefix("/", V1)])],
    )
}

/// Exact `/one` → v1, Exact `/two` → v2.
fn http_route_exact_path_matching() -> Vec<(String, String)> {
    one_ingress(
        "exact-path-matching",
        &[rule(None, vec![exact("/one", V1), exact("/two", V2)])],
    )
}

/// PathPrefix `/` → v1, PathPrefix `/v2` → v2 (the header matches have no Ingress form).
fn http_route_matching() -> Vec<(String, String)> {
    one_ingress(
        "matching",
        &[rule(None, vec![prefix("/", V1), prefix("/v2", V2)])],
    )
}

/// Six Exact and Prefix paths whose precedence is the point of the test.
fn http_route_path_match_order() -> Vec<(String, String)> {
    one_ingress(
        "path-match-order",
        &[rule(
            None,
            vec![
                exact("/match", V1),
                exact("/match/exact", V2),
                exact("/match/exact/one", V3),
                prefix("/match/", V3),
                prefix("/match/prefix/", V1),
                prefix("/match/prefix/one", V2),
            ],
        )],
    )
}

/// Two routes on overlapping hostnames become two Ingresses that share example.com.
fn http_route_matching_across_routes() -> Vec<(String, String)> {
    let part1 = ingress_yaml(
        NAMESPACE,
        "matching-part1",
        CLASS,
        None,
        &[
            rule(Some("example.com"), vec![prefix("/", V1)]),
            rule(Some("example.net"), vec![prefix("/", V1)]),
        ],
    );
    let part2 = ingress_yaml(
        NAMESPACE,
        "matching-part2",
        CLASS,
        None,
        &[rule(Some("example.com"), vec![prefix("/v2", V2)])],
    );
    vec![
        ("ingress-matching-part1.yaml".into(), part1),
        ("ingress-matching-part2.yaml".into(), part2),
    ]
}

/// Listener hostnames as rule hosts: bar.com, foo.bar.com, `*.bar.com`, `*.foo.com`.
fn http_route_listener_hostname_matching() -> Vec<(String, String)> {
    one_ingress(
        "listener-hostname-matching",
        &[
            rule(Some("bar.com"), vec![prefix("/", V1)]),
            rule(Some("foo.bar.com"), vec![prefix("/", V2)]),
            rule(Some("*.bar.com"), vec![prefix("/", V3)]),
            rule(Some("*.foo.com"), vec![prefix("/", V3)]),
        ],
    )
}

/// The effective hostnames after listener/route intersection, each as a rule.
fn http_route_hostname_intersection() -> Vec<(String, String)> {
    let mut rules = vec![rule(
        Some("very.specific.com"),
        vec![prefix("/s1", V1), prefix("/s3", V3)],
    )];
    for host in ["foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"] {
        rules.push(rule(Some(host), vec![prefix("/s2", V2)]));
    }
    rules.push(rule(Some("*.anotherwildcard.io"), vec![prefix("/s4", V1)]));
    for host in ["first.com", "sub.first.com", "second.com", "sub.second.com"] {
        rules.push(rule(Some(host), vec![prefix("/", V2)]));
    }
    one_ingress("hostname-intersection", &rules)
}

fn gateway_manifests(test: &str) -> Option<Vec<(String, String)>> {
    Some(match test {
        "HTTPRouteSimpleSameNamespace" => http_route_simple_same_namespace(),
        "HTTPRouteExactPathMatching" => http_route_exact_path_matching(),
        "HTTPRouteMatching" => http_route_matching(),
        "HTTPRoutePathMatchOrder" => http_route_path_match_order(),
        "HTTPRouteMatchingAcrossRoutes" => http_route_matching_across_routes(),
        "HTTPRouteListenerHostnameMatching" => http_route_listener_hostname_matching(),
        "HTTPRouteHostnameIntersection" => http_route_hostname_intersection(),
        _ => return None,
    })
}

/// The Ingress answer for cases the Gateway API answers differently: (test, host, path, status).
/// An Ingress wildcard covers exactly one DNS label (README), and the Ingress written for
/// HTTPRouteHostnameIntersection has no rule for foo.specific.com.
const INGRESS_ANSWERS: &[(&str, &str, &str, u16)] = &[
    (
        "HTTPRouteListenerHostnameMatching",
        "multiple.prefixes.bar.com",
        "/",
        404,
    ),
    (
        "HTTPRouteListenerHostnameMatching",
        "multiple.prefixes.foo.com",
        "/",
        404,
    ),
    (
        "HTTPRouteHostnameIntersection",
        "foo.bar.anotherwildcard.io",
        "/s4",
        404,
    ),
    (
        "HTTPRouteHostnameIntersection",
        "foo.specific.com",
        "/s3",
        404,
    ),
];

/// What an Ingress must answer for a case.
fn ingress_expectation(test: &GatewayTest, case: &GatewayCase) -> Result<GatewayExpect, String> {
    match case.applies_to_ingress.as_str() {
        "yes" | "trivially" | "caveat" => return Ok(case.expect.clone()),
        "no" | "gateway-only" => {}
        other => return Err(format!("unknown applies_to_ingress {other:?}")),
    }
    let host = case.host.as_deref().unwrap_or_default();
    if let Some((.., status)) = INGRESS_ANSWERS
        .iter()
        .find(|(t, h, p, _)| *t == test.test && *h == host && *p == case.path)
    {
        return Ok(GatewayExpect::Status(*status));
    }
    if !case.headers.is_empty() {
        // Ingress has no header matching: the request routes by host and path alone, like the
        // same request without the header.
        if let Some(plain) = test.cases.iter().find(|c| {
            c.headers.is_empty()
                && c.host == case.host
                && c.path == case.path
                && c.applies_to_ingress == "yes"
        }) {
            return Ok(plain.expect.clone());
        }
    }
    Err("no Ingress answer is known for this Gateway-only case".into())
}

async fn run_gateway_test(test: GatewayTest) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut checked = 0;
    let Some(manifests) = gateway_manifests(&test.test) else {
        return (
            0,
            vec![format!(
                "{}: no Ingress equivalent is written for this test",
                test.test
            )],
        );
    };
    let dir = temp_folder();
    for (file, yaml) in &manifests {
        write_manifest(dir.path(), file, yaml);
    }
    let specs: Vec<ServiceSpec> = [V1, V2, V3]
        .iter()
        .map(|name| ServiceSpec::new(name, GATEWAY_PORT))
        .collect();
    let _deployed = deploy(dir.path(), NAMESPACE, &specs).await;
    let (_, translation) = translate_folder(dir.path(), CLASS);
    if translation.ingresses.len() != manifests.len() {
        failures.push(format!(
            "{}: {} of {} Ingresses selected; diagnostics: {:?}",
            test.test,
            translation.ingresses.len(),
            manifests.len(),
            translation.diagnostics
        ));
    }
    let running = start(dir.path(), CLASS).await;

    for case in &test.cases {
        let host = case
            .host
            .clone()
            .unwrap_or_else(|| running.http_addr.to_string());
        let mut label = format!("{}: GET http://{host}{}", test.test, case.path);
        for (k, v) in &case.headers {
            label.push_str(&format!(" [{k}: {v}]"));
        }
        label.push_str(&format!(" ({})", case.applies_to_ingress));
        let expect = match ingress_expectation(&test, case) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        // Three successes in a row, each on a new connection.
        for attempt in 1..=3 {
            let mut wire = TestRequest::go_client(Method::GET, host.clone(), case.path.clone());
            for (k, v) in &case.headers {
                wire = wire.header(k.clone(), v.clone());
            }
            let response = match send_following_redirects(running.http_addr, &wire).await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{label} (attempt {attempt}): {e}"));
                    break;
                }
            };
            let problems = check_gateway_response(&expect, &host, &case.path, &response);
            if !problems.is_empty() {
                failures.push(format!(
                    "{label} (attempt {attempt}): {}",
                    problems.join("; ")
                ));
                break;
            }
        }
        checked += 1;
    }
    running.shutdown().await;
    (checked, failures)
}

fn check_gateway_response(
    expect: &GatewayExpect,
    host: &str,
    path: &str,
    response: &TestResponse,
) -> Vec<String> {
    let mut problems = Vec::new();
    let status = response.status.as_u16();
    match expect {
        GatewayExpect::Status(want) => {
            if status != *want {
                problems.push(format!(
                    "status {status} from {} (expected {want})",
                    response.served_by()
                ));
            }
        }
        GatewayExpect::Backend(backend) => {
            if status != 200 {
                problems.push(format!("status {status} (expected 200 from {backend})"));
                return problems;
            }
            let Some(echo) = response.echo() else {
                problems.push(format!("not an echo reply: {:?}", response.text()));
                return problems;
            };
            if &echo.service != backend {
                problems.push(format!("served by {} (expected {backend})", echo.service));
            }
            if echo.path != path {
                problems.push(format!(
                    "backend saw path {:?} (expected it unchanged: {path:?})",
                    echo.path
                ));
            }
            if echo.host != host {
                problems.push(format!(
                    "backend saw Host {:?} (expected it as sent: {host:?})",
                    echo.host
                ));
            }
            if echo.method != "GET" {
                problems.push(format!("backend saw method {}", echo.method));
            }
            if echo.namespace != NAMESPACE {
                problems.push(format!("backend namespace {}", echo.namespace));
            }
            if !echo.pod.starts_with(backend.as_str()) {
                problems.push(format!("pod {:?} does not start with {backend}", echo.pod));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_cases_as_ingress() {
    let data: GatewayCases = parse_table("gateway_api_extra_cases.json", GATEWAY_CASES);
    let expected = data.tests.iter().map(|t| t.cases.len()).sum();
    let mut tally = Tally::default();
    for test in data.tests {
        let label = test.test.clone();
        tally.sub_case(&label, run_gateway_test(test)).await;
    }
    tally.report("Gateway API cases as Ingress", expected);
}

// ---------------------------------------------------------------------------------------------
// path_examples.json: the kubernetes.io tables
// ---------------------------------------------------------------------------------------------

/// Requests standing in for "(all paths)".
const ALL_PATHS: [&str; 3] = ["/", "/anything", "/a/b/c"];

fn example_service(index: usize) -> String {
    format!("svc-{index}")
}

async fn run_path_row(row: PathRow) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let label = format!("path example row {}", row.row);
    let dir = temp_folder();
    let paths: Vec<IngressPath> = row
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| IngressPath::new(&p.path, &p.path_type, &example_service(i), 80))
        .collect();
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            &format!("path-example-{}", row.row),
            CLASS,
            None,
            &[IngressRule::new(None, paths)],
        ),
    );
    let specs: Vec<ServiceSpec> = (0..row.paths.len())
        .map(|i| ServiceSpec::new(&example_service(i), 80))
        .collect();
    let _deployed = deploy(dir.path(), NAMESPACE, &specs).await;

    let expected: Option<String> = if row.matches {
        match row
            .matching_path_derived
            .as_ref()
            .and_then(|m| row.paths.iter().position(|p| p == m))
        {
            Some(i) => Some(example_service(i)),
            None => {
                return (
                    0,
                    vec![format!(
                        "{label}: matches, but its matching path is not one of its paths"
                    )],
                )
            }
        }
    } else {
        None
    };
    let requests: Vec<String> = match &row.request_paths {
        Some(paths) => paths.clone(),
        None => ALL_PATHS.iter().map(|p| p.to_string()).collect(),
    };

    let running = start(dir.path(), CLASS).await;
    let host = running.http_addr.to_string();
    for path in requests {
        let wire = TestRequest::go_client(Method::GET, host.clone(), path.clone());
        let response = match send_following_redirects(running.http_addr, &wire).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{label} GET {path}: {e}"));
                continue;
            }
        };
        let status = response.status.as_u16();
        match &expected {
            Some(service) => {
                let echo = response.echo().unwrap_or_default();
                if status != 200 || &echo.service != service || echo.path != path {
                    failures.push(format!(
                        "{label} {:?} GET {path}: expected 200 from {service} seeing {path:?}, got {status} from {} seeing {:?}",
                        row.paths, response.served_by(), echo.path
                    ));
                }
            }
            None => {
                if status != 404 {
                    failures.push(format!(
                        "{label} {:?} GET {path}: expected 404 (no match), got {status} from {}",
                        row.paths,
                        response.served_by()
                    ));
                }
            }
        }
    }
    running.shutdown().await;
    // "(all paths)" is one case of the table, however many requests stand for it.
    let cases = row.request_paths.as_ref().map_or(1, Vec::len);
    (cases, failures)
}

async fn run_host_row(row: HostRow) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let label = format!("host wildcard example row {}", row.row);
    let dir = temp_folder();
    let service = example_service(0);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            &format!("host-example-{}", row.row),
            CLASS,
            None,
            &[IngressRule::new(
                Some(&row.rule_host),
                vec![IngressPath::new("/", "Prefix", &service, 80)],
            )],
        ),
    );
    let _deployed = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new(&service, 80)]).await;
    let running = start(dir.path(), CLASS).await;
    let wire = TestRequest::go_client(Method::GET, row.request_host_header.clone(), "/");
    match send_following_redirects(running.http_addr, &wire).await {
        Ok(response) => {
            let status = response.status.as_u16();
            let ok = if row.matches {
                status == 200 && response.echo().map(|e| e.service) == Some(service.clone())
            } else {
                status == 404
            };
            if !ok {
                failures.push(format!(
                    "{label}: rule host {} and Host {}: expected {}, got {status} from {}",
                    row.rule_host,
                    row.request_host_header,
                    if row.matches { "200 from svc-0" } else { "404" },
                    response.served_by()
                ));
            }
        }
        Err(e) => failures.push(format!("{label}: {e}")),
    }
    running.shutdown().await;
    (1, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_docs_path_and_host_examples() {
    let data: PathExamples = parse_table("path_examples.json", PATH_EXAMPLES);
    let expected = data.path_example_cases_expanded.len() + data.host_wildcard_examples.len();
    let mut tally = Tally::default();
    for row in data.path_examples {
        let label = format!("path example row {}", row.row);
        tally.sub_case(&label, run_path_row(row)).await;
    }
    for row in data.host_wildcard_examples {
        let label = format!("host wildcard example row {}", row.row);
        tally.sub_case(&label, run_host_row(row)).await;
    }
    tally.report("kubernetes.io path and host examples", expected);
}

/// The echo stand-in answers like the suite's echoserver (README "The echo backend"), so the
/// checks above mean what they mean against the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_stand_in_answers_like_the_echoserver() {
    let echo = spawn_echo(EchoIdentity {
        namespace: "ingress-conformance-x7k2p".into(),
        ingress: "default-backend".into(),
        service: "echo-service".into(),
        pod: "default-backend-echo-service-0".into(),
    })
    .await;

    let health = send(echo.addr(), &TestRequest::get("my-host", "/health"))
        .await
        .expect("/health");
    assert_eq!(health.status.as_u16(), 200);
    assert_eq!(health.text(), "OK");

    let request = TestRequest::go_client(Method::POST, "my-host:8080", "/sub-path//x?a=1&b")
        .header("X-Forwarded-For", "10.0.0.7")
        .header("x-multi", "one")
        .header("X-MULTI", "two")
        .body("payload");
    let response = send(echo.addr(), &request).await.expect("a reply");
    assert_eq!(response.status.as_u16(), 200);
    let header = |name: &str| {
        response
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(
        header("server"),
        None,
        "the echoserver sends no Server header"
    );
    assert!(header("date").is_some());
    assert_eq!(
        header("content-length"),
        Some(response.body.len().to_string())
    );
    let expected = r#"{
 "path": "/sub-path//x?a=1&b",
 "host": "my-host:8080",
 "method": "POST",
 "proto": "HTTP/1.1",
 "headers": {
  "Content-Length": [
   "7"
  ],
  "User-Agent": [
   "Go-http-client/1.1"
  ],
  "X-Forwarded-For": [
   "10.0.0.7"
  ],
  "X-Multi": [
   "one",
   "two"
  ]
 },
 "namespace": "ingress-conformance-x7k2p",
 "ingress": "default-backend",
 "service": "echo-service",
 "pod": "default-backend-echo-service-0"
}"#;
    assert_eq!(response.text(), expected);
}
