//! Built-in backends for `portcullis demo`: the two Services behind the Ingress in `examples/multi/`.
//!
//! They sit outside the spine: the demo runs them next to the proxy so that the example manifests route real
//! traffic without a cluster. `multi-client` serves a single self-contained web page (the Fibonacci
//! calculator), `multi-server` the small JSON API the page talks to through the proxy under `/api`.
//!
//! The backends listen wherever the demo's flags say, so the demo also plays the part a cluster's
//! EndpointSlice controller would: [`DemoManifests`] serves the manifests with the endpoints of the two
//! Services pointing at the addresses the backends actually bound, and keeps that view in step with the
//! manifest folder as it is edited.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use model::slice::{Endpoint, EndpointConditions, EndpointPort};
use model::{EndpointSlice, Meta, ObjectKey, Service, Snapshot};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Largest index the API computes; larger ones are answered with 422, as in the original app.
const MAX_INDEX: u64 = 40;

/// Largest request body the API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How many submitted indexes `/values/all` remembers; the oldest are forgotten first.
const MAX_SEEN: usize = 1000;

/// How long a connection may wait for the next request head before it is closed. This also ends idle
/// keep-alive connections, as real backends do, so the proxy's upstream pool meets that case in the demo.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the built-in web client (`multi-client`) on a bound listener until the task is dropped.
pub async fn run_client(listener: TcpListener) -> io::Result<()> {
    serve(listener, || {
        service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(handle_client(&req)) })
    })
    .await
}

/// Serves the built-in JSON API (`multi-server`) on a bound listener until the task is dropped.
pub async fn run_api(listener: TcpListener) -> io::Result<()> {
    let state = Arc::new(ApiState::default());
    serve(listener, move || {
        let state = Arc::clone(&state);
        service_fn(move |req: Request<Incoming>| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(handle_api(&state, req).await) }
        })
    })
    .await
}

/// Accepts connections and serves each with a fresh service from `make_service`.
///
/// Connection tasks live in a `JoinSet` owned by this future, so dropping the future (or aborting its task)
/// also closes every connection it accepted.
async fn serve<M, S, F>(listener: TcpListener, make_service: M) -> io::Result<()>
where
    M: Fn() -> S,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = F,
        > + Send
        + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning, the condition is transient.
                tracing::warn!(error = %err, "demo backend: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = make_service();
        let builder = Arc::clone(&builder);
        connections.spawn(async move {
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "demo backend: connection ended with an error");
            }
        });
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// The Service whose Pods the built-in web client stands in for.
pub const CLIENT_SERVICE: &str = "client-cluster-ip-service";
/// The Service whose Pods the built-in API server stands in for.
pub const API_SERVICE: &str = "server-cluster-ip-service";

/// Where the built-in backends listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltIns {
    /// The web client ([`CLIENT_SERVICE`]).
    pub client: SocketAddr,
    /// The API server ([`API_SERVICE`]).
    pub api: SocketAddr,
}

impl BuiltIns {
    /// The address of the built-in backend standing in for the Pods of the Service `name`.
    fn serving(&self, name: &str) -> Option<SocketAddr> {
        match name {
            CLIENT_SERVICE => Some(self.client),
            API_SERVICE => Some(self.api),
            _ => None,
        }
    }
}

/// `snapshot` as the demo serves it: each Service a built-in backend stands in for gets one
/// EndpointSlice, `<service>-demo`, with one ready endpoint at the backend's address and every
/// Service port on the backend's port, in place of the EndpointSlices and Endpoints the manifests
/// give it. Everything else is left as it is.
pub fn with_built_in_endpoints(snapshot: &Snapshot, built_ins: &BuiltIns) -> Snapshot {
    let mut out = snapshot.clone();
    let served: Vec<(&ObjectKey, &Service, SocketAddr)> = snapshot
        .services
        .iter()
        .filter_map(|(key, service)| Some((key, &**service, built_ins.serving(&key.name)?)))
        .collect();
    out.endpoint_slices.retain(|key, slice| {
        !served.iter().any(|(served_key, _, _)| {
            served_key.namespace == key.namespace
                && Some(&served_key.name) == slice.service.as_ref()
        })
    });
    for (key, service, addr) in served {
        out.endpoints.remove(key);
        let slice = built_in_slice(key, service, addr);
        out.endpoint_slices
            .insert(ObjectKey::of_object(&slice), Arc::new(slice));
    }
    out
}

