//! End to end through a real browser: `portcullis demo` serves `examples/multi/` and headless Chromium,
//! driven over ChromeDriver's W3C WebDriver API, uses the Fibonacci page through the proxy. The demo's
//! proxy, admin server and built-in backends all listen on free ports.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. Without them a local run prints
//! `skipped: …`; under CI (`CI` set) a missing browser fails the test.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const DEMO_START_TIMEOUT: Duration = Duration::from_secs(20);
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const UI_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread")]
async fn fib_page_works_through_the_proxy() {
    let install = "apt-get install chromium chromium-driver";
    if !support::tools::files_ready(
        "fib_page_works_through_the_proxy",
        &[CHROMIUM, CHROMEDRIVER],
        install,
    ) {
        return;
    }

    // Declared first so it is removed last, after the browser using it is gone.
    let scratch = tempfile::tempdir().expect("temporary directory");
    let profile = scratch.path().join("profile");
    let driver_log = scratch.path().join("chromedriver.log");

    let (mut demo, demo_lines) = spawn_demo();
    let proxy_url = wait_for_proxy_url(&mut demo, &demo_lines);

    let driver_port = free_port();
    let mut driver_command = Command::new(CHROMEDRIVER);
    driver_command
        .arg(format!("--port={driver_port}"))
        .arg(format!("--log-path={}", driver_log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut driver_process = Guard::spawn("chromedriver", driver_command);

    let driver = WebDriver::new(driver_port);
    driver.wait_until_ready(&mut driver_process).await;
    let session = driver.new_session(&profile).await;

    let outcome = tokio::spawn(scenario(session.clone(), proxy_url)).await;
    if let Err(err) = session.delete().await {
        eprintln!("could not delete the WebDriver session: {err}");
    }
    if let Err(err) = outcome {
        print_tail(&driver_log);
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("browser scenario did not finish: {err}");
    }
    drop(driver_process);
    drop(demo);
}

/// What a user does: enter 7, see its value; enter 41, see the API's refusal.
async fn scenario(session: Session, proxy_url: String) {
    session.navigate(&proxy_url).await;

    let input = session.wait_for_element("#index-input").await;
    session.type_into(&input, "7").await;
    let submit = session.wait_for_element("#submit").await;
    session.click(&submit).await;

    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let calculated = session.text_of("#calculated-values").await;
        let seen = session.text_of("#seen-indexes").await;
        let done = matches!(
            (&calculated, &seen),
            (Ok(calculated), Ok(seen))
                if calculated.contains("For index 7 I calculated 21")
                    && seen.split(',').any(|index| index.trim() == "7")
        );
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index 7 never showed up: #calculated-values = {calculated:?}, #seen-indexes = {seen:?}, \
             #error = {:?}",
            session.text_of("#error").await
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let left_in_input = session.property(&input, "value").await;
    assert_eq!(
        left_in_input,
        json!(""),
        "the input is cleared after submitting"
    );

    session.type_into(&input, "41").await;
    session.click(&submit).await;
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let error = session.text_of("#error").await;
        if matches!(&error, Ok(text) if text.contains("Index too high")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal of index 41 never showed: #error = {error:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let seen = session
        .text_of("#seen-indexes")
        .await
        .unwrap_or_else(|err| panic!("reading #seen-indexes: {err}"));
    assert!(
        !seen.split(',').any(|index| index.trim() == "41"),
        "a refused index is not recorded: {seen:?}"
    );
}

/// A child process that is killed, with everything it started, when the guard is dropped.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, mut command: Command) -> Self {
        // Its own process group, so that the browser ChromeDriver starts can be killed along with it.
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        Self { name, child }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let group = format!("-{}", self.child.id());
            let killed_group = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !killed_group {
                eprintln!("could not kill the process group of {}", self.name);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts `portcullis demo` on free ports; its stdout lines arrive on the receiver.
fn spawn_demo() -> (Guard, mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
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
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut demo = Guard::spawn("portcullis demo", command);
    let stdout = demo.child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining after the URL is found, so the demo never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            eprintln!("[demo] {line}");
            let _ = lines_tx.send(line);
        }
    });
    (demo, lines_rx)
}

fn wait_for_proxy_url(demo: &mut Guard, lines: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + DEMO_START_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "portcullis demo printed no proxy URL (http://127.0.0.1:<port>/) within {DEMO_START_TIMEOUT:?}"
        );
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(url) = proxy_url_in(&line) {
                    return url;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_for_exit(demo, Duration::from_secs(5)).map_or_else(
                    || "is still running".to_owned(),
                    |s| format!("exited with {s}"),
                );
                panic!(
                    "portcullis demo closed its stdout before printing the proxy URL and {status}; \
                     its stderr is above"
                )
            }
        }
    }
}

