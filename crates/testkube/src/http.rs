//! The HTTP side: requests in, API answers out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::resources::{parse_path, Target};
use crate::store::{Failure, Filter, Store};
use crate::Shared;

/// A whole JSON answer, or the lines of a watch as they happen.
pub enum Answer {
    /// A complete body.
    Whole(Option<Bytes>),
    /// A watch: ends when the server drops the sending side.
    Lines(mpsc::UnboundedReceiver<Bytes>),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Answer::Whole(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            Answer::Lines(rx) => rx
                .poll_recv(cx)
                .map(|line| line.map(|l| Ok(Frame::data(l)))),
        }
    }
}

/// Accepts connections until aborted; each connection's task is recorded so it can be ended.
pub async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, req).await) }
        });
        let task = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut list = connections.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|c| !c.is_finished());
        list.push(task.abort_handle());
    }
}

fn json_response(code: u16, value: &Value) -> Response<Answer> {
    let mut response = Response::new(Answer::Whole(Some(Bytes::from(value.to_string()))));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(f: &Failure) -> Response<Answer> {
    json_response(f.code, &f.status())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn verb(method: &Method, target: &Target, query: &HashMap<String, String>) -> Option<&'static str> {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    Some(match (method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        _ => return None,
    })
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Answer> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(target) = parse_path(req.uri().path()) else {
        return failure(&Failure::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let query = query(req.uri());
    let Some(verb) = verb(req.method(), &target, &query) else {
        return failure(&Failure::new(405, "MethodNotAllowed", "method not allowed"));
    };
    let record = |code: u16| crate::Request {
        verb,
        group: target.resource.group,
        resource: match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.resource.plural),
            None => target.resource.plural.to_string(),
        },
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        token: token.clone(),
        code,
    };
    if shared.is_rejected(token.as_deref()) {
        shared.store().requests.push(record(401));
        shared.changed();
        return failure(&Failure::new(401, "Unauthorized", "Unauthorized"));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return failure(&Failure::new(400, "BadRequest", "unreadable body")),
    };
    // The request is recorded under the same lock as what it changed: a test that sees the
    // change also sees the request.
    let mut store = shared.store();
    let response = answer(
        &mut store,
        verb,
        &target,
        &query,
        &content_type,
        &body,
        token.clone(),
    );
    let code = match &response {
        Ok(r) => r.status().as_u16(),
        Err(f) => f.code,
    };
    store.requests.push(record(code));
    drop(store);
    shared.changed();
    response.unwrap_or_else(|f| failure(&f))
}

fn answer(
    store: &mut Store,
    verb: &'static str,
    target: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
    token: Option<String>,
) -> Result<Response<Answer>, Failure> {
    let resource = target.resource;
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = (
        if resource.namespaced {
            namespace.clone()
        } else {
            String::new()
        },
        target.name.clone().unwrap_or_default(),
    );
    let status_only = match target.subresource.as_deref() {
        None => false,
        Some("status") if resource.has_status => true,
        Some(other) => {
            return Err(Failure::new(
                404,
                "NotFound",
                format!("no subresource {other}"),
            ))
        }
    };
    let parse = || -> Result<Value, Failure> {
        serde_json::from_slice(body)
            .map_err(|e| Failure::new(400, "BadRequest", format!("invalid JSON: {e}")))
    };
    match verb {
        "get" => store
            .get(resource, &key)
            .map(|o| json_response(200, o))
            .ok_or_else(|| {
                Failure::new(
                    404,
                    "NotFound",
                    format!("{} {:?} not found", resource.plural, key.1),
                )
            }),
        "list" => list(store, target, query),
        "watch" => watch(store, target, query, token),
        "create" => {
            let mut object = parse()?;
            if resource.namespaced {
                object["metadata"]["namespace"] = json!(namespace);
            }
            object["apiVersion"] = json!(resource.api_version());
            object["kind"] = json!(resource.kind);
            let created = store.create(resource, object)?;
            Ok(json_response(201, &created))
        }
        "update" => {
            let object = parse()?;
            let updated = store.update(resource, &key, object, status_only)?;
            Ok(json_response(200, &updated))
        }
        "patch" => {
            if !content_type.starts_with("application/merge-patch+json")
                && !content_type.starts_with("application/strategic-merge-patch+json")
            {
                return Err(Failure::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the test API server only takes merge patches, not {content_type:?}"),
                ));
            }
            let patched = store.patch(resource, &key, &parse()?, status_only)?;
            Ok(json_response(200, &patched))
        }
        "delete" => {
            let deleted = store.delete(resource, &key)?;
            Ok(json_response(200, &deleted))
        }
        _ => Err(Failure::new(405, "MethodNotAllowed", "method not allowed")),
    }
}

/// `GET` of a collection: one page of a list (all of it without `limit`).
fn list(
    store: &mut Store,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Response<Answer>, Failure> {
    let resource = target.resource;
    let filter = Filter::new(
        resource,
        target.namespace.clone(),
        query.get("fieldSelector").map(String::as_str),
    )?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0);
    let token = query
        .get("continue")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let (rv, items, next) = store.list(&filter, limit, token)?;
    // Like the real server, list items carry no apiVersion and kind of their own.
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(map) = item.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// `GET ?watch=true`: a stream of JSON lines from the version asked for.
fn watch(
    store: &mut Store,
    target: &Target,
    query: &HashMap<String, String>,
    token: Option<String>,
) -> Result<Response<Answer>, Failure> {
    let filter = Filter::new(
        target.resource,
        target.namespace.clone(),
        query.get("fieldSelector").map(String::as_str),
    )?;
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse().map_err(|_| {
            Failure::new(400, "BadRequest", format!("invalid resourceVersion {rv:?}"))
        })?),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let lines = store.watch(filter, from, bookmarks, token);
    let mut response = Response::new(Answer::Lines(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let uri: http::Uri = "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls&watch=true"
            .parse()
            .expect("uri");
        let q = query(&uri);
        assert_eq!(q["fieldSelector"], "type=kubernetes.io/tls");
        assert_eq!(q["watch"], "true");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
