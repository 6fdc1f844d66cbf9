//! The path a request is routed by: dot segments resolved, so that `/app/../admin` is routed
//! (and forwarded) as `/admin`, never as a path under `/app`.
//!
//! Percent-encoded dots (`%2e`) are dots (RFC 3986 §6.2.2.2: `.` is unreserved, so `%2E` and
//! `.` are the same character) and take part in dot segments. Encoded slashes (`%2F`) and
//! backslashes (`%5C`) are not separators here, as they are not for most servers; but a path in
//! which they would form a dot segment if a server did decode them (`/app/..%2fadmin`) has two
//! meanings, and is refused rather than routed by either. Empty segments (`//`) are kept: the
//! Ingress specification matches them as they are.

use std::borrow::Cow;

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// An encoded slash or backslash next to a dot segment: the path means one thing to a
    /// server that decodes it and another to one that does not.
    AmbiguousSlash,
}

impl PathError {
    /// The reason, for the response and the log.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path does not start with /",
            PathError::AmbiguousSlash => {
                "the request path has an encoded slash next to a dot segment"
            }
        }
    }
}

/// The path `path` is routed by: borrowed unchanged when it has no dot segment and no
/// percent-encoded dot or separator (nearly every request), otherwise resolved.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_dots(path);
    if ambiguous(&decoded) {
        return Err(PathError::AmbiguousSlash);
    }
    let resolved = remove_dot_segments(&decoded);
    // Escapes are only undone where they formed a dot segment.
    Ok(if resolved == decoded {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(resolved)
    })
}

/// Whether `path` has a dot segment or a percent escape that could be part of one.
fn needs_work(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                if let Some(&[a, b]) = path.get(i + 1..i + 3) {
                    if matches!((a, b | 0x20), (b'2', b'e' | b'f') | (b'5', b'c')) {
                        return true;
                    }
                }
            }
            // A segment that starts with a dot: `.`, `..` or anything longer, checked properly
            // on the slow path.
            b'.' if i > 0 && path[i - 1] == b'/' => {
                let rest = &path[i + 1..];
                if rest.is_empty() || rest[0] == b'/' || rest[0] == b'.' {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// `path` with `%2E`/`%2e` decoded to `.`.
fn decode_dots(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if escape.len() >= 3 && escape[1..3].eq_ignore_ascii_case("2e") {
            out.push('.');
            rest = &escape[3..];
        } else {
            out.push('%');
            rest = &escape[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether a segment, split also at encoded slashes and backslashes, would be `.` or `..`.
fn ambiguous(path: &str) -> bool {
    let has_escaped_separator = path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && escaped_separator(w[1], w[2]));
    if !has_escaped_separator {
        return false;
    }
    path.split('/').any(|segment| {
        let parts = split_escaped_separators(segment);
        parts.len() > 1 && parts.iter().any(|p| *p == "." || *p == "..")
    })
}

/// Whether `%` followed by `a` and `b` encodes a slash or a backslash.
fn escaped_separator(a: u8, b: u8) -> bool {
    matches!((a, b | 0x20), (b'2', b'f') | (b'5', b'c'))
}

/// `segment` split at `%2F`, `%2f`, `%5C` and `%5c`.
fn split_escaped_separators(segment: &str) -> Vec<&str> {
    let bytes = segment.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i] == b'%' && escaped_separator(bytes[i + 1], bytes[i + 2]) {
            parts.push(&segment[start..i]);
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&segment[start..]);
    parts
}

/// RFC 3986 §5.2.4 over an absolute path, keeping empty segments: `.` segments are dropped,
/// `..` drops the segment before it (never going above the root), and a path ending in a dot
/// segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut resolved = String::with_capacity(path.len());
    for segment in &out {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if resolved.is_empty() {
        resolved.push('/');
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/app",
            "/app/",
            "/index.html",
            "/a/.well-known/x",
            "/v1.2/x",
            "//double//slash",
            "/files/a%20b",
            "/files/a%2Fb",
            "/a..b/c",
        ] {
            let got = normalize_path(path).unwrap();
            assert!(matches!(got, Cow::Borrowed(_)), "{path}");
            assert_eq!(got, path);
        }
    }

    #[test]
    fn dot_segments_are_resolved() {
        let cases = [
            ("/app/../admin", "/admin"),
            ("/app/./x", "/app/x"),
            ("/app/..", "/"),
            ("/app/.", "/app/"),
            ("/app/x/..", "/app/"),
            ("/../admin", "/admin"),
            ("/app/%2e%2e/admin", "/admin"),
            ("/app/%2E%2e/admin", "/admin"),
            ("/app/.%2e/admin", "/admin"),
            ("/app/%2e/x", "/app/x"),
            ("/a//../b", "/a/b"),
            ("/a/b/../../c", "/c"),
            ("/a/%2ex", "/a/%2ex"),
            ("/file%2ehtml", "/file%2ehtml"),
        ];
        for (path, want) in cases {
            assert_eq!(normalize_path(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn encoded_slashes_next_to_dot_segments_are_refused() {
        for path in [
            "/app/..%2fadmin",
            "/app/..%2Fadmin",
            "/app/%2e%2e%2fadmin",
            "/app/..%5cadmin",
            "/app/x%2f..",
            "/app/.%2fx",
        ] {
            assert_eq!(
                normalize_path(path),
                Err(PathError::AmbiguousSlash),
                "{path}"
            );
        }
        // An encoded slash elsewhere is just a character of its segment.
        assert_eq!(normalize_path("/a%2Fb/../c").unwrap(), "/c");
        assert_eq!(normalize_path("/a/..x%2fy").unwrap(), "/a/..x%2fy");
    }

    #[test]
    fn a_path_must_be_absolute() {
        assert_eq!(normalize_path("app"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
    }
}
