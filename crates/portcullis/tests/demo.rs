//! `portcullis demo` without a browser: its built-in backends listen wherever its flags say (free
//! ports here), and the manifests it routes by are sent there, edits included.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::{Method, StatusCode};
use portcullis::demo::{BuiltIns, DemoManifests, API_SERVICE, CLIENT_SERVICE};
use portcullis::{Running, Settings};
use support::{
    change_and_wait, endpoint_slice_yaml, ingress_yaml, quiet_proxy, routed_endpoints, send,
    service_yaml, spawn_simple_echo, write_manifest, IngressPath, IngressRule, TestRequest,
    TestResponse, NAMESPACE,
};
use tokio::net::TcpListener;

/// How long the demo may take to start and print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

async fn get(addr: SocketAddr, host: &str, target: &str) -> TestResponse {
    send(addr, &TestRequest::get(host, target))
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}{target}: {e}"))
}

/// The web page and the API, each answering through the proxy at `proxy`.
async fn assert_page_and_api(proxy: SocketAddr) {
    let host = proxy.to_string();
    let page = get(proxy, &host, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("Enter your index:"), "{}", page.text());

    let submit = TestRequest::new(Method::POST, "/api/values")
        .host(host.clone())
        .header("Content-Type", "application/json")
        .body(r#"{"index":"7"}"#);
    let submitted = send(proxy, &submit).await.expect("POST /api/values");
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.text());
    let current = get(proxy, &host, "/api/values/current").await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text());
    assert_eq!(current.text(), r#"{"7":"21"}"#);
}

/// The built-in backends on free ports; they stop when the handles are dropped.
struct Backends {
    built_ins: BuiltIns,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn spawn_built_ins() -> Backends {
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let built_ins = BuiltIns {
        client: client.local_addr().expect("address"),
        api: api.local_addr().expect("address"),
    };
    Backends {
        built_ins,
        tasks: vec![
            tokio::spawn(portcullis::demo::run_client(client)),
            tokio::spawn(portcullis::demo::run_api(api)),
        ],
    }
}

async fn serve(demo: &DemoManifests) -> Running {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    portcullis::start(Settings {
        manifests: vec![demo.path().to_path_buf()],
        http_addr: loopback,
        https_addr: None,
        admin_addr: None,
        translate: translate::Options::nginx_compat(),
        proxy: quiet_proxy(),
    })
    .await
    .expect("Portcullis starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_routed_to_where_the_built_in_backends_listen_and_edits_follow() {
    let source = tempfile::tempdir().expect("a temporary manifest folder");
    // The manifests name an address of their own for each Service; something else answers there,
    // like a user's own app on the port the manifests give.
    let elsewhere = spawn_simple_echo("elsewhere", "elsewhere-0").await;
    let services = [
        service_yaml(NAMESPACE, CLIENT_SERVICE, 3000, None),
        endpoint_slice_yaml(
            NAMESPACE,
            CLIENT_SERVICE,
            "client-local",
            None,
            elsewhere.addr(),
            true,
        ),
        service_yaml(NAMESPACE, API_SERVICE, 5000, None),
        endpoint_slice_yaml(
            NAMESPACE,
            API_SERVICE,
            "server-local",
            None,
            elsewhere.addr(),
            true,
        ),
    ];
    write_manifest(source.path(), "services.yaml", &services.join("---\n"));
    // Written as the course app's Ingress is: the API server sees paths without `/api`.
    let ingress = ingress_yaml(
        NAMESPACE,
        "demo",
        "nginx",
        None,
        &[IngressRule::new(
            None,
            vec![
                IngressPath::new("/?(.*)", "ImplementationSpecific", CLIENT_SERVICE, 3000),
                IngressPath::new("/api/?(.*)", "ImplementationSpecific", API_SERVICE, 5000),
            ],
        )],
    )
    .replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    nginx.ingress.kubernetes.io/use-regex: \"true\"\n    \
         nginx.ingress.kubernetes.io/rewrite-target: /$1\n",
        1,
    );
    write_manifest(source.path(), "ingress.yaml", &ingress);

    let backends = spawn_built_ins().await;
    let built_ins = backends.built_ins;
    let demo = DemoManifests::start(vec![source.path().to_path_buf()], built_ins)
        .await
        .expect("the demo's manifests");
    let mut running = serve(&demo).await;
    let table = running.published.load();
    assert_eq!(
        routed_endpoints(&table, "any.example", "/"),
        [built_ins.client]
    );
    assert_eq!(
        routed_endpoints(&table, "any.example", "/api/values"),
        [built_ins.api]
    );
    assert_page_and_api(running.http_addr).await;

    // An edit to the manifest folder is served, routed to the built-in backends too.
    let live = ingress_yaml(
        NAMESPACE,
        "live",
        "nginx",
        None,
        &[IngressRule::new(
            Some("live.example"),
            vec![IngressPath::new("/", "Prefix", API_SERVICE, 5000)],
        )],
    );
    change_and_wait(&mut running, source.path(), "live.yaml", &live, |table| {
        routed_endpoints(table, "live.example", "/") == [built_ins.api]
    })
    .await;
    let current = get(running.http_addr, "live.example", "/values/current").await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text());
    assert_eq!(current.text(), r#"{"7":"21"}"#);

    running.shutdown().await;
    drop(demo);
    drop(backends);
}

/// A running `portcullis demo`, killed when dropped.
struct DemoProcess(Child);

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy address in the demo's `Portcullis demo: open http://…/` line.
fn announced_proxy(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("Portcullis demo: open http://")?
        .strip_suffix('/')?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_command_runs_on_free_ports() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--client-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--no-access-log",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("portcullis demo starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let demo = DemoProcess(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let proxy = loop {
        let line = lines
            .recv_timeout(START_TIMEOUT)
            .expect("portcullis demo announces where it listens");
        if let Some(addr) = announced_proxy(&line) {
            break addr;
        }
    };
    assert_page_and_api(proxy).await;
    drop(demo);
}

#[test]
fn the_proxy_address_is_read_from_the_announcement() {
    assert_eq!(
        announced_proxy("Portcullis demo: open http://127.0.0.1:41234/"),
        Some("127.0.0.1:41234".parse().expect("address"))
    );
    assert_eq!(
        announced_proxy("  /      -> multi-client (built-in web page on 127.0.0.1:3000)"),
        None
    );
}
