//! Helpers shared by the integration tests: an echo backend that answers like the conformance
//! suite's echoserver, manifest writers for Services backed by echo pods, a one-connection-per-request
//! HTTP/1.1 client that can send any request-target and any (or no) Host header, and starting
//! Portcullis on a folder.
//!
//! Every test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

pub mod pki;
pub mod tools;
pub mod tunnel;
pub mod wire;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis::{Running, Settings};
use proxy::{AccessLog, ProxyConfig};
use serde::{Deserialize, Serialize};
use table::{BackendTarget, Table};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The namespace every test manifest lives in (manifests without one get it too).
pub const NAMESPACE: &str = "default";
/// How long one request may take, like the conformance suite's Go client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a manifest change may take to be published.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// The User-Agent of the conformance suite's client.
pub const GO_USER_AGENT: &str = "Go-http-client/1.1";

// ---------------------------------------------------------------------------------------------
// In-test HTTP/1.1 servers
// ---------------------------------------------------------------------------------------------

/// A server task on `127.0.0.1:<random>`; stops accepting when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves HTTP/1.1 (with upgrades) on a fresh loopback port, answering every request with `handler`.
pub async fn spawn_http1<F, Fut, B>(handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for a test backend");
    let addr = listener
        .local_addr()
        .expect("local address of a test backend");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let service = service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Server { addr, task }
}

// ---------------------------------------------------------------------------------------------
// The echo backend
// ---------------------------------------------------------------------------------------------

/// Who an echo pod says it is (the echoserver's `NAMESPACE`, `INGRESS_NAME`, `SERVICE_NAME`,
/// `POD_NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoIdentity {
    /// `namespace` in the reply.
    pub namespace: String,
    /// `ingress` in the reply.
    pub ingress: String,
    /// `service` in the reply: how a test tells backends apart.
    pub service: String,
    /// `pod` in the reply: how a test tells replicas apart.
    pub pod: String,
}

/// A running echo pod.
pub struct Echo {
    /// Its identity.
    pub identity: EchoIdentity,
    server: Server,
}

impl Echo {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// The echoserver's reply, field for field and in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echoed {
    /// The request-target as received (path and query).
    pub path: String,
    /// The Host header as received.
    pub host: String,
    /// The method.
    pub method: String,
    /// `HTTP/1.1` and friends.
    pub proto: String,
    /// Request headers, canonical-case keys, values in order (no Host).
    pub headers: BTreeMap<String, Vec<String>>,
    /// The pod's namespace.
    pub namespace: String,
    /// The Ingress the pod was deployed for.
    pub ingress: String,
    /// The Service the pod backs.
    pub service: String,
    /// The pod's name.
    pub pod: String,
}

impl Echoed {
    /// All values of a header, looked up by any spelling of its name.
    pub fn header(&self, name: &str) -> &[String] {
        self.headers
            .get(&canonical_header_key(name))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The first value of a header.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.header(name).first().map(String::as_str)
    }
}

