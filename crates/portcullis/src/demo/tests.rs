use super::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;

#[test]
fn fib_follows_the_original_definition() {
    let expected = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89];
    for (index, value) in expected.iter().enumerate() {
        assert_eq!(fib(index as u64), Some(*value), "fib({index})");
    }
    assert_eq!(fib(40), Some(165_580_141));
    assert_eq!(fib(92), Some(12_200_160_415_121_876_738));
    assert_eq!(fib(93), None);
    assert_eq!(fib(1_000_000), None);
}

#[test]
fn index_parsing() {
    assert_eq!(parse_index(br#"{"index": 7}"#), Ok(7));
    assert_eq!(parse_index(br#"{"index": "7"}"#), Ok(7));
    assert_eq!(parse_index(br#"{"index": " 40 "}"#), Ok(40));
    assert_eq!(parse_index(br#"{"index": 0}"#), Ok(0));
    assert_eq!(parse_index(br#"{"index": 41}"#), Err(IndexError::TooHigh));
    assert_eq!(parse_index(br#"{"index": "41"}"#), Err(IndexError::TooHigh));
    assert_eq!(
        parse_index(br#"{"index": "99999999999999999999999"}"#),
        Err(IndexError::TooHigh)
    );
    assert_eq!(
        parse_index(br#"{"index": 99999999999999999999999}"#),
        Err(IndexError::TooHigh)
    );
    for bad in [
        &br#"{"index": -1}"#[..],
        br#"{"index": 1.5}"#,
        br#"{"index": "-1"}"#,
        br#"{"index": "7abc"}"#,
        br#"{"index": ""}"#,
        br#"{"index": null}"#,
        br#"{"index": [7]}"#,
        br#"{"number": 7}"#,
        br#"[7]"#,
        b"not json",
        b"",
    ] {
        assert!(
            matches!(parse_index(bad), Err(IndexError::Invalid(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn request(method: Method, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("test request")
}

async fn call(state: &ApiState, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let response = handle_api(state, request(method, path, body)).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("full body")
        .to_bytes();
    (
        status,
        String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    )
}

#[tokio::test]
async fn api_round_trip() {
    let state = ApiState::default();
    assert_eq!(
        call(&state, Method::GET, "/", "").await,
        (StatusCode::OK, "Hi".into())
    );
    assert_eq!(
        call(&state, Method::GET, "/api/values/all", "").await.0,
        StatusCode::NOT_FOUND,
        "the API server, like the course's, has no /api prefix"
    );
    assert_eq!(
        call(&state, Method::GET, "/values/all", "").await,
        (StatusCode::OK, "[]".into())
    );
    assert_eq!(
        call(&state, Method::GET, "/values/current", "").await,
        (StatusCode::OK, "{}".into())
    );

    let (status, body) = call(&state, Method::POST, "/values", r#"{"index":"7"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"working": true})
    );
    let (status, _) = call(&state, Method::POST, "/values", r#"{"index":10}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&state, Method::POST, "/values", r#"{"index":7}"#).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = call(&state, Method::GET, "/values/all", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!([{"number": 7}, {"number": 10}, {"number": 7}])
    );
    let (status, body) = call(&state, Method::GET, "/values/current", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"7": "21", "10": "89"})
    );
}

#[tokio::test]
async fn api_rejects_bad_requests() {
    let state = ApiState::default();
    assert_eq!(
        call(&state, Method::POST, "/values", r#"{"index":"41"}"#).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "Index too high".into())
    );
    assert_eq!(
        call(&state, Method::POST, "/values", r#"{"index":41}"#)
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        call(&state, Method::POST, "/values", "{").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&state, Method::POST, "/values", r#"{"index":"x"}"#)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let huge = format!(r#"{{"index": "{}"}}"#, " ".repeat(MAX_BODY_BYTES));
    assert_eq!(
        call(&state, Method::POST, "/values", &huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        call(&state, Method::GET, "/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&state, Method::GET, "/values", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&state, Method::DELETE, "/values/all", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Nothing was stored by the rejected requests.
    assert_eq!(
        call(&state, Method::GET, "/values/all", "").await,
        (StatusCode::OK, "[]".into())
    );
}

#[test]
fn seen_list_is_bounded() {
    let state = ApiState::default();
    for i in 0..(MAX_SEEN as u64 + 5) {
        state.record(i % 41, 1);
    }
    let data = state.lock();
    assert_eq!(data.seen.len(), MAX_SEEN);
    assert_eq!(data.seen[0], 5, "the five oldest were forgotten");
}

#[test]
fn client_serves_the_page_for_routes_and_404_for_files() {
    for path in ["/", "/otherpage", "/some/deep/route", "/index.html"] {
        let req = Request::builder().uri(path).body(()).expect("test request");
        let response = handle_client(&req);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
    let req = Request::builder()
        .uri("/favicon.ico")
        .body(())
        .expect("test request");
    assert_eq!(handle_client(&req).status(), StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .body(())
        .expect("test request");
    assert_eq!(handle_client(&req).status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn page_has_the_elements_the_browser_test_uses_and_no_external_resources() {
    for id in [
        "index-input",
        "submit",
        "seen-indexes",
        "calculated-values",
        "error",
    ] {
        assert!(
            CLIENT_PAGE.contains(&format!("id=\"{id}\"")),
            "missing #{id}"
        );
    }
    assert!(CLIENT_PAGE.contains("examples/multi/"));
    assert!(!CLIENT_PAGE.contains("http://") && !CLIENT_PAGE.contains("https://"));
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
) -> (StatusCode, Option<String>, String) {
    let response = client
        .get(url.parse().expect("url"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn servers_answer_over_real_sockets() {
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let client_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind client");
    let api_addr = api_listener.local_addr().expect("api addr");
    let client_addr = client_listener.local_addr().expect("client addr");
    let api = tokio::spawn(run_api(api_listener));
    let web = tokio::spawn(run_client(client_listener));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let post = Request::post(format!("http://{api_addr}/values"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(br#"{"index":"7"}"#)))
        .expect("request");
    let response = client.request(post).await.expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");

    let (status, content_type, body) =
        get(&client, format!("http://{api_addr}/values/current")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(body, r#"{"7":"21"}"#);

    let (status, content_type, body) =
        get(&client, format!("http://{client_addr}/otherpage")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert!(body.contains("Enter your index:"));

    // HTTP/2 with prior knowledge reaches the same service.
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let response = h2
        .get(format!("http://{api_addr}/").parse().expect("url"))
        .await
        .expect("h2 response");
    assert_eq!(response.status(), StatusCode::OK);

    api.abort();
    web.abort();
}

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: client-cluster-ip-service}
spec:
  ports: [{port: 3000, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: server-cluster-ip-service, namespace: shop}
spec:
  ports: [{name: http, port: 5000, protocol: TCP}, {name: admin, port: 5001}]
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: client-cluster-ip-service-local
  labels: {kubernetes.io/service-name: client-cluster-ip-service}
addressType: IPv4
ports: [{port: 3000}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-local
  labels: {kubernetes.io/service-name: other}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: server-cluster-ip-service, namespace: shop}
subsets: [{addresses: [{ip: 10.0.0.4}], ports: [{name: http, port: 5000}]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: portcullis
  defaultBackend: {service: {name: client-cluster-ip-service, port: {number: 3000}}}
---
apiVersion: v1
kind: Secret
metadata: {name: tls}
type: kubernetes.io/tls
stringData: {tls.crt: certificate, tls.key: key}
";

fn snapshot_of(text: &str) -> Snapshot {
    Snapshot::from_objects(
        model::parse_manifests(text, "test")
            .into_iter()
            .map(|parsed| match parsed.expect("parses") {
                model::Parsed::Object(o) | model::Parsed::Converted { object: o, .. } => o,
                model::Parsed::Skipped { kind, .. } => panic!("skipped {kind}"),
            }),
    )
}

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, name)
}

const BUILT_INS: BuiltIns = BuiltIns {
    client: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 41000),
    api: SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 42000),
};

#[test]
fn built_in_services_get_one_slice_at_the_bound_address() {
    let before = snapshot_of(SERVICES);
    let after = with_built_in_endpoints(&before, &BUILT_INS);

    let slices: Vec<&ObjectKey> = after.endpoint_slices.keys().collect();
    assert_eq!(
        slices,
        [
            &key("default", "client-cluster-ip-service-demo"),
            &key("default", "other-local"),
            &key("shop", "server-cluster-ip-service-demo"),
        ]
    );
    let client = &after.endpoint_slices[&key("default", "client-cluster-ip-service-demo")];
    assert_eq!(client.service.as_deref(), Some(CLIENT_SERVICE));
    assert_eq!(client.address_type, "IPv4");
    let endpoints = client.endpoints.as_deref().unwrap_or_default();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].addresses, ["127.0.0.1"]);
    assert_eq!(
        endpoints[0].conditions.as_ref().and_then(|c| c.ready),
        Some(true)
    );
    let ports: Vec<(Option<&str>, Option<i32>)> = client
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port))
        .collect();
    assert_eq!(ports, [(None, Some(41000))]);

    let api = &after.endpoint_slices[&key("shop", "server-cluster-ip-service-demo")];
    assert_eq!(api.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(api.address_type, "IPv6");
    assert_eq!(
        api.endpoints.as_deref().unwrap_or_default()[0].addresses,
        ["::1"]
    );
    let ports: Vec<(Option<&str>, Option<i32>, Option<&str>)> = api
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref()))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("http"), Some(42000), Some("TCP")),
            (Some("admin"), Some(42000), None)
        ]
    );
    assert!(
        after.endpoints.is_empty(),
        "the manifests' Endpoints for a built-in Service are replaced too"
    );

    // Everything else is as it was.
    assert_eq!(
        after.endpoint_slices[&key("default", "other-local")],
        before.endpoint_slices[&key("default", "other-local")]
    );
    assert_eq!(after.services, before.services);
    assert_eq!(after.ingresses, before.ingresses);
}

#[test]
fn built_in_services_without_slices_get_one() {
    let before = snapshot_of(
        "apiVersion: v1\nkind: Service\nmetadata: {name: client-cluster-ip-service}\n\
             spec: {ports: [{port: 3000}]}\n",
    );
    let after = with_built_in_endpoints(&before, &BUILT_INS);
    assert_eq!(
        after.endpoint_slices.keys().collect::<Vec<_>>(),
        [&key("default", "client-cluster-ip-service-demo")]
    );
    let without_services = with_built_in_endpoints(&Snapshot::default(), &BUILT_INS);
    assert!(without_services.is_empty());
}

#[test]
fn the_written_manifest_reads_back_as_the_same_objects() {
    let view = with_built_in_endpoints(&snapshot_of(SERVICES), &BUILT_INS);
    let text = manifest_of(&view).expect("serializes");
    let text = std::str::from_utf8(&text).expect("utf-8");
    assert!(view == snapshot_of(text), "{text}");
}
