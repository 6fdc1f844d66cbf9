//! The admin page: one static, self-contained HTML file (inline CSS and script, nothing fetched
//! from elsewhere) that draws `/status.json` and fetches it again every few seconds.
//!
//! The page holds no data of its own, and its script sets what it shows only as text. On top of
//! that its Content-Security-Policy allows exactly its own inline style and script (by hash) and
//! requests to its own origin, so markup from a manifest could not run even if it reached the page.

use std::sync::OnceLock;

/// The page.
pub const HTML: &str = include_str!("page.html");

/// The text between the first `<{tag}>` and the following `</{tag}>`.
fn inline(tag: &str) -> &'static str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    HTML.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(body, _)| body)
}

/// `'sha256-…'`: how a Content-Security-Policy names one inline element.
fn source_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("'sha256-{}'", base64(digest.as_ref()))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page's Content-Security-Policy.
pub fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            source_hash(inline("script")),
            source_hash(inline("style")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn the_policy_names_the_inline_script_and_style() {
        assert!(inline("script").contains("function refresh"));
        assert!(inline("style").contains("body {"));
        let policy = content_security_policy();
        assert!(
            policy.starts_with("default-src 'none'; script-src 'sha256-"),
            "{policy}"
        );
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in [
            "http://",
            "https://",
            "<link",
            " src=",
            "@import",
            "url(",
            "innerHTML",
            "eval(",
        ] {
            assert!(!HTML.contains(needle), "the page contains {needle:?}");
        }
        assert_eq!(HTML.matches("<script>").count(), 1, "one inline script");
        assert_eq!(HTML.matches("<style>").count(), 1, "one inline style");
    }
}
