//! Manifest text → objects: multi-document YAML, JSON, `List` kinds, and older Ingress API versions.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::snapshot::{Kind, Object};

/// Why a manifest document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not valid YAML/JSON.
    #[error("{origin}: document {document}: {message}")]
    Syntax {
        /// Where the text came from (a file path, or `<stdin>`).
        origin: String,
        /// 1-based index of the document within the file.
        document: usize,
        /// What the parser said, with line and column where known.
        message: String,
    },
    /// A document of a kind we read does not have the shape of that kind.
    #[error("{origin}: {kind} {name}: field `{field}`: {message}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// The object kind.
        kind: String,
        /// `namespace/name` as far as it could be read.
        name: String,
        /// Path of the offending field, e.g. `spec.rules[0].http.paths[0].backend`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ManifestError {
    /// The error without the origin prefix, for reports that already name the file.
    pub fn detail(&self) -> String {
        match self {
            ManifestError::Syntax {
                document, message, ..
            } => format!("document {document}: {message}"),
            ManifestError::Invalid {
                kind,
                name,
                field,
                message,
                ..
            } => format!("{kind} {name}: field `{field}`: {message}"),
        }
    }
}

/// One document read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An object of a kind Portcullis uses.
    Object(Object),
    /// A document of another kind (Deployment, ConfigMap, …), skipped.
    Skipped {
        /// `apiVersion/kind` of the document.
        kind: String,
        /// `metadata.name`, if present.
        name: String,
    },
    /// An object converted from an older API version (e.g. `extensions/v1beta1` Ingress).
    Converted {
        /// The converted object.
        object: Object,
        /// The API version it was written in.
        from: String,
    },
}

/// Parses manifest text (YAML with any number of `---` documents, or JSON) into objects.
///
/// Each document is handled on its own: one bad document yields an error entry and the others still
/// parse. `origin` names the text in errors.
pub fn parse_manifests(text: &str, origin: &str) -> Vec<Result<Parsed, ManifestError>> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => push_value(value, origin, &mut out),
            Err(e) => out.push(Err(ManifestError::Syntax {
                origin: origin.to_string(),
                document: 1,
                message: e.to_string(),
            })),
        }
        return out;
    }
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(document) {
            Ok(value) => push_value(value, origin, &mut out),
            Err(e) => {
                out.push(Err(ManifestError::Syntax {
                    origin: origin.to_string(),
                    document: index + 1,
                    message: e.to_string(),
                }));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        }
    }
    out
}

fn push_value(value: Value, origin: &str, out: &mut Vec<Result<Parsed, ManifestError>>) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                push_value(item, origin, out);
            }
        }
        Value::Object(mut map) => {
            let kind = str_field(&map, "kind");
            if kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
                if let Some(Value::Array(items)) = map.remove("items") {
                    for item in items {
                        push_value(item, origin, out);
                    }
                }
                return;
            }
            out.push(parse_object(map, origin));
        }
        other => out.push(Err(ManifestError::Syntax {
            origin: origin.to_string(),
            document: out.len() + 1,
            message: format!("expected a mapping with apiVersion and kind, found {other}"),
        })),
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn display_name(map: &Map<String, Value>) -> String {
    let meta = map.get("metadata").and_then(Value::as_object);
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (ns, name) = (field("namespace"), field("name"));
    match (ns.is_empty(), name.is_empty()) {
        (_, true) => "<unnamed>".to_string(),
        (true, false) => name,
        (false, false) => format!("{ns}/{name}"),
    }
}

