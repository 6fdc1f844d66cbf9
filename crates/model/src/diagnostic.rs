//! Diagnostics: what translation tells the user about the objects it read.

use std::fmt;

use serde::Serialize;

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

/// One finding about one object, naming the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// The object's kind (`Ingress`, `Service`, …).
    pub kind: String,
    /// `namespace/name` of the object.
    pub object: String,
    /// The field path, e.g. `spec.rules[0].http.paths[1].backend.service.port`, if one applies.
    pub field: Option<String>,
    /// What is wrong and, where possible, what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about a field of an object.
    pub fn new(
        severity: Severity,
        kind: impl Into<String>,
        object: impl fmt::Display,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            kind: kind.into(),
            object: object.to_string(),
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}",
            self.severity.as_str(),
            self.kind,
            self.object
        )?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