/// The EndpointSlice of a Service whose one Pod listens on `addr`.
fn built_in_slice(key: &ObjectKey, service: &Service, addr: SocketAddr) -> EndpointSlice {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|port| EndpointPort {
            name: port.name.clone(),
            port: Some(i32::from(addr.port())),
            protocol: port.protocol.clone(),
            app_protocol: port.app_protocol.clone(),
        })
        .collect();
    EndpointSlice {
        metadata: Meta {
            name: Some(format!("{}-demo", key.name)),
            namespace: Some(key.namespace.clone()),
            uid: None,
        },
        service: Some(key.name.clone()),
        address_type: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![addr.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
        }]),
        ports: Some(ports),
    }
}

/// Every object of a snapshot as one manifest: a JSON `List`.
fn manifest_of(snapshot: &Snapshot) -> serde_json::Result<Vec<u8>> {
    fn push<T: serde::Serialize>(
        items: &mut Vec<Value>,
        objects: &BTreeMap<ObjectKey, Arc<T>>,
    ) -> serde_json::Result<()> {
        for object in objects.values() {
            items.push(serde_json::to_value(&**object)?);
        }
        Ok(())
    }
    let mut items = Vec::with_capacity(snapshot.len());
    push(&mut items, &snapshot.ingress_classes)?;
    push(&mut items, &snapshot.ingresses)?;
    push(&mut items, &snapshot.services)?;
    push(&mut items, &snapshot.endpoint_slices)?;
    push(&mut items, &snapshot.endpoints)?;
    push(&mut items, &snapshot.secrets)?;
    push(&mut items, &snapshot.config_maps)?;
    serde_json::to_vec_pretty(&json!({ "apiVersion": "v1", "kind": "List", "items": items }))
}

/// The manifests `portcullis demo` serves: the objects of the manifest paths, with the built-in
/// backends' endpoints (see [`with_built_in_endpoints`]), written as one manifest into a
/// temporary folder and rewritten whenever the paths change. Problems reading the paths are logged
/// here, naming the files as they are; the folder goes away when this is dropped.
pub struct DemoManifests {
    folder: tempfile::TempDir,
    watcher: JoinHandle<()>,
}

/// The name of the one manifest in a [`DemoManifests`] folder.
const DEMO_MANIFEST: &str = "demo.json";

impl DemoManifests {
    /// Reads `paths`, writes the first view and starts following changes.
    pub async fn start(paths: Vec<PathBuf>, built_ins: BuiltIns) -> anyhow::Result<Self> {
        let folder = tempfile::Builder::new()
            .prefix("portcullis-demo-")
            .tempdir()?;
        let mut source = source::FolderSource::new(paths)?;
        let (source, load) = tokio::task::spawn_blocking(move || {
            let load = source.load();
            (source, load)
        })
        .await?;
        let target = folder.path().to_path_buf();
        write_view(&target, &load, &built_ins)?;
        let watcher = tokio::spawn(async move {
            let result = source::watch(source, load, move |load| {
                if let Err(e) = write_view(&target, load, &built_ins) {
                    tracing::error!(error = %e, "cannot update the demo's manifests");
                }
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "manifest watcher stopped; edits are no longer picked up");
            }
        });
        Ok(DemoManifests { folder, watcher })
    }

    /// The folder to serve.
    pub fn path(&self) -> &Path {
        self.folder.path()
    }
}

impl Drop for DemoManifests {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Writes the view of `load` into `folder`, replacing the previous one in a single rename.
fn write_view(folder: &Path, load: &source::Load, built_ins: &BuiltIns) -> anyhow::Result<()> {
    crate::app::log_diagnostics(&load.diagnostics);
    let text = manifest_of(&with_built_in_endpoints(&load.snapshot, built_ins))?;
    let partial = folder.join(format!("{DEMO_MANIFEST}.partial"));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, folder.join(DEMO_MANIFEST))?;
    Ok(())
}