fn parse_object(mut map: Map<String, Value>, origin: &str) -> Result<Parsed, ManifestError> {
    let api_version = str_field(&map, "apiVersion");
    let kind = str_field(&map, "kind");
    let name = display_name(&map);
    let invalid = |field: &str, message: String| ManifestError::Invalid {
        origin: origin.to_string(),
        kind: if kind.is_empty() {
            "<no kind>".to_string()
        } else {
            kind.clone()
        },
        name: name.clone(),
        field: field.to_string(),
        message,
    };
    if kind.is_empty() {
        return Err(invalid(
            "kind",
            "missing; every document needs apiVersion and kind".into(),
        ));
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let target = match (group, kind.as_str()) {
        ("networking.k8s.io" | "extensions", "Ingress") => Kind::Ingress,
        ("networking.k8s.io", "IngressClass") => Kind::IngressClass,
        ("", "Service") => Kind::Service,
        ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
        ("", "Endpoints") => Kind::Endpoints,
        ("", "Secret") => Kind::Secret,
        ("", "ConfigMap") => Kind::ConfigMap,
        _ => {
            return Ok(Parsed::Skipped {
                kind: if api_version.is_empty() {
                    kind
                } else {
                    format!("{api_version}/{kind}")
                },
                name,
            })
        }
    };
    match map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
    {
        Some(n) if !n.is_empty() => {}
        _ => return Err(invalid("metadata.name", "missing or empty".into())),
    }
    let converted_from = if target == Kind::Ingress && api_version != "networking.k8s.io/v1" {
        if !matches!(
            api_version.as_str(),
            "extensions/v1beta1" | "networking.k8s.io/v1beta1"
        ) {
            return Err(invalid(
                "apiVersion",
                format!("unsupported Ingress version {api_version:?}"),
            ));
        }
        convert_ingress_v1beta1(&mut map);
        Some(api_version.clone())
    } else {
        None
    };
    if target == Kind::Secret {
        fold_string_data(&mut map);
    }
    // Bookkeeping of the API server (often the largest part of an exported object); nothing reads it.
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        meta.remove("managedFields");
    }
    let value = Value::Object(map);
    let object = match target {
        Kind::Ingress => typed(value).map(Object::Ingress),
        Kind::IngressClass => typed(value).map(Object::IngressClass),
        Kind::Service => typed::<k8s_openapi::api::core::v1::Service>(value)
            .map(|service| Object::Service(service.into())),
        Kind::EndpointSlice => typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(value)
            .map(|slice| Object::EndpointSlice(slice.into())),
        Kind::Endpoints => typed(value).map(Object::Endpoints),
        Kind::Secret => typed(value).map(Object::Secret),
        Kind::ConfigMap => typed(value).map(Object::ConfigMap),
    }
    .map_err(|(field, message)| invalid(&field, message))?;
    Ok(match converted_from {
        Some(from) => Parsed::Converted { object, from },
        None => Parsed::Object(object),
    })
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        (field, e.into_inner().to_string())
    })
}