fn wait_for_exit(process: &mut Guard, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The proxy URL in the demo's `Portcullis demo: open http://127.0.0.1:<port>/` line.
fn proxy_url_in(line: &str) -> Option<String> {
    let url = line.strip_prefix("Portcullis demo: open ")?;
    let port = url.strip_prefix("http://127.0.0.1:")?.strip_suffix('/')?;
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Some(url.to_owned()),
        _ => None,
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn print_tail(path: &Path) {
    if let Ok(log) = std::fs::read_to_string(path) {
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        eprintln!("--- last lines of {} ---", path.display());
        for line in &lines[start..] {
            eprintln!("{line}");
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A ChromeDriver reachable over HTTP.
struct WebDriver {
    http: HttpClient,
    base: String,
}

impl WebDriver {
    fn new(port: u16) -> Self {
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_until_ready(&self, process: &mut Guard) {
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            let last = match send(&self.http, &self.base, Method::GET, "/status", None).await {
                Ok((status, body))
                    if status.is_success() && body["value"]["ready"] == json!(true) =>
                {
                    return
                }
                Ok((status, body)) => format!("{status}: {body}"),
                Err(err) => err,
            };
            if let Some(status) = process.exited() {
                panic!("chromedriver exited with {status} before it was ready");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within {DRIVER_START_TIMEOUT:?}; last /status: {last}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn new_session(&self, profile: &Path) -> Session {
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                },
            },
        });
        let value = command(
            &self.http,
            &self.base,
            Method::POST,
            "/session",
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|err| panic!("creating a WebDriver session: {err}"));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_owned();
        Session {
            http: self.http.clone(),
            base: format!("{}/session/{id}", self.base),
        }
    }
}

/// One browser session; every method panics with the driver's answer when a command fails.
#[derive(Clone)]
struct Session {
    http: HttpClient,
    /// `http://127.0.0.1:<port>/session/<id>`
    base: String,
}

impl Session {
    async fn run(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        command(&self.http, &self.base, method, path, body).await
    }

    async fn navigate(&self, url: &str) {
        self.run(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|err| panic!("navigating to {url}: {err}"));
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let value = self
            .run(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        value[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no element reference in {value}"))
    }

    async fn wait_for_element(&self, css: &str) -> String {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let found = self.find(css).await;
            match found {
                Ok(element) => return element,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "element {css} never appeared: {err}"
                ),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn text_of(&self, css: &str) -> Result<String, String> {
        let element = self.find(css).await?;
        let value = self
            .run(Method::GET, &format!("/element/{element}/text"), None)
            .await?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("text of {css} is not a string: {value}"))
    }

    async fn property(&self, element: &str, name: &str) -> Value {
        self.run(
            Method::GET,
            &format!("/element/{element}/property/{name}"),
            None,
        )
        .await
        .unwrap_or_else(|err| panic!("reading property {name}: {err}"))
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.run(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap_or_else(|err| panic!("typing {text:?}: {err}"));
    }

    async fn click(&self, element: &str) {
        self.run(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|err| panic!("clicking: {err}"));
    }

    async fn delete(&self) -> Result<(), String> {
        self.run(Method::DELETE, "", None).await.map(drop)
    }
}

/// Sends one WebDriver command and returns its `value`, or the driver's error.
async fn command(
    http: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let (status, mut answer) = send(http, base, method.clone(), path, body).await?;
    if status.is_success() {
        Ok(answer["value"].take())
    } else {
        Err(format!("{method} {path} answered {status}: {answer}"))
    }
}

async fn send(
    http: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let body = body.map(|value| value.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| format!("building request for {path}: {err}"))?;
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|err| format!("{path}: {err}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("{path}: reading the answer: {err}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{path}: no answer within {COMMAND_TIMEOUT:?}"))?
}

#[test]
fn proxy_url_is_found_in_demo_output() {
    assert_eq!(
        proxy_url_in("Portcullis demo: open http://127.0.0.1:41234/"),
        Some("http://127.0.0.1:41234/".to_owned())
    );
    assert_eq!(
        proxy_url_in("  /      -> multi-client (built-in web page on 127.0.0.1:3000)"),
        None
    );
    assert_eq!(proxy_url_in("admin server on http://127.0.0.1:9090/"), None);
    assert_eq!(
        proxy_url_in("Portcullis demo: open http://127.0.0.1:0/"),
        None
    );
}
