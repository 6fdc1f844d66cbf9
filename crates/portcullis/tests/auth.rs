//! Authentication end to end, over HTTP/1.1 and HTTP/2: Basic authentication from an htpasswd
//! Secret (`auth-file`) and a user map (`auth-map`), an authentication service on loopback
//! (`auth-url` with its response headers, sign-in redirect, refusals, failures and answer cache),
//! and `satisfy` combining either with a source allow list.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proxy::{AccessLog, ProxyConfig};
use support::wire::{ingress, refused_addr, service_at, site, Listening};
use support::{quiet_proxy, send_both, spawn_http1, spawn_simple_echo, TestRequest, NAMESPACE};

/// htpasswd lines: alice (apr1, "secret"), bob (bcrypt, "hunter2"), carol ({SHA}, "secret"),
/// eve (an unsupported crypt scheme). Made with `openssl passwd -apr1`, Python's bcrypt and
/// `openssl dgst -sha1`.
const HTPASSWD: &str = "alice:$apr1$r31xyz12$onQKKDsjYs7dR4muzW5nu0\n\
bob:$2y$04$7cbdY/jY7pC4c2zlQV9hweV5vl3vVm1I15RyXi1qNo9tnK.E0Ea7W\n\
carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n\
eve:$6$salt$notsupported\n";

const ALICE: &str = "Basic YWxpY2U6c2VjcmV0";
const ALICE_WRONG: &str = "Basic YWxpY2U6d3Jvbmc=";
const BOB: &str = "Basic Ym9iOmh1bnRlcjI=";
const CAROL: &str = "Basic Y2Fyb2w6c2VjcmV0";
const DAVE: &str = "Basic ZGF2ZTpzZWNyZXQ=";

fn secrets() -> String {
    let file: String = HTPASSWD.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: users\n  namespace: {NAMESPACE}\n\
         type: Opaque\nstringData:\n  auth: |\n{file}---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: user-map\n  namespace: {NAMESPACE}\n\
         type: Opaque\nstringData:\n  dave: \"{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\"\n"
    )
}

fn with_auth(request: TestRequest, authorization: Option<&str>) -> TestRequest {
    match authorization {
        Some(a) => request.header("Authorization", a),
        None => request,
    }
}

#[tokio::test]
async fn basic_auth_accepts_listed_users_and_challenges_the_rest() {
    let echo = spawn_simple_echo("app", "app-0").await;
    let manifests = vec![
        service_at("app", echo.addr(), true),
        secrets(),
        ingress(
            "file",
            "file.example",
            "app",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-realm", "Staff only"),
            ],
        ),
        ingress(
            "map",
            "map.example",
            "app",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "default/user-map"),
                ("auth-secret-type", "auth-map"),
            ],
        ),
        ingress(
            "missing",
            "missing.example",
            "app",
            &[("auth-type", "basic"), ("auth-secret", "nowhere")],
        ),
    ];
    let site = site(&manifests, quiet_proxy(), Listening::default(), Vec::new()).await;
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("file.example", None, 401),
        ("file.example", Some(ALICE_WRONG), 401),
        ("file.example", Some("Bearer abc"), 401),
        ("file.example", Some(ALICE), 200),
        ("file.example", Some(BOB), 200),
        ("file.example", Some(CAROL), 200),
        ("file.example", Some(DAVE), 401),
        ("map.example", Some(DAVE), 200),
        ("map.example", Some(ALICE), 401),
        ("missing.example", Some(ALICE), 503),
    ];
    let mut failures = Vec::new();
    for &(host, authorization, status) in cases {
        let request = with_auth(TestRequest::get(host, "/x"), authorization);
        for (proto, response) in send_both(site.http(), &request).await {
            let what = format!("{proto} {host} {authorization:?}");
            if response.status.as_u16() != status {
                failures.push(format!(
                    "{what}: expected {status}, got {}",
                    response.status
                ));
                continue;
            }
            let challenge = response.headers.get("www-authenticate");
            match status {
                401 => {
                    let expected = if host == "file.example" {
                        "Basic realm=\"Staff only\""
                    } else {
                        "Basic realm=\"Authentication Required\""
                    };
                    if challenge.is_none_or(|c| c != expected) {
                        failures.push(format!("{what}: challenge {challenge:?}"));
                    }
                }
                200 => {
                    // nginx clears Authorization towards the upstream on Basic-authenticated
                    // routes.
                    let echo = response.echo().expect("an echo reply");
                    if echo.first("authorization").is_some() {
                        failures.push(format!("{what}: Authorization reached the upstream"));
                    }
                }
                _ => {}
            }
        }
    }
    site.running.shutdown().await;
    drop(echo);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// What the authentication service saw of one sub-request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    fields: http::HeaderMap,
    body_len: usize,
}