/// The API server merges `stringData` into `data` (base64) on write; a folder has no API server.
fn fold_string_data(map: &mut Map<String, Value>) {
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            if let Value::String(s) = value {
                data.insert(key, Value::String(base64_encode(s.as_bytes())));
            }
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
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
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Rewrites an `extensions/v1beta1` or `networking.k8s.io/v1beta1` Ingress into the v1 shape, the way
/// the API server's conversion does: `backend` → `defaultBackend`, `serviceName`/`servicePort` →
/// `service.name`/`service.port`, and a missing `pathType` → `ImplementationSpecific`.
fn convert_ingress_v1beta1(map: &mut Map<String, Value>) {
    map.insert(
        "apiVersion".into(),
        Value::String("networking.k8s.io/v1".into()),
    );
    let Some(Value::Object(spec)) = map.get_mut("spec") else {
        return;
    };
    if let Some(backend) = spec.remove("backend") {
        spec.insert("defaultBackend".into(), convert_backend(backend));
    }
    if let Some(Value::Array(rules)) = spec.get_mut("rules") {
        for rule in rules {
            let paths = rule
                .get_mut("http")
                .and_then(|h| h.get_mut("paths"))
                .and_then(Value::as_array_mut);
            for path in paths.into_iter().flatten() {
                let Value::Object(path) = path else { continue };
                if let Some(backend) = path.remove("backend") {
                    path.insert("backend".into(), convert_backend(backend));
                }
                path.entry("pathType")
                    .or_insert_with(|| Value::String("ImplementationSpecific".into()));
            }
        }
    }
}

fn convert_backend(backend: Value) -> Value {
    let Value::Object(mut b) = backend else {
        return backend;
    };
    let name = b.remove("serviceName");
    let port = b.remove("servicePort");
    if let Some(name) = name {
        let port = match port {
            Some(Value::Number(n)) => serde_json::json!({ "number": n }),
            Some(Value::String(s)) => match s.parse::<i32>() {
                Ok(n) => serde_json::json!({ "number": n }),
                Err(_) => serde_json::json!({ "name": s }),
            },
            _ => Value::Object(Map::new()),
        };
        b.insert(
            "service".into(),
            serde_json::json!({ "name": name, "port": port }),
        );
    }
    Value::Object(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(text: &str) -> Vec<Result<Parsed, ManifestError>> {
        parse_manifests(text, "test.yaml")
    }

    #[test]
    fn multi_document_yaml_with_skipped_kinds() {
        let text = "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n";
        let out = objects(text);
        assert_eq!(out.len(), 2);
        match &out[0] {
            Ok(Parsed::Object(Object::Service(s))) => {
                assert_eq!(s.metadata.name.as_deref(), Some("a"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            out[1],
            Ok(Parsed::Skipped {
                kind: "apps/v1/Deployment".into(),
                name: "d".into()
            })
        );
    }

    #[test]
    fn list_kind_is_flattened() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"stringData":{"k":"hello"}}]}"#;
        let out = objects(text);
        assert_eq!(out.len(), 1);
        let Ok(Parsed::Object(Object::Secret(secret))) = &out[0] else {
            panic!("{out:?}")
        };
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data["k"].0, b"hello");
    }

    #[test]
    fn v1beta1_ingress_is_converted() {
        let text = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  backend: {serviceName: d, servicePort: http}\n  rules:\n  - http:\n      paths:\n      - path: /api/\n        backend: {serviceName: s, servicePort: 5000}\n";
        let out = objects(text);
        let Ok(Parsed::Converted {
            object: Object::Ingress(ing),
            from,
        }) = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!(from, "extensions/v1beta1");
        let spec = ing.spec.as_ref().expect("spec");
        let default = spec
            .default_backend
            .as_ref()
            .and_then(|b| b.service.as_ref());
        assert_eq!(
            default
                .and_then(|s| s.port.as_ref())
                .and_then(|p| p.name.as_deref()),
            Some("http")
        );
        let path = &spec.rules.as_ref().expect("rules")[0]
            .http
            .as_ref()
            .expect("http")
            .paths[0];
        assert_eq!(path.path_type, "ImplementationSpecific");
        let svc = path.backend.service.as_ref().expect("service");
        assert_eq!(svc.name, "s");
        assert_eq!(svc.port.as_ref().and_then(|p| p.number), Some(5000));
    }

    #[test]
    fn invalid_field_is_named() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: n}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {service: {name: 5, port: {number: x}}}\n";
        let out = objects(text);
        let Err(ManifestError::Invalid { field, name, .. }) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(name, "n/i");
        assert!(
            field.starts_with("spec.rules[0].http.paths[0].backend.service"),
            "{field}"
        );
    }

    #[test]
    fn syntax_error_is_reported_not_panicked() {
        let out = objects("kind: [unclosed\n");
        assert!(
            matches!(out[0], Err(ManifestError::Syntax { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn missing_name_is_an_error() {
        let out = objects("apiVersion: v1\nkind: Service\nmetadata: {}\n");
        assert!(
            matches!(&out[0], Err(ManifestError::Invalid { field, .. }) if field == "metadata.name"),
            "{out:?}"
        );
    }
}
