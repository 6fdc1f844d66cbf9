//! Builders for the objects tests put on the server, as JSON.

use std::net::SocketAddr;

use serde_json::{json, Value};

/// An IngressClass.
pub fn ingress_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": { "name": name },
        "spec": { "controller": controller },
    })
}

/// An Ingress of `class` routing `host` (`None`: any) and prefix `path` to `service:port`.
pub fn ingress(
    namespace: &str,
    name: &str,
    class: &str,
    host: Option<&str>,
    path: &str,
    service: &str,
    port: u16,
) -> Value {
    let mut rule = json!({
        "http": { "paths": [{
            "path": path,
            "pathType": "Prefix",
            "backend": { "service": { "name": service, "port": { "number": port } } },
        }] },
    });
    if let Some(host) = host {
        rule["host"] = json!(host);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "ingressClassName": class, "rules": [rule] },
    })
}

/// A ClusterIP Service with one TCP port.
pub fn service(namespace: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "type": "ClusterIP",
            "selector": { "app": name },
            "ports": [{ "port": port, "targetPort": port, "protocol": "TCP" }],
        },
    })
}

/// An EndpointSlice of `service` with ready endpoints at `addrs` (which must share one port).
pub fn endpoint_slice(namespace: &str, name: &str, service: &str, addrs: &[SocketAddr]) -> Value {
    let port = addrs.first().map_or(80, SocketAddr::port);
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|a| json!({ "addresses": [a.ip().to_string()], "conditions": { "ready": true } }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "port": port, "protocol": "TCP" }],
    })
}

/// A Secret of `type` with `data` (values already base64).
pub fn secret(namespace: &str, name: &str, kind: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": namespace },
        "type": kind,
        "data": data,
    })
}

/// A ConfigMap with `data`.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": namespace },
        "data": data,
    })
}

/// Base64 (standard alphabet, padded), for Secret data.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
    }
}
