//! Diagnostics: what translation tells the user about the objects it read.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::snapshot::{Kind, ObjectKey};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something in the input was not served as written.
    Error,
    /// Served, but probably not as intended (e.g. no ready endpoints, a shadowed path).
    Warning,
    /// For information (skipped kinds, Ingresses of other classes).
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What a diagnostic is about: a Kubernetes object (so it can become an Event on it) or a
/// manifest file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An object of a kind Portcullis reads.
    Object {
        /// Its kind.
        kind: Kind,
        /// Its namespace and name.
        key: ObjectKey,
    },
    /// A manifest file, by path.
    File(String),
}

/// One finding about one object, naming the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// The object or file it is about.
    pub subject: Subject,
    /// The field path, e.g. `spec.rules[0].http.paths[1].backend.service.port`, if one applies.
    pub field: Option<String>,
    /// What is wrong and, where possible, what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about a field of an object.
    pub fn new(
        severity: Severity,
        kind: Kind,
        key: &ObjectKey,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            subject: Subject::Object {
                kind,
                key: key.clone(),
            },
            field,
            message: message.into(),
        }
    }

    /// A diagnostic about a manifest file as a whole.
    pub fn file(severity: Severity, path: impl fmt::Display, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            subject: Subject::File(path.to_string()),
            field: None,
            message: message.into(),
        }
    }

    /// The subject's kind as users read it (`Ingress`, `Secret`, …, or `File`).
    pub fn kind(&self) -> &'static str {
        match &self.subject {
            Subject::Object { kind, .. } => kind.as_str(),
            Subject::File(_) => "File",
        }
    }

    /// `namespace/name` of the object, or the file's path.
    pub fn object(&self) -> String {
        match &self.subject {
            Subject::Object { key, .. } => key.to_string(),
            Subject::File(path) => path.clone(),
        }
    }
}

impl Serialize for Diagnostic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Diagnostic", 5)?;
        s.serialize_field("severity", &self.severity)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("object", &self.object())?;
        s.serialize_field("field", &self.field)?;
        s.serialize_field("message", &self.message)?;
        s.end()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ", self.severity.as_str(), self.kind())?;
        match &self.subject {
            Subject::Object { key, .. } => write!(f, "{key}")?,
            Subject::File(path) => f.write_str(path)?,
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
