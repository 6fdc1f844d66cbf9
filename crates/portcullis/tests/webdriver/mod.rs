//! Headless Chromium driven over ChromeDriver's W3C WebDriver API, for tests that look at a page
//! the way a person would. ChromeDriver listens on a free loopback port; the browser and the
//! driver are killed, with everything they started, when the [`Browser`] is dropped.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (see [`CHROMIUM`], [`CHROMEDRIVER`]);
//! a test checks for them with `support::tools::files_ready` before starting a browser.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Where the browser is.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where ChromeDriver is.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How to get both.
pub const INSTALL: &str = "apt-get install chromium chromium-driver";

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page gets to show what a test waits for.
pub const UI_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a test looks again at a page while it waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running ChromeDriver with one browser session, and the scratch folder of its profile.
pub struct Browser {
    /// The browser session.
    pub session: Session,
    driver: Guard,
    log: std::path::PathBuf,
    // Dropped last, after the browser using it is gone.
    _scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver and opens a headless browser session.
    pub async fn start() -> Self {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let profile = scratch.path().join("profile");
        let log = scratch.path().join("chromedriver.log");
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut driver = Guard::spawn("chromedriver", command);
        let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://127.0.0.1:{port}");
        wait_until_ready(&http, &base, &mut driver).await;
        let session = new_session(http, &base, &profile).await;
        Browser {
            session,
            driver,
            log,
            _scratch: scratch,
        }
    }

    /// Closes the session (the processes go when the value is dropped).
    pub async fn close(self) {
        if let Err(err) = self.session.delete().await {
            eprintln!("could not delete the WebDriver session: {err}");
        }
    }

    /// Prints the end of ChromeDriver's log (for a failed test).
    pub fn print_log_tail(&self) {
        if let Ok(log) = std::fs::read_to_string(&self.log) {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(40);
            eprintln!("--- last lines of {} ---", self.log.display());
            for line in &lines[start..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A child process that is killed, with everything it started, when the guard is dropped.
pub struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    /// Starts `command` (`name` is for messages); panics if it cannot be started.
    pub fn spawn(name: &'static str, mut command: Command) -> Self {
        // Its own process group, so that what it starts (the browser ChromeDriver starts) is
        // killed along with it.
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        Self { name, child }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its stdout, if the command piped it and it has not been taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
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

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn wait_until_ready(http: &HttpClient, base: &str, process: &mut Guard) {
    let deadline = Instant::now() + DRIVER_START_TIMEOUT;
    loop {
        let last = match send(http, base, Method::GET, "/status", None).await {
            Ok((status, body)) if status.is_success() && body["value"]["ready"] == json!(true) => {
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

async fn new_session(http: HttpClient, base: &str, profile: &Path) -> Session {
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
    let value = command(&http, base, Method::POST, "/session", Some(capabilities))
        .await
        .unwrap_or_else(|err| panic!("creating a WebDriver session: {err}"));
    let id = value["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionId in {value}"))
        .to_owned();
    Session {
        http,
        base: format!("{base}/session/{id}"),
    }
}

/// One browser session; methods that cannot fail usefully panic with the driver's answer.
#[derive(Clone)]
pub struct Session {
    http: HttpClient,
    /// `http://127.0.0.1:<port>/session/<id>`
    base: String,
}

impl Session {
    async fn run(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        command(&self.http, &self.base, method, path, body).await
    }

    /// Opens `url`.
    pub async fn navigate(&self, url: &str) {
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

    /// Waits until an element matching `css` exists and returns a reference to the first one.
    /// Panics after [`UI_TIMEOUT`] with the driver's last answer.
    pub async fn wait_for_element(&self, css: &str) -> String {
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

    /// The property `name` of `element` (`value` of an input, say).
    pub async fn property(&self, element: &str, name: &str) -> Value {
        self.run(
            Method::GET,
            &format!("/element/{element}/property/{name}"),
            None,
        )
        .await
        .unwrap_or_else(|err| panic!("reading property {name}: {err}"))
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &str, text: &str) {
        self.run(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap_or_else(|err| panic!("typing {text:?}: {err}"));
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &str) {
        self.run(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|err| panic!("clicking: {err}"));
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> Result<String, String> {
        let element = self.find(css).await?;
        let value = self
            .run(Method::GET, &format!("/element/{element}/text"), None)
            .await?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("text of {css} is not a string: {value}"))
    }

    /// Waits until the first element matching `css` exists and its text satisfies `done`;
    /// returns that text. Panics after [`UI_TIMEOUT`] with what was last seen.
    pub async fn wait_for_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let text = self.text_of(css).await;
            if let Ok(text) = &text {
                if done(text) {
                    return text.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed what was expected within {UI_TIMEOUT:?}; last: {text:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        self.run(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
        .unwrap_or_else(|err| panic!("running a script: {err}"))
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
