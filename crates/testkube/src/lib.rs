//! An in-process Kubernetes API server for tests.
//!
//! It speaks the parts of the real API that Portcullis's cluster source uses, over plain HTTP on
//! a loopback port: lists with `resourceVersion`, `limit` and `continue`; `?watch=true` streams
//! of `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` JSON lines (and an `ERROR` line with a `410 Gone`
//! Status for a version older than the history kept); field selectors; get, create, update
//! (`409 Conflict` on a stale `resourceVersion`), merge patch and delete; the `status`
//! subresource. Tests drive it directly: change objects, stop and restart it, end watches,
//! compact history, reject a client's token, and read back which requests were made.
#![forbid(unsafe_code)]

mod http;
pub mod objects;
mod resources;
mod store;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use resources::{ResourceType, RESOURCES};
pub use store::{merge_patch, Failure};

use store::{Key, Store};

/// One request the server answered: what RBAC would have to allow for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Request {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// The API group (empty for the core group).
    pub group: &'static str,
    /// The resource, with its subresource if any (`ingresses/status`).
    pub resource: String,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object's name, if the path names one.
    pub name: Option<String>,
    /// The bearer token the client sent.
    pub token: Option<String>,
    /// The HTTP status code of the answer.
    pub code: u16,
}

/// What the request handlers and the test controls share.
pub(crate) struct Shared {
    store: Mutex<Store>,
    rejected: Mutex<HashSet<String>>,
    /// Bumped after every change to objects and every request, for tests to wait on.
    changes: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_rejected(&self, token: Option<&str>) -> bool {
        let rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        token.is_some_and(|t| rejected.contains(t))
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// The accept loop and the connections it started.
struct Serving {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Serving {
    fn stop(self) {
        self.accept.abort();
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for connection in connections.iter() {
            connection.abort();
        }
    }
}

/// A running in-process API server on `127.0.0.1:<random port>`. Stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: Mutex<Option<Serving>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(serving) = self.lock_serving().take() {
            serving.stop();
        }
    }
}

fn find(api_version: &str, kind: &str) -> &'static ResourceType {
    resources::by_kind(api_version, kind)
        .unwrap_or_else(|| panic!("the test API server does not serve {api_version} {kind}"))
}

fn key(resource: &ResourceType, namespace: &str, name: &str) -> Key {
    let namespace = if resource.namespaced { namespace } else { "" };
    (namespace.to_string(), name.to_string())
}

impl ApiServer {
    /// Starts a server with no objects.
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the test API server");
        let addr = listener
            .local_addr()
            .expect("the test API server's address");
        let server = ApiServer {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                rejected: Mutex::new(HashSet::new()),
                changes: watch::channel(0).0,
            }),
            addr,
            serving: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn lock_serving(&self) -> MutexGuard<'_, Option<Serving>> {
        self.serving.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(http::accept(
            listener,
            self.shared.clone(),
            connections.clone(),
        ));
        *self.lock_serving() = Some(Serving {
            accept,
            connections,
        });
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir`, authenticating with `token`; returns its
    /// path.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: {token}\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {token}\n    namespace: default\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write a kubeconfig");
        path
    }

    /// Stops answering: closes the listener, every connection and every watch.
    pub async fn stop(&self) {
        if let Some(serving) = self.lock_serving().take() {
            serving.stop();
        }
        self.shared.store().close_watches(None);
        tokio::task::yield_now().await;
    }

    /// Starts answering again on the same port, with the objects and history it had.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the test API server's port again");
        self.serve(listener);
    }

    /// Creates or replaces an object as a controller elsewhere would (status included), by its
    /// `apiVersion` and `kind`. Returns it as stored (with its new `resourceVersion`).
    pub fn apply(&self, object: Value) -> Value {
        let resource = find(
            object["apiVersion"].as_str().unwrap_or(""),
            object["kind"].as_str().unwrap_or(""),
        );
        let stored = self
            .shared
            .store()
            .put(resource, object)
            .unwrap_or_else(|e| panic!("cannot store the object: {}", e.message));
        self.shared.changed();
        stored
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let resource = find(api_version, kind);
        let deleted = self
            .shared
            .store()
            .delete(resource, &key(resource, namespace, name))
            .is_ok();
        self.shared.changed();
        deleted
    }

    /// An object as stored now.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = find(api_version, kind);
        self.shared
            .store()
            .get(resource, &key(resource, namespace, name))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.shared.store().all(find(api_version, kind))
    }

    /// Ends every open watch, as an API server does when a watch times out.
    pub fn drop_watches(&self) {
        self.shared.store().close_watches(None);
    }

    /// Forgets the change history up to now: a watch from an older version gets `410 Gone`.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Sends a `BOOKMARK` to every watch that asked for them.
    pub fn bookmark(&self) {
        self.shared.store().bookmark();
    }

    /// How many watches are open.
    pub fn watch_count(&self) -> usize {
        self.shared.store().watch_count()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Answers `401 Unauthorized` to every request with `token` from now on, and ends its
    /// watches.
    pub fn reject_token(&self, token: &str) {
        self.shared
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string());
        self.shared.store().close_watches(Some(token));
    }

    /// Accepts `token` again.
    pub fn accept_token(&self, token: &str) {
        self.shared
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.store().requests.clone()
    }

    /// Waits until `check` returns `Some`, re-checking after every request and change, for at
    /// most `timeout`. Returns `None` if the time ran out.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&ApiServer) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(found) = check(self) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}