/// Go's `CanonicalMIMEHeaderKey`: the first letter and each letter after `-` upper-case, the rest
/// lower-case; a key with a character that is not a token character is returned unchanged.
pub fn canonical_header_key(key: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !key.bytes().all(token) {
        return key.to_string();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn proto_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn echo_reply(identity: &EchoIdentity, parts: &http::request::Parts) -> Echoed {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        if name == header::HOST {
            continue;
        }
        headers
            .entry(canonical_header_key(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    Echoed {
        path: parts.uri.to_string(),
        host,
        method: parts.method.to_string(),
        proto: proto_name(parts.version).to_string(),
        headers,
        namespace: identity.namespace.clone(),
        ingress: identity.ingress.clone(),
        service: identity.service.clone(),
        pod: identity.pod.clone(),
    }
}

/// JSON with a one-space indent, like Go's `json.MarshalIndent(v, "", " ")`.
fn go_json(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

async fn drain(mut body: Incoming) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

async fn echo_handle(identity: Arc<EchoIdentity>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    drain(body).await;
    if parts.uri.path() == "/health" {
        let mut response = Response::new(Full::new(Bytes::from_static(b"OK")));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
    let body = go_json(&echo_reply(&identity, &parts));
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Starts an echo pod on a fresh loopback port.
pub async fn spawn_echo(identity: EchoIdentity) -> Echo {
    let shared = Arc::new(identity.clone());
    let server = spawn_http1(move |req| echo_handle(shared.clone(), req)).await;
    Echo { identity, server }
}

/// An echo pod in [`NAMESPACE`] with the given service and pod names.
pub async fn spawn_simple_echo(service: &str, pod: &str) -> Echo {
    spawn_echo(EchoIdentity {
        namespace: NAMESPACE.to_string(),
        ingress: String::new(),
        service: service.to_string(),
        pod: pod.to_string(),
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// One Service backed by echo pods, as a scenario describes it.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Service name (also each echo's `service`).
    pub name: String,
    /// The Service port number.
    pub port: u16,
    /// The Service port name, when the Ingress refers to the port by name.
    pub port_name: Option<String>,
    /// How many echo pods.
    pub replicas: usize,
    /// The Deployment name; pods are named `<deployment>-<n>`.
    pub deployment: String,
    /// The Ingress name the pods report.
    pub ingress: String,
}

impl ServiceSpec {
    /// One replica, port `port`, no port name, pods named after the Service.
    pub fn new(name: &str, port: u16) -> Self {
        ServiceSpec {
            name: name.to_string(),
            port,
            port_name: None,
            replicas: 1,
            deployment: name.to_string(),
            ingress: String::new(),
        }
    }
}

/// The echo pods of the Services written into a folder.
#[derive(Default)]
pub struct Deployed {
    /// Every pod, in the order of the specs.
    pub echoes: Vec<Echo>,
}

impl Deployed {
    /// The pods of one Service.
    pub fn of(&self, service: &str) -> Vec<&Echo> {
        self.echoes
            .iter()
            .filter(|e| e.identity.service == service)
            .collect()
    }

    /// The addresses of one Service's pods.
    pub fn addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.of(service).iter().map(|e| e.addr()).collect()
    }
}

/// A v1 Service with one port (targetPort 3000, like the suite's template).
pub fn service_yaml(namespace: &str, name: &str, port: u16, port_name: Option<&str>) -> String {
    let name_line = port_name
        .map(|n| format!("      name: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  \
         type: NodePort\n  selector:\n    app: {name}\n  ports:\n    - port: {port}\n      \
         targetPort: 3000\n      protocol: TCP\n{name_line}"
    )
}

/// An EndpointSlice for `service` with one loopback endpoint.
pub fn endpoint_slice_yaml(
    namespace: &str,
    service: &str,
    slice: &str,
    port_name: Option<&str>,
    addr: SocketAddr,
    ready: bool,
) -> String {
    let name_line = port_name
        .map(|n| format!("    name: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
         namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {service}\n\
         addressType: IPv4\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions:\n      \
         ready: {ready}\nports:\n  - port: {port}\n    protocol: TCP\n{name_line}",
        ip = addr.ip(),
        port = addr.port(),
    )
}

/// EndpointSlices for `service`, one per endpoint (each echo has its own port, and a slice has one
/// port list for all of its endpoints). Each endpoint is `(address, ready)`.
pub fn endpoint_slices_yaml(
    namespace: &str,
    service: &str,
    port_name: Option<&str>,
    endpoints: &[(SocketAddr, bool)],
) -> String {
    endpoints
        .iter()
        .enumerate()
        .map(|(i, (addr, ready))| {
            endpoint_slice_yaml(
                namespace,
                service,
                &format!("{service}-{i}"),
                port_name,
                *addr,
                *ready,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Writes a manifest so that a watcher never sees it half-written: into a hidden file (the folder
/// reader skips those), then renamed over the target.
pub fn write_manifest(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write a manifest");
    std::fs::rename(&tmp, dir.join(file)).expect("rename a manifest into place");
}

/// Starts echo pods for every spec and writes `service-<name>.yaml` (Service + EndpointSlices).
pub async fn deploy(dir: &Path, namespace: &str, specs: &[ServiceSpec]) -> Deployed {
    let mut deployed = Deployed::default();
    for spec in specs {
        let mut endpoints = Vec::new();
        for i in 0..spec.replicas.max(1) {
            let echo = spawn_echo(EchoIdentity {
                namespace: namespace.to_string(),
                ingress: spec.ingress.clone(),
                service: spec.name.clone(),
                pod: format!("{}-{i}", spec.deployment),
            })
            .await;
            endpoints.push((echo.addr(), true));
            deployed.echoes.push(echo);
        }
        let text = format!(
            "{}---\n{}",
            service_yaml(namespace, &spec.name, spec.port, spec.port_name.as_deref()),
            endpoint_slices_yaml(namespace, &spec.name, spec.port_name.as_deref(), &endpoints)
        );
        write_manifest(dir, &format!("service-{}.yaml", spec.name), &text);
    }
    deployed
}

/// One path of an Ingress rule.
#[derive(Clone, Debug)]
pub struct IngressPath {
    /// The path as written.
    pub path: String,
    /// `Exact`, `Prefix` or `ImplementationSpecific`.
    pub path_type: String,
    /// The backend Service.
    pub service: String,
    /// The backend Service port number.
    pub port: u16,
}

impl IngressPath {
    /// A path of `path_type` to `service:port`.
    pub fn new(path: &str, path_type: &str, service: &str, port: u16) -> Self {
        IngressPath {
            path: path.to_string(),
            path_type: path_type.to_string(),
            service: service.to_string(),
            port,
        }
    }
}

/// One rule of an Ingress: an optional host and its paths.
#[derive(Clone, Debug)]
pub struct IngressRule {
    /// The host (`None`: every host).
    pub host: Option<String>,
    /// The paths.
    pub paths: Vec<IngressPath>,
}

impl IngressRule {
    /// A rule for `host` (or every host).
    pub fn new(host: Option<&str>, paths: Vec<IngressPath>) -> Self {
        IngressRule {
            host: host.map(str::to_string),
            paths,
        }
    }
}

/// A networking.k8s.io/v1 Ingress in `namespace` of class `class`.
pub fn ingress_yaml(
    namespace: &str,
    name: &str,
    class: &str,
    default_backend: Option<(&str, u16)>,
    rules: &[IngressRule],
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  ingressClassName: {class}\n"
    );
    if let Some((service, port)) = default_backend {
        out.push_str(&format!(
            "  defaultBackend:\n    service:\n      name: {service}\n      port:\n        number: {port}\n"
        ));
    }
    if !rules.is_empty() {
        out.push_str("  rules:\n");
    }
    for rule in rules {
        match &rule.host {
            Some(host) => out.push_str(&format!("    - host: \"{host}\"\n      http:\n")),
            None => out.push_str("    - http:\n"),
        }
        out.push_str("        paths:\n");
        for p in &rule.paths {
            out.push_str(&format!(
                "          - path: \"{}\"\n            pathType: {}\n            backend:\n              \
                 service:\n                name: {}\n                port:\n                  number: {}\n",
                p.path, p.path_type, p.service, p.port
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Starting Portcullis
// ---------------------------------------------------------------------------------------------

/// Translation options serving one ingress class.
pub fn class_options(class: &str) -> translate::Options {
    translate::Options {
        ingress_classes: vec![class.to_string()],
        ..translate::Options::default()
    }
}

/// The proxy configuration tests use: defaults without an access log.
pub fn quiet_proxy() -> ProxyConfig {
    ProxyConfig {
        access_log: AccessLog::Off,
        ..ProxyConfig::default()
    }
}

/// Starts Portcullis on `dir` serving `class`, HTTP on a fresh loopback port, no admin server.
pub async fn start(dir: &Path, class: &str) -> Running {
    start_with(dir, class, quiet_proxy(), false).await
}

/// Starts Portcullis on `dir` serving `class` with HTTP and HTTPS listeners on fresh loopback
/// ports, no admin server.
pub async fn start_with_https(dir: &Path, class: &str) -> Running {
    start_listeners(dir, class, quiet_proxy(), false, true).await
}

/// Starts Portcullis on `dir` with the given translation options and proxy configuration, HTTP
/// (and HTTPS when asked) on fresh loopback ports, no admin server.
pub async fn start_with_options(
    dir: &Path,
    translate: translate::Options,
    proxy: ProxyConfig,
    https: bool,
) -> Running {
    portcullis::start(settings(dir, translate, proxy, https))
        .await
        .expect("Portcullis starts")
}

/// Starts Portcullis on `dir` serving a given class with a given proxy configuration, optionally with an
/// admin server on a fresh loopback port.
pub async fn start_with(dir: &Path, class: &str, proxy: ProxyConfig, admin: bool) -> Running {
    start_listeners(dir, class, proxy, admin, false).await
}

async fn start_listeners(
    dir: &Path,
    class: &str,
    proxy: ProxyConfig,
    admin: bool,
    https: bool,
) -> Running {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    portcullis::start(Settings {
        admin_addr: admin.then_some(loopback),
        ..settings(dir, class_options(class), proxy, https)
    })
    .await
    .expect("Portcullis starts")
}

/// Settings serving `dir` on fresh loopback ports (HTTPS when asked), no admin server.
fn settings(
    dir: &Path,
    translate: translate::Options,
    proxy: ProxyConfig,
    https: bool,
) -> Settings {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    Settings {
        manifests: vec![dir.to_path_buf()],
        http_addr: loopback,
        https_addr: https.then_some(loopback),
        admin_addr: None,
        translate,
        proxy,
    }
}

/// Reads `dir` the way Portcullis does and translates it for `class`.
pub fn translate_folder(dir: &Path, class: &str) -> (source::Load, translate::Translation) {
    let mut folder =
        source::FolderSource::new(vec![dir.to_path_buf()]).expect("manifest folder exists");
    let load = folder.load();
    let translation = translate::translate(&load.snapshot, &class_options(class));
    (load, translation)
}

/// The ready endpoints a request for `host` and `path` would be sent to (empty: none, or no route).
pub fn routed_endpoints(table: &Table, host: &str, path: &str) -> Vec<SocketAddr> {
    match table.lookup(host, path) {
        Some(found) => match &table.backend(found.route.backend).target {
            BackendTarget::Endpoints { ready, .. } => ready.clone(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// The name (`namespace/service:port`) of the backend a request for `host` and `path` is routed to.
pub fn routed_backend(table: &Table, host: &str, path: &str) -> Option<String> {
    table
        .lookup(host, path)
        .map(|found| table.backend(found.route.backend).name.clone())
}

/// Writes a manifest and waits until a newer table than the current one is published and `ready`
/// holds for it. If nothing is published for a while, the file is written again: a change made
/// before the watcher was set up is otherwise never seen. Panics after [`PUBLISH_TIMEOUT`].
pub async fn change_and_wait(
    running: &mut Running,
    dir: &Path,
    file: &str,
    text: &str,
    ready: impl Fn(&Table) -> bool,
) {
    let before = running.published.generation();
    running.generations.borrow_and_update();
    write_manifest(dir, file, text);
    let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
    loop {
        if running.published.generation() > before && ready(&running.published.load()) {
            return;
        }
        let now = tokio::time::Instant::now();
        assert!(
            now < deadline,
            "no table satisfying the expected change was published within {PUBLISH_TIMEOUT:?} \
             after writing {file}"
        );
        let wait = Duration::from_secs(1).min(deadline - now);
        match tokio::time::timeout(wait, running.generations.changed()).await {
            Ok(Ok(())) => {
                running.generations.borrow_and_update();
            }
            Ok(Err(_)) => panic!("the manifest watcher stopped"),
            Err(_) => {
                eprintln!("nothing published within {wait:?} of writing {file}; writing it again");
                write_manifest(dir, file, text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A one-connection-per-request HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A request as a test wants it on the wire.
#[derive(Clone, Debug)]
pub struct TestRequest {
    /// The method.
    pub method: Method,
    /// The request-target exactly as sent (`/a//b?x=1`, `*`, …).
    pub target: String,
    /// The Host header; `None` sends none at all.
    pub host: Option<String>,
    /// Further headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl TestRequest {
    /// A request with no Host header, no other headers and no body.
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        TestRequest {
            method,
            target: target.into(),
            host: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A GET for `target` with Host `host`.
    pub fn get(host: impl Into<String>, target: impl Into<String>) -> Self {
        TestRequest::new(Method::GET, target).host(host)
    }

    /// What the conformance suite's Go client sends: the method, Host and its User-Agent.
    pub fn go_client(method: Method, host: impl Into<String>, target: impl Into<String>) -> Self {
        TestRequest::new(method, target)
            .host(host)
            .header("User-Agent", GO_USER_AGENT)
    }

    /// Sets the Host header.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The request as hyper sends it.
    pub fn to_hyper(&self) -> Result<Request<Full<Bytes>>, String> {
        let uri = Uri::try_from(self.target.as_str())
            .map_err(|e| format!("bad request-target {:?}: {e}", self.target))?;
        let mut builder = Request::builder().method(self.method.clone()).uri(uri);
        if let Some(host) = &self.host {
            builder = builder.header(header::HOST, host.as_str());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(self.body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

/// A response with its body read in full.
#[derive(Clone, Debug)]
pub struct TestResponse {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version of the response.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as echo JSON, if it is one.
    pub fn echo(&self) -> Option<Echoed> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `HTTP/1.1` and friends, like Go's `resp.Proto`.
    pub fn proto(&self) -> &'static str {
        proto_name(self.version)
    }

    /// The echo's `service`, or a description of what came back instead.
    pub fn served_by(&self) -> String {
        match self.echo() {
            Some(echo) => echo.service,
            None => format!("(status {}, not an echo reply)", self.status.as_u16()),
        }
    }
}

/// Opens a new TCP connection to `addr` and performs an HTTP/1.1 handshake over it.
pub async fn connect_http1<B>(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Reads a response's body in full, within [`REQUEST_TIMEOUT`].
pub async fn read_response(response: Response<Incoming>) -> Result<TestResponse, String> {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .map_err(|_| "timed out reading the response body".to_string())?
        .map_err(|e| format!("reading the response body: {e}"))?
        .to_bytes();
    Ok(TestResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// Sends one request over a new TCP connection (like the Go suite's transport-per-request).
pub async fn send(addr: SocketAddr, request: &TestRequest) -> Result<TestResponse, String> {
    let hyper_request = request.to_hyper()?;
    let exchange = async {
        let mut sender = connect_http1::<Full<Bytes>>(addr).await?;
        let response = sender
            .send_request(hyper_request)
            .await
            .map_err(|e| format!("{} {}: {e}", request.method, request.target))?;
        read_response(response).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{} {}: no response within {REQUEST_TIMEOUT:?}",
                request.method, request.target
            )
        })?
}

/// Sends one request over HTTP/2 with prior knowledge (h2c) on a new TCP connection. The Host
/// header becomes `:authority`.
pub async fn send_h2(addr: SocketAddr, request: &TestRequest) -> Result<TestResponse, String> {
    let host = request.host.clone().unwrap_or_default();
    let uri = format!("http://{host}{}", request.target);
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(uri.as_str())
        .version(Version::HTTP_2);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let hyper_request = builder
        .body(Full::new(request.body.clone()))
        .map_err(|e| format!("cannot build {uri}: {e}"))?;
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        let response = sender
            .send_request(hyper_request)
            .await
            .map_err(|e| format!("{} {uri}: {e}", request.method))?;
        read_response(response).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{} {uri}: no response within {REQUEST_TIMEOUT:?}",
                request.method
            )
        })?
}

/// Sends the same request over HTTP/1.1 and over HTTP/2 (h2c), each on a new connection; panics
/// when either gets no response.
pub async fn send_both(
    addr: SocketAddr,
    request: &TestRequest,
) -> [(&'static str, TestResponse); 2] {
    let h1 = send(addr, request).await;
    let h2 = send_h2(addr, request).await;
    let expect = |proto: &str, r: Result<TestResponse, String>| {
        r.unwrap_or_else(|e| panic!("{proto} {} {}: {e}", request.method, request.target))
    };
    [
        ("HTTP/1.1", expect("HTTP/1.1", h1)),
        ("HTTP/2", expect("HTTP/2", h2)),
    ]
}

/// Sends a request like [`send`] and follows plain-HTTP redirects the way the conformance suite
/// does: the same method to the Location's host and path (the query is dropped), still connecting
/// to `addr`. A redirect to https is an error here (the conformance runner has a TLS client).
pub async fn send_following_redirects(
    addr: SocketAddr,
    request: &TestRequest,
) -> Result<TestResponse, String> {
    let mut current = request.clone();
    for _ in 0..10 {
        let response = send(addr, &current).await?;
        if !matches!(response.status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        let location = response
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| format!("redirect {} without a Location", response.status))?;
        let uri = Uri::try_from(location).map_err(|e| format!("bad Location {location:?}: {e}"))?;
        if uri.scheme_str() == Some("https") {
            return Err(format!(
                "{} redirect to {location}, which needs TLS",
                response.status
            ));
        }
        if let Some(authority) = uri.authority() {
            current.host = Some(authority.as_str().to_string());
        }
        current.target = uri.path().to_string();
    }
    Err("more than 10 redirects".into())
}

// ---------------------------------------------------------------------------------------------
// Bodies generated and counted on the fly
// ---------------------------------------------------------------------------------------------

/// A body of `len` bytes made on the fly in chunks of one repeated buffer. After `gate_at` bytes it
/// waits for `gate` to fire before going on, so a test can prove the other side saw the first bytes
/// before the last ones were even made (nothing in between buffered the whole body).
pub struct GeneratedBody {
    remaining: u64,
    sent: u64,
    chunk: Bytes,
    gate_at: u64,
    gate: Option<oneshot::Receiver<()>>,
}

impl GeneratedBody {
    /// `len` bytes in chunks of `chunk_size`, without a gate.
    pub fn new(len: u64, chunk_size: usize) -> Self {
        let pattern: Vec<u8> = (0..chunk_size).map(|i| b'a' + (i % 26) as u8).collect();
        GeneratedBody {
            remaining: len,
            sent: 0,
            chunk: Bytes::from(pattern),
            gate_at: u64::MAX,
            gate: None,
        }
    }

    /// Pauses after `at` bytes until `gate` fires (or its sender is dropped).
    pub fn gated(mut self, at: u64, gate: oneshot::Receiver<()>) -> Self {
        self.gate_at = at;
        self.gate = Some(gate);
        self
    }
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if this.sent >= this.gate_at {
            if let Some(gate) = this.gate.as_mut() {
                match Pin::new(gate).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => this.gate = None,
                }
            }
        }
        let mut n = this.remaining.min(this.chunk.len() as u64);
        if this.gate.is_some() && this.sent < this.gate_at {
            n = n.min(this.gate_at - this.sent);
        }
        this.remaining -= n;
        this.sent += n;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Counts a body's bytes frame by frame without keeping them; calls `first` once, on the first
/// non-empty data frame.
pub async fn count_body(
    mut body: Incoming,
    mut first: Option<oneshot::Sender<()>>,
) -> Result<u64, hyper::Error> {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            total += data.len() as u64;
            if !data.is_empty() {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------------

/// Go's `InsecureSkipVerify`: any certificate is accepted (handshake signatures are still checked);
/// the suite checks the certificate in a separate step.
#[derive(Debug)]
pub struct SkipVerify(pub Arc<rustls::crypto::CryptoProvider>);

impl SkipVerify {
    /// A verifier using the ring provider's signature algorithms.
    pub fn new() -> Arc<Self> {
        Arc::new(SkipVerify(Arc::new(
            rustls::crypto::ring::default_provider(),
        )))
    }
}

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Adds annotations to the first `metadata:` of a manifest written by `ingress_yaml`.
pub fn annotate(yaml: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::from("metadata:\n  annotations:\n");
    for (name, value) in annotations {
        lines.push_str(&format!(
            "    nginx.ingress.kubernetes.io/{name}: {}\n",
            serde_json::to_string(value).expect("a JSON string is YAML")
        ));
    }
    yaml.replacen("metadata:\n", &lines, 1)
}

/// An Ingress of class `nginx` for one host and one path with the given annotations.
pub fn nginx_ingress(
    name: &str,
    host: &str,
    service: &str,
    port: u16,
    ann: &[(&str, &str)],
) -> String {
    annotate(
        &ingress_yaml(
            NAMESPACE,
            name,
            "nginx",
            None,
            &[IngressRule::new(
                Some(host),
                vec![IngressPath::new("/", "Prefix", service, port)],
            )],
        ),
        ann,
    )
}