/// The original app's Fibonacci variant: `fib(0) = fib(1) = 1`. `None` when the value does not fit a `u64`.
fn fib(index: u64) -> Option<u64> {
    let (mut previous, mut current) = (1u64, 1u64);
    for _ in 1..index {
        let following = previous.checked_add(current)?;
        previous = current;
        current = following;
    }
    Some(current)
}

/// State shared by all connections of one API server, in place of the original app's Postgres and Redis.
#[derive(Default)]
struct ApiState {
    inner: Mutex<ApiData>,
}

#[derive(Default)]
struct ApiData {
    /// Indexes in submission order, repeats included (the original keeps one table row per submission).
    seen: Vec<u64>,
    /// Index → computed value (the original keeps these in a Redis hash).
    values: BTreeMap<u64, u64>,
}

impl ApiState {
    fn lock(&self) -> MutexGuard<'_, ApiData> {
        // The data stays consistent even if a holder panicked: every update is a single push or insert.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, index: u64, value: u64) {
        let mut data = self.lock();
        if data.seen.len() >= MAX_SEEN {
            let excess = data.seen.len() + 1 - MAX_SEEN;
            data.seen.drain(..excess);
        }
        data.seen.push(index);
        data.values.insert(index, value);
    }

    fn all_json(&self) -> Value {
        let data = self.lock();
        Value::Array(
            data.seen
                .iter()
                .map(|index| json!({ "number": index }))
                .collect(),
        )
    }

    fn current_json(&self) -> Value {
        let data = self.lock();
        Value::Object(
            data.values
                .iter()
                .map(|(index, value)| (index.to_string(), Value::String(value.to_string())))
                .collect(),
        )
    }
}

/// Answers one API request. Like the course app's server it knows nothing of `/api`: the Ingress
/// rewrites `/api/values/all` to `/values/all` on the way.
async fn handle_api<B>(state: &ApiState, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let path = req.uri().path();
    let method = req.method();
    let is_read = method == Method::GET || method == Method::HEAD;
    match path {
        "/" if is_read => text(StatusCode::OK, "Hi"),
        "/values/all" if is_read => json_response(StatusCode::OK, &state.all_json()),
        "/values/current" if is_read => json_response(StatusCode::OK, &state.current_json()),
        "/values" if method == Method::POST => submit(state, req).await,
        "/" | "/values/all" | "/values/current" => method_not_allowed("GET, HEAD"),
        "/values" => method_not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `POST /values`: parses `{"index": n}`, computes and stores the value.
async fn submit<B>(state: &ApiState, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let declared_too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64);
    if declared_too_large {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "Could not read the request body"),
    };
    let index = match parse_index(&body) {
        Ok(index) => index,
        Err(IndexError::TooHigh) => {
            return text(StatusCode::UNPROCESSABLE_ENTITY, "Index too high")
        }
        Err(IndexError::Invalid(message)) => return text(StatusCode::BAD_REQUEST, message),
    };
    let Some(value) = fib(index) else {
        return text(StatusCode::UNPROCESSABLE_ENTITY, "Index too high");
    };
    state.record(index, value);
    json_response(StatusCode::OK, &json!({ "working": true }))
}

#[derive(Debug, PartialEq, Eq)]
enum IndexError {
    TooHigh,
    Invalid(&'static str),
}

/// Reads the index from `{"index": 7}` or `{"index": "7"}` (the web page sends the input's text).
fn parse_index(body: &[u8]) -> Result<u64, IndexError> {
    const NOT_A_NUMBER: &str = "Index must be a whole number from 0 to 40";
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| IndexError::Invalid("Body must be JSON like {\"index\": 7}"))?;
    let index = match value.get("index") {
        None => return Err(IndexError::Invalid("Body must have an \"index\" field")),
        Some(Value::Number(number)) => match number.as_u64() {
            Some(index) => index,
            // Integers beyond u64 arrive as floats; negative numbers and fractions are not indexes.
            None => match number.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 => {
                    return Err(IndexError::TooHigh)
                }
                _ => return Err(IndexError::Invalid(NOT_A_NUMBER)),
            },
        },
        Some(Value::String(text)) => {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(IndexError::Invalid(NOT_A_NUMBER));
            }
            // All digits, so the only way to fail is overflow.
            text.parse::<u64>().map_err(|_| IndexError::TooHigh)?
        }
        Some(_) => return Err(IndexError::Invalid(NOT_A_NUMBER)),
    };
    if index > MAX_INDEX {
        return Err(IndexError::TooHigh);
    }
    Ok(index)
}

