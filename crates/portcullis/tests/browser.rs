//! End to end through a real browser: `portcullis demo` serves `examples/multi/` and headless Chromium,
//! driven over ChromeDriver's W3C WebDriver API, uses the Fibonacci page through the proxy. The demo's
//! proxy, admin server and built-in backends all listen on free ports.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. Without them a local run prints
//! `skipped: …`; under CI (`CI` set) a missing browser fails the test.

mod support;
mod webdriver;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use webdriver::{Browser, Guard, Session, POLL_INTERVAL, UI_TIMEOUT};

const DEMO_START_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn fib_page_works_through_the_proxy() {
    if !support::tools::files_ready(
        "fib_page_works_through_the_proxy",
        &[webdriver::CHROMIUM, webdriver::CHROMEDRIVER],
        webdriver::INSTALL,
    ) {
        return;
    }

    let (mut demo, demo_lines) = spawn_demo();
    let proxy_url = wait_for_proxy_url(&mut demo, &demo_lines);

    let browser = Browser::start().await;
    let outcome = tokio::spawn(scenario(browser.session.clone(), proxy_url)).await;
    if let Err(err) = outcome {
        browser.print_log_tail();
        browser.close().await;
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("browser scenario did not finish: {err}");
    }
    browser.close().await;
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
    session
        .wait_for_text("#error", |text| text.contains("Index too high"))
        .await;
    let seen = session
        .text_of("#seen-indexes")
        .await
        .unwrap_or_else(|err| panic!("reading #seen-indexes: {err}"));
    assert!(
        !seen.split(',').any(|index| index.trim() == "41"),
        "a refused index is not recorded: {seen:?}"
    );
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
    let stdout = demo.take_stdout().expect("piped stdout");
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