/// An authentication service: `/ok` admits (naming the user and setting a cookie), `/deny`
/// answers 401, `/forbid` 403, `/odd` 302; every sub-request is recorded.
async fn auth_service() -> (support::Server, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let server = spawn_http1(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            log.lock().expect("the record").push(Seen {
                method: parts.method.to_string(),
                path: path.clone(),
                fields: parts.headers.clone(),
                body_len: body.len(),
            });
            let builder = Response::builder().header("set-cookie", "session=abc; Path=/");
            let builder = match path.as_str() {
                "/ok" => builder.status(200).header("x-user", "alice"),
                "/deny" => builder
                    .status(401)
                    .header("www-authenticate", "Bearer realm=\"svc\""),
                "/forbid" => builder.status(403),
                _ => builder.status(302).header("location", "/elsewhere"),
            };
            builder
                .body(Full::new(Bytes::from_static(b"auth")))
                .expect("a response")
        }
    })
    .await;
    (server, seen)
}

#[tokio::test]
async fn an_authentication_service_admits_refuses_and_redirects_to_sign_in() {
    let echo = spawn_simple_echo("app", "app-0").await;
    let (service, seen) = auth_service().await;
    let at = service.addr;
    let down = refused_addr().await;
    let ok = format!("http://{at}/ok");
    let deny = format!("http://{at}/deny");
    let forbid = format!("http://{at}/forbid");
    let odd = format!("http://{at}/odd");
    let unreachable = format!("http://{down}/ok");
    let manifests = vec![
        service_at("app", echo.addr(), true),
        ingress(
            "ok",
            "ok.example",
            "app",
            &[
                ("auth-url", &ok),
                ("auth-response-headers", "X-User"),
                ("auth-request-redirect", "/after"),
            ],
        ),
        ingress(
            "signin",
            "signin.example",
            "app",
            &[
                ("auth-url", &deny),
                ("auth-signin", "https://login.example/start"),
            ],
        ),
        ingress(
            "param",
            "param.example",
            "app",
            &[
                ("auth-url", &deny),
                ("auth-signin", "https://$host/oauth2/start?x=1"),
                ("auth-signin-redirect-param", "next"),
                ("auth-always-set-cookie", "true"),
            ],
        ),
        ingress(
            "plain401",
            "plain401.example",
            "app",
            &[("auth-url", &deny)],
        ),
        ingress("forbid", "forbid.example", "app", &[("auth-url", &forbid)]),
        ingress("odd", "odd.example", "app", &[("auth-url", &odd)]),
        ingress("down", "down.example", "app", &[("auth-url", &unreachable)]),
        ingress(
            "bad",
            "bad.example",
            "app",
            &[("auth-url", "ftp://nowhere")],
        ),
    ];
    let site = site(&manifests, quiet_proxy(), Listening::default(), Vec::new()).await;
    let mut failures = Vec::new();

    failures.extend(admitted(site.http(), &seen).await);
    failures.extend(refused(site.http()).await);
    site.running.shutdown().await;
    drop((echo, service));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Checks a request admitted by the service: the user it names reaches the upstream (a forged
/// one does not), its cookie reaches the client, and it saw the X-Original-* fields.
async fn admitted(addr: std::net::SocketAddr, seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    let mut failures = Vec::new();
    let request = TestRequest::get("ok.example", "/page?q=1")
        .header("X-User", "mallory")
        .header("X-Trace", "t1");
    for (proto, response) in send_both(addr, &request).await {
        let echo = response.echo();
        let user = echo
            .as_ref()
            .and_then(|e| e.first("x-user").map(str::to_string));
        if response.status != StatusCode::OK || user.as_deref() != Some("alice") {
            failures.push(format!("{proto} ok: {} user {user:?}", response.status));
        }
        if echo.as_ref().is_some_and(|e| e.header("x-user").len() != 1) {
            failures.push(format!("{proto} ok: a forged X-User went through"));
        }
        let cookie = response.headers.get("set-cookie");
        if cookie.is_none_or(|c| c != "session=abc; Path=/") {
            failures.push(format!("{proto} ok: cookie {cookie:?}"));
        }
    }
    {
        let seen = seen.lock().expect("the record");
        let ok: Vec<&Seen> = seen.iter().filter(|s| s.path == "/ok").collect();
        if ok.len() != 2 {
            failures.push(format!("sub-requests to /ok: {}", ok.len()));
        }
        for s in ok {
            let field = |n: &str| {
                s.fields
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let expect = [
                ("x-original-url", "http://ok.example/page?q=1"),
                ("x-original-method", "GET"),
                ("x-sent-from", "nginx-ingress-controller"),
                ("x-real-ip", "127.0.0.1"),
                ("x-auth-request-redirect", "/after"),
                ("x-trace", "t1"),
            ];
            for (name, value) in expect {
                if field(name).as_deref() != Some(value) {
                    failures.push(format!("sub-request {name}: {:?}", field(name)));
                }
            }
            if s.method != "GET" || s.body_len != 0 {
                failures.push(format!(
                    "sub-request {} with {} body bytes",
                    s.method, s.body_len
                ));
            }
        }
    }

    failures
}

/// Checks the answers for requests the service refuses or cannot answer.
async fn refused(addr: std::net::SocketAddr) -> Vec<String> {
    let mut failures = Vec::new();
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (
            "signin.example",
            "/a b?c=1",
            302,
            Some("https://login.example/start?rd=http://signin.example%2Fa%20b%3Fc%3D1"),
        ),
        (
            "param.example",
            "/p",
            302,
            Some("https://param.example/oauth2/start?x=1&next=http://param.example%2Fp"),
        ),
        ("plain401.example", "/", 401, None),
        ("forbid.example", "/", 403, None),
        ("odd.example", "/", 500, None),
        ("down.example", "/", 500, None),
        ("bad.example", "/", 503, None),
    ];
    for &(host, target, status, location) in cases {
        let request = TestRequest::get(host, target.replace(' ', "%20"));
        for (proto, response) in send_both(addr, &request).await {
            let got = response
                .headers
                .get("location")
                .and_then(|l| l.to_str().ok());
            let expected_location = location.map(|l| l.replace("%20", "%2520"));
            if response.status.as_u16() != status || got != expected_location.as_deref() {
                failures.push(format!(
                    "{proto} {host}: {} location {got:?}",
                    response.status
                ));
            }
            let cookie = response.headers.get("set-cookie").is_some();
            // Cookies reach the client on the sign-in redirect, and on errors only with
            // auth-always-set-cookie.
            if cookie != (status == 302) && host != "param.example" {
                failures.push(format!("{proto} {host}: cookie {cookie}"));
            }
            if host == "plain401.example"
                && response
                    .headers
                    .get("www-authenticate")
                    .is_none_or(|c| c != "Bearer realm=\"svc\"")
            {
                failures.push(format!("{proto} {host}: challenge not passed on"));
            }
        }
    }
    failures
}

#[tokio::test]
async fn cached_answers_spare_the_authentication_service() {
    let echo = spawn_simple_echo("app", "app-0").await;
    let (service, seen) = auth_service().await;
    let ok = format!("http://{}/ok", service.addr);
    let manifests = vec![
        service_at("app", echo.addr(), true),
        ingress(
            "cached",
            "cached.example",
            "app",
            &[
                ("auth-url", &ok),
                ("auth-response-headers", "X-User"),
                ("auth-cache-key", "$remote_user$http_authorization"),
                ("auth-cache-duration", "200 10m"),
            ],
        ),
    ];
    let site = site(&manifests, quiet_proxy(), Listening::default(), Vec::new()).await;
    let mut users = Vec::new();
    for authorization in [ALICE, ALICE, BOB] {
        let request =
            TestRequest::get("cached.example", "/").header("Authorization", authorization);
        for (proto, response) in send_both(site.http(), &request).await {
            assert_eq!(response.status, StatusCode::OK, "{proto}");
            users.push(
                response
                    .echo()
                    .and_then(|e| e.first("x-user").map(str::to_string)),
            );
        }
    }
    // One sub-request per distinct key: the cached answer still names the user.
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(
        users.iter().all(|u| u.as_deref() == Some("alice")),
        "{users:?}"
    );
    site.running.shutdown().await;
    drop((echo, service));
}

#[tokio::test]
async fn satisfy_any_lets_an_allowed_address_through_without_credentials() {
    let echo = spawn_simple_echo("app", "app-0").await;
    let basic = [("auth-type", "basic"), ("auth-secret", "users")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = basic.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let manifests = vec![
        service_at("app", echo.addr(), true),
        secrets(),
        ingress(
            "any-in",
            "any-in.example",
            "app",
            &with(&[
                ("allowlist-source-range", "127.0.0.0/8"),
                ("satisfy", "any"),
            ]),
        ),
        ingress(
            "all-in",
            "all-in.example",
            "app",
            &with(&[("allowlist-source-range", "127.0.0.0/8")]),
        ),
        ingress(
            "any-out",
            "any-out.example",
            "app",
            &with(&[("allowlist-source-range", "10.0.0.0/8"), ("satisfy", "any")]),
        ),
        ingress(
            "all-out",
            "all-out.example",
            "app",
            &with(&[("allowlist-source-range", "10.0.0.0/8"), ("satisfy", "all")]),
        ),
    ];
    let site = site(&manifests, quiet_proxy(), Listening::default(), Vec::new()).await;
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("any-in.example", None, 200),
        ("all-in.example", None, 401),
        ("all-in.example", Some(ALICE), 200),
        ("any-out.example", None, 401),
        ("any-out.example", Some(ALICE), 200),
        ("all-out.example", Some(ALICE), 403),
    ];
    let mut failures = Vec::new();
    for &(host, authorization, status) in cases {
        let request = with_auth(TestRequest::get(host, "/"), authorization);
        for (proto, response) in send_both(site.http(), &request).await {
            if response.status.as_u16() != status {
                failures.push(format!(
                    "{proto} {host} {authorization:?}: expected {status}, got {}",
                    response.status
                ));
            }
        }
    }
    site.running.shutdown().await;
    drop(echo);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn the_access_log_never_holds_credentials() {
    raw::access_log();
    let echo = spawn_simple_echo("app", "app-0").await;
    let manifests = vec![
        service_at("app", echo.addr(), true),
        secrets(),
        ingress(
            "logged",
            "logged.example",
            "app",
            &[("auth-type", "basic"), ("auth-secret", "users")],
        ),
    ];
    let config = ProxyConfig {
        access_log: AccessLog::Text,
        ..quiet_proxy()
    };
    let site = site(&manifests, config, Listening::default(), Vec::new()).await;
    for (authorization, path) in [(ALICE, "/granted-entry"), (ALICE_WRONG, "/refused-entry")] {
        let request =
            TestRequest::get("logged.example", path).header("Authorization", authorization);
        for (proto, response) in send_both(site.http(), &request).await {
            assert_ne!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{proto}");
        }
        let line = raw::logged(path).await;
        let encoded = authorization.trim_start_matches("Basic ");
        assert!(
            !line.contains(encoded) && !line.contains("secret"),
            "{line}"
        );
    }
    site.running.shutdown().await;
    drop(echo);
}