/// Answers one web-client request: the page for every route, 404 for anything that looks like a file.
fn handle_client<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let path = req.uri().path();
    let last_segment = path.rsplit('/').next().unwrap_or_default();
    let looks_like_file = last_segment.contains('.') && last_segment != "index.html";
    if looks_like_file {
        return text(StatusCode::NOT_FOUND, "Not found");
    }
    let mut response = Response::new(Full::new(Bytes::from_static(CLIENT_PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CLIENT_CSP),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn too_large() -> Response<Full<Bytes>> {
    text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
}

/// The page loads nothing from elsewhere; the policy makes the browser hold it to that.
const CLIENT_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The whole web client: markup, style and script in one response.
const CLIENT_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fib Calculator · Portcullis demo</title>
<link rel="icon" href="data:,">
<style>
  :root {
    color-scheme: light dark;
    --bg: #f4f5f8; --card: #ffffff; --text: #1c2130; --muted: #5e6577; --border: #dde1e9;
    --accent: #2f5bea; --accent-text: #ffffff; --error-bg: #fdecec; --error-text: #9f1c1c;
  }
  @media (prefers-color-scheme: dark) {
    :root {
      --bg: #14161c; --card: #1d2029; --text: #e5e8ef; --muted: #9aa1b3; --border: #2f3342;
      --accent: #7191ff; --accent-text: #0c0f18; --error-bg: #3b1e22; --error-text: #ffb9b9;
    }
  }
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  body {
    margin: 0; background: var(--bg); color: var(--text);
    font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  }
  header {
    display: flex; align-items: center; gap: 1.5rem; flex-wrap: wrap;
    padding: 0.9rem 1.5rem; background: var(--card); border-bottom: 1px solid var(--border);
  }
  header .brand { margin-right: auto; font-weight: 700; letter-spacing: 0.01em; }
  header .brand span { color: var(--muted); font-weight: 400; }
  header nav { display: flex; gap: 1.25rem; }
  main a { color: var(--accent); }
  header a { color: var(--accent); text-decoration: none; font-weight: 500; }
  header a:hover { text-decoration: underline; }
  header a[aria-current="page"] { text-decoration: underline; text-underline-offset: 0.3em; }
  main { max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  .card {
    background: var(--card); border: 1px solid var(--border); border-radius: 12px;
    padding: 1.5rem; margin-bottom: 1.25rem;
  }
  h1 { font-size: 1.5rem; margin: 0 0 1rem; }
  h2 {
    font-size: 0.85rem; margin: 0 0 0.5rem; color: var(--muted);
    text-transform: uppercase; letter-spacing: 0.05em;
  }
  form { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center; }
  label { width: 100%; font-weight: 600; }
  input {
    flex: 1; min-width: 8rem; padding: 0.55rem 0.75rem; font: inherit; color: var(--text);
    background: var(--bg); border: 1px solid var(--border); border-radius: 8px;
  }
  input:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
  button {
    padding: 0.55rem 1.25rem; font: inherit; font-weight: 600; cursor: pointer;
    color: var(--accent-text); background: var(--accent); border: 0; border-radius: 8px;
  }
  button:disabled { opacity: 0.6; cursor: progress; }
  .hint { margin: 0.5rem 0 0; color: var(--muted); font-size: 0.875rem; }
  .error {
    margin-top: 0.75rem; padding: 0.6rem 0.8rem; border-radius: 8px;
    background: var(--error-bg); color: var(--error-text); font-weight: 500;
  }
  #seen-indexes { font-variant-numeric: tabular-nums; }
  #calculated-values div { padding: 0.35rem 0; border-bottom: 1px solid var(--border); }
  #calculated-values div:last-child { border-bottom: 0; }
  .empty { margin: 0; color: var(--muted); font-style: italic; }
  footer { max-width: 40rem; margin: 0 auto 2rem; padding: 0 1rem; color: var(--muted); font-size: 0.875rem; }
  code {
    font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
    padding: 0.1em 0.3em; border-radius: 4px; background: var(--border); white-space: nowrap;
  }
</style>
</head>
<body>
<header>
  <div class="brand">Fib Calculator <span>· Portcullis demo</span></div>
  <nav>
    <a href="/" data-route id="nav-home">Home</a>
    <a href="/otherpage" data-route id="nav-other">Other page</a>
  </nav>
</header>

<main>
  <section id="home-view">
    <div class="card">
      <h1>Fibonacci calculator</h1>
      <form id="index-form" autocomplete="off">
        <label for="index-input">Enter your index:</label>
        <input id="index-input" name="index" type="text" inputmode="numeric" placeholder="e.g. 7">
        <button id="submit" type="submit">Submit</button>
      </form>
      <p class="hint">Indexes from 0 to 40; the API computes the value and remembers it.</p>
      <div id="error" class="error" role="alert" hidden></div>
    </div>

    <div class="card">
      <h2>Indexes I have seen:</h2>
      <div id="seen-indexes"></div>
      <p id="seen-empty" class="empty">None yet.</p>
    </div>

    <div class="card">
      <h2>Calculated values:</h2>
      <div id="calculated-values"></div>
      <p id="values-empty" class="empty">None yet.</p>
    </div>
  </section>

  <section id="other-view" hidden>
    <div class="card">
      <h1>Another page</h1>
      <p>This route lives only in the browser: the web client answers every path with the same page,
        and the script decides what to show.</p>
      <p><a href="/" data-route>Back to the calculator</a></p>
    </div>
  </section>
</main>

<footer>
  Served by Portcullis through the Ingress in <code>examples/multi/</code>:
  <code>/</code> goes to the web client (<code>client-cluster-ip-service:3000</code>) and
  <code>/api</code> to the API server (<code>server-cluster-ip-service:5000</code>).
</footer>

<script>
(function () {
  "use strict";

  var byId = function (id) { return document.getElementById(id); };
  var form = byId("index-form");
  var input = byId("index-input");
  var button = byId("submit");
  var errorBox = byId("error");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  async function getJson(url) {
    var response = await fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" });
    if (!response.ok) {
      var detail = (await response.text()).trim();
      throw new Error(url + " answered " + response.status + (detail ? ": " + detail : ""));
    }
    return response.json();
  }

  function renderSeen(rows) {
    var numbers = Array.isArray(rows)
      ? rows.map(function (row) { return row && row.number; })
            .filter(function (n) { return n !== undefined && n !== null; })
      : [];
    byId("seen-indexes").textContent = numbers.join(", ");
    byId("seen-empty").hidden = numbers.length > 0;
  }

  function renderValues(values) {
    var list = byId("calculated-values");
    var keys = values && typeof values === "object" ? Object.keys(values) : [];
    keys.sort(function (a, b) { return Number(a) - Number(b); });
    list.replaceChildren();
    keys.forEach(function (key) {
      var line = document.createElement("div");
      line.textContent = "For index " + key + " I calculated " + values[key];
      list.appendChild(line);
    });
    byId("values-empty").hidden = keys.length > 0;
  }

  async function refresh() {
    try {
      var results = await Promise.all([getJson("/api/values/all"), getJson("/api/values/current")]);
      renderSeen(results[0]);
      renderValues(results[1]);
    } catch (err) {
      showError("Could not load the values: " + err.message);
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    clearError();
    var index = input.value;
    button.disabled = true;
    try {
      var response = await fetch("/api/values", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ index: index })
      });
      input.value = "";
      if (!response.ok) {
        var detail = (await response.text()).trim();
        showError(detail || "The API answered " + response.status);
      }
    } catch (err) {
      showError("Could not reach the API: " + err.message);
    } finally {
      button.disabled = false;
    }
    await refresh();
  });

  function showRoute() {
    var other = location.pathname.replace(/\/+$/, "") === "/otherpage";
    byId("home-view").hidden = other;
    byId("other-view").hidden = !other;
    markCurrent(byId("nav-home"), !other);
    markCurrent(byId("nav-other"), other);
  }

  function markCurrent(link, current) {
    if (current) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-route]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    if (link.pathname !== location.pathname) {
      history.pushState(null, "", link.pathname);
    }
    showRoute();
  });
  window.addEventListener("popstate", showRoute);

  showRoute();
  refresh();
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests;
