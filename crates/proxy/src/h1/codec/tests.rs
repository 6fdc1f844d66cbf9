use super::*;
use proptest::prelude::*;

fn req(text: &str) -> Result<Option<RequestHead>, HeadError> {
    parse_request(text.as_bytes())
}

fn ok(text: &str) -> RequestHead {
    match req(text) {
        Ok(Some(head)) => head,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn invalid(text: &str) -> &'static str {
    match req(text) {
        Err(HeadError::Invalid(why)) => why,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn res(text: &str, head_request: bool) -> ResponseHead {
    match parse_response(text.as_bytes(), head_request) {
        Ok(Some(head)) => head,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn res_invalid(text: &str) -> &'static str {
    match parse_response(text.as_bytes(), false) {
        Err(HeadError::Invalid(why)) => why,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn at(text: &str, range: &Range<usize>) -> String {
    text[range.clone()].to_owned()
}

fn kinds(text: &str, fields: &[Field]) -> Vec<(String, Kind)> {
    fields.iter().map(|f| (at(text, &f.name), f.kind)).collect()
}

// ---- request line ----

#[test]
fn simple_get() {
    let text = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nrest";
    let head = ok(text);
    assert_eq!(head.len, text.len() - 4);
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.minor_version, 1);
    assert_eq!(at(text, &head.target), "/a/b?c=d");
    assert_eq!(at(text, &head.path_and_query), "/a/b?c=d");
    assert_eq!(at(text, &head.path), "/a/b");
    assert_eq!(at(text, head.host.as_ref().unwrap()), "example.com");
    assert_eq!(head.framing, Framing::None);
    assert!(head.keep_alive);
    assert!(!head.upgrade);
    assert!(!head.expect_continue);
    assert_eq!(head.fields.len(), 2);
    assert_eq!(at(text, &head.fields[1].name), "Accept");
    assert_eq!(at(text, &head.fields[1].value), "*/*");
}

#[test]
fn incomplete_heads() {
    let text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for end in 0..text.len() {
        assert_eq!(req(&text[..end]), Ok(None), "prefix {end}");
    }
    assert!(ok(text).len == text.len());
}

#[test]
fn leading_empty_lines_keep_ranges_right() {
    let text = "\r\n\r\nPOST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    let head = ok(text);
    assert_eq!(head.len, text.len() - 3);
    assert_eq!(at(text, &head.target), "/x");
    assert_eq!(at(text, head.host.as_ref().unwrap()), "h");
    assert_eq!(at(text, &head.fields[1].value), "3");
    assert_eq!(head.framing, Framing::Length(3));
}

#[test]
fn values_are_trimmed() {
    let text = "GET / HTTP/1.1\r\nHost:  a.b \t\r\nX-A:\t v w \r\nX-Empty:   \r\n\r\n";
    let head = ok(text);
    assert_eq!(at(text, head.host.as_ref().unwrap()), "a.b");
    assert_eq!(at(text, &head.fields[1].value), "v w");
    assert_eq!(at(text, &head.fields[2].value), "");
}

#[test]
fn syntax_errors() {
    assert_eq!(invalid("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), "syntax");
    assert_eq!(
        invalid("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
        "syntax"
    );
    assert_eq!(invalid("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), "syntax");
    assert_eq!(invalid("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), "syntax");
    assert_eq!(invalid("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), "syntax");
    assert_eq!(
        invalid("GET / HTTP/1.1\r\nX: a\0b\r\nHost: a\r\n\r\n"),
        "syntax"
    );
    assert_eq!(invalid("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), "syntax");
}

#[test]
fn methods() {
    assert_eq!(
        ok("PURGE / HTTP/1.1\r\nHost: a\r\n\r\n").method.as_str(),
        "PURGE"
    );
    assert_eq!(
        ok("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n").method,
        Method::DELETE
    );
    assert_eq!(
        invalid("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
        "CONNECT is not supported"
    );
    assert_eq!(
        invalid("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        "CONNECT is not supported"
    );
}

#[test]
fn http10() {
    let text = "GET /x HTTP/1.0\r\n\r\n";
    let head = ok(text);
    assert_eq!(head.minor_version, 0);
    assert_eq!(head.host, None);
    assert!(!head.keep_alive);
    let text = "GET /x HTTP/1.0\r\nHost: h:80\r\nConnection: Keep-Alive\r\n\r\n";
    let head = ok(text);
    assert_eq!(at(text, head.host.as_ref().unwrap()), "h:80");
    assert!(head.keep_alive);
    assert_eq!(ok("GET /x HTTP/1.0\r\nHost:\r\n\r\n").host, None);
}

// ---- request-target forms ----

#[test]
fn absolute_form() {
    let text = "GET http://a.example:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
    let head = ok(text);
    assert_eq!(at(text, &head.target), "http://a.example:8080/x?y");
    assert_eq!(at(text, &head.path_and_query), "/x?y");
    assert_eq!(at(text, &head.path), "/x");
    assert_eq!(at(text, head.host.as_ref().unwrap()), "a.example:8080");

    let text = "GET HTTPS://b.example HTTP/1.1\r\nHost: b.example\r\n\r\n";
    let head = ok(text);
    assert!(head.path_and_query.is_empty());
    assert!(head.path.is_empty());
    assert_eq!(at(text, head.host.as_ref().unwrap()), "b.example");

    let text = "GET http://[::1]:80/ HTTP/1.0\r\n\r\n";
    let head = ok(text);
    assert_eq!(at(text, head.host.as_ref().unwrap()), "[::1]:80");
    assert_eq!(at(text, &head.path_and_query), "/");
}

#[test]
fn bad_targets() {
    for target in [
        "http:///x",
        "http://",
        "http://user@a.example/",
        "http://u:p@a/",
        "ftp://a/",
        "http:/a/",
        "a.example:80",
        "x",
        "*",
        "/a#frag",
        "http://a/#f",
        "http://a?q",
    ] {
        let text = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(invalid(&text), "request-target", "{target}");
    }
    assert_eq!(
        invalid("GET http://a\\b/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        "host"
    );
}

#[test]
fn asterisk_form() {
    let text = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = ok(text);
    assert_eq!(at(text, &head.target), "*");
    assert_eq!(at(text, &head.path_and_query), "*");
    assert_eq!(at(text, &head.path), "*");
    assert_eq!(
        invalid("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"),
        "request-target"
    );
    assert_eq!(
        ok("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n").method,
        Method::OPTIONS
    );
}

// ---- Host ----

#[test]
fn host_rules() {
    assert_eq!(invalid("GET / HTTP/1.1\r\n\r\n"), "host");
    assert_eq!(invalid("GET / HTTP/1.1\r\nHost:\r\n\r\n"), "host");
    assert_eq!(invalid("GET / HTTP/1.1\r\nHost:   \r\n\r\n"), "host");
    assert_eq!(
        invalid("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        "host"
    );
    assert_eq!(
        invalid("GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n"),
        "host"
    );
    assert_eq!(invalid("GET http://a/ HTTP/1.1\r\n\r\n"), "host");
    for bad in [
        "a b",
        "a/b",
        "u@a",
        "a\\b",
        "a\"b",
        "a\x01b",
        "é.example",
        "a<b",
    ] {
        let text = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert!(
            matches!(req(&text), Err(HeadError::Invalid(_))),
            "{bad:?} accepted"
        );
        if !bad.contains('\x01') {
            assert_eq!(invalid(&text), "host", "{bad:?}");
        }
    }
    for good in [
        "a.example",
        "a.example:8080",
        "[::1]:443",
        "x_y~z",
        "%41!$&'()*+,;=",
    ] {
        let text = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert_eq!(at(&text, ok(&text).host.as_ref().unwrap()), good);
    }
}

// ---- framing ----

#[test]
fn transfer_encoding_rules() {
    let chunked = |te: &str| {
        let text = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        req(&text)
    };
    for good in [
        "chunked",
        "Chunked",
        "CHUNKED",
        "chunked ",
        ", chunked",
        "chunked, ,",
    ] {
        assert_eq!(
            chunked(good).unwrap().unwrap().framing,
            Framing::Chunked,
            "{good}"
        );
    }
    for bad in [
        "chunked, chunked",
        "identity",
        "xchunked",
        "chunked;foo",
        "chunked gzip",
        "",
        ",",
        "chunked\x0b",
    ] {
        assert!(
            matches!(chunked(bad), Err(HeadError::Invalid(_))),
            "{bad:?} accepted"
        );
    }
    // Chunked last after a coding Portcullis does not implement: 501, not 400.
    for text in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let refused = req(text);
        assert_eq!(
            refused,
            Err(HeadError::Unsupported("transfer coding other than chunked"))
        );
        assert_eq!(refused.unwrap_err().status().as_u16(), 501);
    }
    assert_eq!(
        invalid("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
        "transfer-encoding"
    );
    assert_eq!(
        invalid("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "transfer-encoding"
    );
    assert_eq!(
        invalid("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "transfer-encoding"
    );
    let text =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n";
    assert_eq!(ok(text).framing, Framing::Chunked);
}

#[test]
fn content_length_rules() {
    let length = |cl: &str| {
        let text = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
        req(&text)
    };
    assert_eq!(length("0").unwrap().unwrap().framing, Framing::Length(0));
    assert_eq!(length("42").unwrap().unwrap().framing, Framing::Length(42));
    assert_eq!(length("007").unwrap().unwrap().framing, Framing::Length(7));
    assert_eq!(
        length("9999999999999999999").unwrap().unwrap().framing,
        Framing::Length(9_999_999_999_999_999_999)
    );
    for bad in [
        "",
        "-1",
        "+1",
        "+5",
        " 5x",
        "5, 5",
        "1,1",
        "1.0",
        "0x10",
        "1 2",
        "5, 6",
        "5,",
        ",5",
        "5,,5",
        "10000000000000000000",
        "18446744073709551616",
        "99999999999999999999999",
        "abc",
    ] {
        assert_eq!(
            length(bad),
            Err(HeadError::Invalid("content-length")),
            "{bad:?}"
        );
    }
    assert_eq!(
        invalid("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        "content-length"
    );
    // Equal values in two fields are refused like differing ones, as nginx does.
    assert_eq!(
        invalid("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
        "content-length"
    );
    let text = "POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(ok(text).framing, Framing::Length(5));
}

#[test]
fn content_length_with_transfer_encoding() {
    for text in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
    ] {
        assert_eq!(invalid(text), "content-length with transfer-encoding");
    }
    assert_eq!(
        invalid("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        "transfer-encoding"
    );
}

// ---- connection management ----

#[test]
fn keep_alive_derivation() {
    let keep = |version: &str, connection: Option<&str>| {
        let mut text = format!("GET / HTTP/1.{version}\r\nHost: a\r\n");
        if let Some(c) = connection {
            text.push_str(&format!("Connection: {c}\r\n"));
        }
        text.push_str("\r\n");
        ok(&text).keep_alive
    };
    assert!(keep("1", None));
    assert!(keep("1", Some("keep-alive")));
    assert!(!keep("1", Some("close")));
    assert!(!keep("1", Some("Upgrade, CLOSE")));
    assert!(!keep("1", Some(" foo ,close ")));
    assert!(keep("1", Some("closed")));
    assert!(!keep("0", None));
    assert!(keep("0", Some("Keep-Alive")));
    assert!(keep("0", Some("foo, keep-alive")));
    assert!(!keep("0", Some("keep-alive, close")));
    assert!(!keep("0", Some("keep-alive-ish")));
    let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n";
    assert!(!ok(text).keep_alive);
}

#[test]
fn upgrade_derivation() {
    let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(ok(text).upgrade);
    let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(ok(text).upgrade);
    let text = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    assert!(!ok(text).upgrade);
    let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n";
    assert!(!ok(text).upgrade);
    let text = "GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(!ok(text).upgrade);
}

#[test]
fn expect_continue() {
    let text = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
    assert!(ok(text).expect_continue);
    let text = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\n\r\n";
    assert!(!ok(text).expect_continue);
    let text = "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n";
    assert!(!ok(text).expect_continue);
    let head = ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(head.fields[1].kind, Kind::Other);
}

// ---- field kinds ----

#[test]
fn request_field_kinds() {
    let text = "GET / HTTP/1.1\r\nhost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
        Proxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\n\
        Proxy-Authenticate: x\r\nProxy-Authorization: x\r\nContent-Length: 0\r\n\
        X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\
        X-Forwarded-Port: 80\r\nX-REAL-IP: 1.2.3.4\r\nX-Request-Id: r\r\nServer: s\r\n\
        Date: d\r\nUser-Agent: u\r\n\r\n";
    let head = ok(text);
    let expected = [
        Kind::Host,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Hop,
        Kind::Framing,
        Kind::XForwardedFor,
        Kind::Forwarded,
        Kind::Forwarded,
        Kind::Forwarded,
        Kind::Forwarded,
        Kind::XRequestId,
        Kind::Other,
        Kind::Other,
        Kind::Other,
    ];
    let got: Vec<Kind> = head.fields.iter().map(|f| f.kind).collect();
    assert_eq!(got, expected, "{:?}", kinds(text, &head.fields));
    let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(ok(text).fields[1].kind, Kind::Framing);
}

#[test]
fn connection_named_fields_are_hop() {
    let text = "GET / HTTP/1.1\r\nHost: a\r\nX-Secret: s\r\nConnection: x-secret, Content-Length, HOST\r\n\
        Content-Length: 0\r\nX-Forwarded-For: 1.1.1.1\r\nConnection: x-forwarded-for\r\nX-Other: o\r\n\
        Close: c\r\nConnection: close\r\n\r\n";
    let head = ok(text);
    let got = kinds(text, &head.fields);
    let expected = [
        ("Host", Kind::Host),
        ("X-Secret", Kind::Hop),
        ("Connection", Kind::Hop),
        ("Content-Length", Kind::Framing),
        ("X-Forwarded-For", Kind::Hop),
        ("Connection", Kind::Hop),
        ("X-Other", Kind::Other),
        ("Close", Kind::Hop),
        ("Connection", Kind::Hop),
    ];
    let expected: Vec<(String, Kind)> = expected
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .collect();
    assert_eq!(got, expected);
    assert!(!head.keep_alive);
}

// ---- limits ----

fn padded_request(head_len: usize) -> String {
    let start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = head_len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad))
}

#[test]
fn long_request_lines() {
    // A target longer than 8 KiB within the head limit is parsed whole.
    let target = format!("/{}", "t".repeat(20 * 1024));
    let text = format!("GET {target}?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = ok(&text);
    assert_eq!(at(&text, &head.path), target);
    // A request line that does not end within the limit is 414; one that does, with
    // fields past the limit, 431.
    let text = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "t".repeat(MAX_HEAD));
    assert_eq!(req(&text), Err(HeadError::TargetTooLong));
    assert_eq!(req(&text[..MAX_HEAD]), Err(HeadError::TargetTooLong));
    assert_eq!(HeadError::TargetTooLong.status().as_u16(), 414);
    let text = format!(
        "\r\nGET /{} HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "t".repeat(MAX_HEAD - 100),
        "x".repeat(200)
    );
    assert_eq!(req(&text), Err(HeadError::TooLarge));
}

#[test]
fn head_size_limit() {
    let text = padded_request(MAX_HEAD);
    assert_eq!(ok(&text).len, MAX_HEAD);
    let with_body = format!("{text}body");
    assert_eq!(
        parse_request(with_body.as_bytes()).unwrap().unwrap().len,
        MAX_HEAD
    );
    let text = padded_request(MAX_HEAD + 1);
    assert_eq!(req(&text), Err(HeadError::TooLarge));
    assert_eq!(req(&text[..MAX_HEAD]), Err(HeadError::TooLarge));
    assert_eq!(req(&text[..MAX_HEAD - 1]), Ok(None));
    let text = padded_request(MAX_HEAD * 3);
    assert_eq!(req(&text), Err(HeadError::TooLarge));
    assert_eq!(HeadError::TooLarge.status().as_u16(), 431);
}

#[test]
fn header_count_limit() {
    let build = |extra: usize| {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..extra {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        text
    };
    assert_eq!(ok(&build(MAX_HEADERS - 1)).fields.len(), MAX_HEADERS);
    assert_eq!(req(&build(MAX_HEADERS)), Err(HeadError::TooManyHeaders));
    assert_eq!(HeadError::TooManyHeaders.status().as_u16(), 431);
    assert_eq!(HeadError::Invalid("host").status().as_u16(), 400);
    assert_eq!(
        HeadError::Invalid("host").to_string(),
        "malformed message head: host"
    );
}

// ---- responses ----

#[test]
fn response_basics() {
    let text = "HTTP/1.1 200 OK\r\nServer: up\r\nDate: today\r\nContent-Length: 2\r\nHost: h\r\n\
        X-Forwarded-For: f\r\nKeep-Alive: 5\r\n\r\nhi";
    let head = res(text, false);
    assert_eq!(head.len, text.len() - 2);
    assert_eq!(head.status, 200);
    assert_eq!(head.minor_version, 1);
    assert_eq!(at(text, &head.reason), "OK");
    assert_eq!(head.framing, Framing::Length(2));
    assert!(head.keep_alive);
    let got: Vec<Kind> = head.fields.iter().map(|f| f.kind).collect();
    assert_eq!(
        got,
        [
            Kind::Server,
            Kind::Date,
            Kind::Framing,
            Kind::Other,
            Kind::Other,
            Kind::Hop
        ]
    );
}

#[test]
fn response_reason_phrases() {
    let text = "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n";
    let head = res(text, false);
    assert!(head.reason.is_empty());
    assert_eq!(head.reason.start, 12);
    let text = "\r\nHTTP/1.1 500 Internal  Server Error \r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        at(text, &res(text, false).reason),
        "Internal  Server Error "
    );
    let bytes = b"HTTP/1.1 200 Gr\xfc\xdfe\r\nContent-Length: 0\r\n\r\n";
    let head = parse_response(bytes, false).unwrap().unwrap();
    assert_eq!(&bytes[head.reason.clone()], b"Gr\xfc\xdfe");
    let text = "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n";
    assert_eq!(at(text, &res(text, false).reason), "");
}

#[test]
fn response_framing_table() {
    let frame = |head: &str, head_request: bool| {
        let text = format!("{head}\r\n");
        let parsed = res(&text, head_request);
        (parsed.framing, parsed.keep_alive)
    };
    use Framing::*;
    let cl = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n";
    let te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n";
    assert_eq!(frame(cl, false), (Length(10), true));
    assert_eq!(frame(cl, true), (None, true));
    assert_eq!(frame(te, false), (Chunked, true));
    assert_eq!(frame(te, true), (None, true));
    assert_eq!(frame("HTTP/1.1 100 Continue\r\n", false), (None, true));
    assert_eq!(
        frame(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n",
            false
        ),
        (None, true)
    );
    assert_eq!(
        frame("HTTP/1.1 103 Early Hints\r\nConnection: close\r\n", false),
        (None, true)
    );
    assert_eq!(
        frame("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n", false),
        (None, true)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n",
            false
        ),
        (None, true)
    );
    assert_eq!(frame("HTTP/1.1 200 OK\r\n", false), (Close, false));
    assert_eq!(frame("HTTP/1.1 200 OK\r\n", true), (None, true));
    assert_eq!(
        frame("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n", false),
        (Close, false)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n",
            false
        ),
        (Chunked, true)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n",
            false
        ),
        (Close, false)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            false
        ),
        (Chunked, true)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n",
            false
        ),
        // Chunked wins, and the connection is not kept.
        (Chunked, false)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nContent-Length: bogus\r\nTransfer-Encoding: chunked\r\n",
            false
        ),
        // Chunked wins, and the connection is not kept.
        (Chunked, false)
    );
    assert_eq!(
        frame(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n",
            false
        ),
        (Length(1), false)
    );
    assert_eq!(
        frame("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n", false),
        (Length(1), false)
    );
    assert_eq!(
        frame(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n",
            false
        ),
        (Length(1), true)
    );
    assert_eq!(
        frame("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", false),
        (Close, false)
    );
    assert_eq!(frame("HTTP/1.0 304 Not Modified\r\n", false), (None, false));
    assert_eq!(
        frame("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n", false),
        (Length(3), true)
    );
}

#[test]
fn responses_with_both_framings_are_chunked_and_end_the_connection() {
    for text in [
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
    ] {
        let head = res(text, false);
        assert_eq!(head.framing, Framing::Chunked, "{text:?}");
        assert!(!head.keep_alive, "{text:?}");
    }
    let head = res(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert!(head.keep_alive);
}

#[test]
fn response_errors() {
    assert_eq!(
        res_invalid("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "transfer-encoding"
    );
    assert_eq!(
        res_invalid("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"),
        "content-length"
    );
    assert_eq!(
        res_invalid("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        "content-length"
    );
    assert_eq!(
        res_invalid("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        "content-length"
    );
    assert_eq!(res_invalid("HTTP/1.1 099 Odd\r\n\r\n"), "status");
    assert_eq!(res_invalid("HTTP/1.1 2000 OK\r\n\r\n"), "syntax");
    assert_eq!(res_invalid("HTTP/1.1 20 OK\r\n\r\n"), "syntax");
    assert_eq!(res_invalid("HTTP/1.1 200 OK\r\nX : y\r\n\r\n"), "syntax");
    assert_eq!(res_invalid("HTTP/2 200 OK\r\n\r\n"), "syntax");
    assert_eq!(
        res("HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n", false).status,
        999
    );
    let text = "HTTP/1.1 200 OK\r\n";
    for end in 0..=text.len() {
        assert_eq!(parse_response(&text.as_bytes()[..end], false), Ok(None));
    }
    let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(
        parse_response(big.as_bytes(), false),
        Err(HeadError::TooLarge)
    );
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        parse_response(many.as_bytes(), false),
        Err(HeadError::TooManyHeaders)
    );
}

#[test]
fn response_connection_named_fields() {
    let text = "HTTP/1.1 200 OK\r\nConnection: server, x-a, content-length, host\r\nServer: s\r\n\
        X-A: a\r\nContent-Length: 0\r\nHost: h\r\nDate: d\r\n\r\n";
    let head = res(text, false);
    let got: Vec<Kind> = head.fields.iter().map(|f| f.kind).collect();
    assert_eq!(
        got,
        [
            Kind::Hop,
            Kind::Hop,
            Kind::Hop,
            Kind::Framing,
            Kind::Hop,
            Kind::Date
        ]
    );
}

// ---- properties ----
/// A well-formed request head and the parts it was made of.
fn valid_request() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
        ]),
        "/[a-z0-9/._~-]{0,20}(\\?[a-z0-9=&%]{0,12})?",
        "[a-z]{1,10}(\\.[a-z]{1,5})?(:[0-9]{1,5})?",
        prop::collection::vec(("X-[A-Za-z]{1,8}", "[!-~]([ -~]{0,20}[!-~])?"), 0..6),
        0usize..3,
        prop_oneof![
            Just(String::new()),
            (0u64..100000).prop_map(|n| format!("Content-Length: {n}\r\n")),
            Just("Transfer-Encoding: chunked\r\n".to_owned()),
        ],
        any::<bool>(),
    )
        .prop_map(|(method, path, host, extra, blank, framing, absolute)| {
            let target = if absolute {
                format!("http://{host}{path}")
            } else {
                path
            };
            let mut text = "\r\n".repeat(blank);
            text.push_str(&format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n"));
            for (name, value) in extra {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str(&framing);
            text.push_str("\r\n");
            text
        })
}

fn check_ranges(len: usize, head: &RequestHead) {
    let mut ranges = vec![&head.target, &head.path_and_query, &head.path];
    ranges.extend(head.host.as_ref());
    for f in &head.fields {
        ranges.push(&f.name);
        ranges.push(&f.value);
    }
    for r in ranges {
        assert!(r.start <= r.end && r.end <= len, "{r:?} outside {len}");
    }
    assert!(head.len <= len);
}

/// How a generated response head delimits its body.
#[derive(Debug, Clone, Copy)]
enum BodyHeader {
    Nothing,
    Length(u64),
    Chunked,
    /// A transfer coding other than chunked: the body runs until the connection closes.
    Gzip,
}

/// A well-formed response head and what parsing it must find.
#[derive(Debug, Clone)]
struct GeneratedResponse {
    text: String,
    head_request: bool,
    minor_version: u8,
    status: u16,
    reason: String,
    /// Every field as (name, value without surrounding whitespace, kind).
    fields: Vec<(String, String, Kind)>,
    body: BodyHeader,
    close: bool,
    keep_alive_token: bool,
}

impl GeneratedResponse {
    /// RFC 9112 §6.3, read independently of the parser: which responses carry no body, then
    /// Transfer-Encoding, then Content-Length, else the body runs to the close.
    fn framing(&self) -> Framing {
        let bodiless =
            self.head_request || self.status < 200 || self.status == 204 || self.status == 304;
        match self.body {
            _ if bodiless => Framing::None,
            BodyHeader::Chunked => Framing::Chunked,
            BodyHeader::Gzip | BodyHeader::Nothing => Framing::Close,
            BodyHeader::Length(n) => Framing::Length(n),
        }
    }

    /// Interim responses never end the connection; otherwise it stays open when the body's
    /// end is known and the version and Connection tokens allow it.
    fn keep_alive(&self) -> bool {
        let persistent = !self.close && (self.minor_version == 1 || self.keep_alive_token);
        self.status < 200 || (self.framing() != Framing::Close && persistent)
    }

    /// A transfer coding in an HTTP/1.0 response is refused.
    fn refused(&self) -> bool {
        self.minor_version == 0 && matches!(self.body, BodyHeader::Chunked | BodyHeader::Gzip)
    }
}

fn valid_response() -> impl Strategy<Value = GeneratedResponse> {
    (
        (
            0u8..2,
            prop_oneof![
                prop::sample::select(vec![100u16, 101, 103, 200, 204, 206, 301, 304, 404]),
                100u16..1000,
            ],
            prop::option::of("[A-Za-z]([A-Za-z -]{0,20}[A-Za-z])?"),
            0usize..3,
            any::<bool>(),
        ),
        prop::collection::vec(
            (
                "X-[A-Za-z]{1,8}",
                "[!-~]([ -~]{0,20}[!-~])?",
                prop::sample::select(vec!["", " ", "\t", "  "]),
                prop::sample::select(vec!["", " ", "\t "]),
            ),
            0..6,
        ),
        prop_oneof![
            Just(BodyHeader::Nothing),
            (0u64..100_000).prop_map(BodyHeader::Length),
            Just(BodyHeader::Chunked),
            Just(BodyHeader::Gzip),
        ],
        prop::sample::select(vec![None, Some("close"), Some("keep-alive")]),
    )
        .prop_map(
            |((minor_version, status, reason, blank, head_request), extra, body, connection)| {
                let mut text = "\r\n".repeat(blank);
                text.push_str(&format!("HTTP/1.{minor_version} {status}"));
                if let Some(reason) = &reason {
                    text.push_str(&format!(" {reason}"));
                }
                text.push_str("\r\n");
                let mut fields = Vec::new();
                for (name, value, before, after) in extra {
                    text.push_str(&format!("{name}:{before}{value}{after}\r\n"));
                    fields.push((name, value, Kind::Other));
                }
                let framing_field = match body {
                    BodyHeader::Nothing => None,
                    BodyHeader::Length(n) => Some(("Content-Length", n.to_string())),
                    BodyHeader::Chunked => Some(("Transfer-Encoding", "chunked".to_owned())),
                    BodyHeader::Gzip => Some(("Transfer-Encoding", "gzip".to_owned())),
                };
                if let Some((name, value)) = framing_field {
                    text.push_str(&format!("{name}: {value}\r\n"));
                    fields.push((name.to_owned(), value, Kind::Framing));
                }
                if let Some(token) = connection {
                    text.push_str(&format!("Connection: {token}\r\n"));
                    fields.push(("Connection".to_owned(), token.to_owned(), Kind::Hop));
                }
                text.push_str("\r\n");
                GeneratedResponse {
                    text,
                    head_request,
                    minor_version,
                    status,
                    reason: reason.unwrap_or_default(),
                    fields,
                    body,
                    close: connection == Some("close"),
                    keep_alive_token: connection == Some("keep-alive"),
                }
            },
        )
}

/// The ranges of a parsed response head lie within its head, which lies within the buffer.
fn check_response_ranges(len: usize, head: &ResponseHead, head_request: bool) {
    assert!(head.len <= len, "head of {} in {len} bytes", head.len);
    let mut ranges = vec![&head.reason];
    for f in &head.fields {
        ranges.push(&f.name);
        ranges.push(&f.value);
    }
    for r in ranges {
        assert!(
            r.start <= r.end && r.end <= head.len,
            "{r:?} outside {}",
            head.len
        );
    }
    assert!((100..=999).contains(&head.status));
    assert!(head.minor_version <= 1);
    if head_request {
        assert_eq!(head.framing, Framing::None);
    }
}

proptest! {
    #[test]
    fn parse_request_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some(head)) = parse_request(&bytes) {
            check_ranges(bytes.len(), &head);
        }
        for head_request in [false, true] {
            if let Ok(Some(head)) = parse_response(&bytes, head_request) {
                check_response_ranges(bytes.len(), &head, head_request);
            }
        }
    }

    #[test]
    fn parse_request_never_panics_on_near_misses(
        fragments in prop::collection::vec(prop::sample::select(vec![
            "GET ", "OPTIONS ", "CONNECT ", "/", "*", "http://", "https://", "a.b", "@", "#", "?",
            "[::1]", ":80", " HTTP/1.1", " HTTP/1.0", "\r\n", "\n", "\r", "Host: ", "Host:",
            "Transfer-Encoding: ", "Content-Length: ", "chunked", ",", " ", "\t", "5", "0",
            "Connection: ", "close", "upgrade", "Upgrade: ", "x", "\u{e9}", "\0", ":",
        ]), 0..40),
    ) {
        let text: String = fragments.concat();
        if let Ok(Some(head)) = parse_request(text.as_bytes()) {
            check_ranges(text.len(), &head);
            prop_assert!(head.framing != Framing::Close);
        }
        for head_request in [false, true] {
            if let Ok(Some(head)) = parse_response(text.as_bytes(), head_request) {
                check_response_ranges(text.len(), &head, head_request);
            }
        }
    }

    #[test]
    fn split_requests(text in valid_request(), body in "[a-z]{0,10}") {
        let head = parse_request(text.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(head.len, text.len());
        check_ranges(text.len(), &head);
        for end in 0..text.len() {
            prop_assert_eq!(parse_request(&text.as_bytes()[..end]), Ok(None));
        }
        let with_body = format!("{text}{body}");
        prop_assert_eq!(parse_request(with_body.as_bytes()), Ok(Some(head)));
    }

    #[test]
    fn split_responses(r in valid_response(), body in "[a-z]{0,10}") {
        let text = r.text.as_str();
        let parsed = parse_response(text.as_bytes(), r.head_request);
        if r.refused() {
            prop_assert_eq!(parsed, Err(HeadError::Invalid("transfer-encoding")));
            return Ok(());
        }
        let head = parsed.unwrap().unwrap();
        prop_assert_eq!(head.len, text.len());
        prop_assert_eq!(head.minor_version, r.minor_version);
        prop_assert_eq!(head.status, r.status);
        prop_assert_eq!(at(text, &head.reason), r.reason.clone());
        let fields: Vec<(String, String, Kind)> = head
            .fields
            .iter()
            .map(|f| (at(text, &f.name), at(text, &f.value), f.kind))
            .collect();
        prop_assert_eq!(&fields, &r.fields);
        prop_assert_eq!(head.framing, r.framing());
        prop_assert_eq!(head.keep_alive, r.keep_alive());
        check_response_ranges(text.len(), &head, r.head_request);
        for end in 0..text.len() {
            prop_assert_eq!(parse_response(&text.as_bytes()[..end], r.head_request), Ok(None));
        }
        let with_body = format!("{text}{body}");
        prop_assert_eq!(
            parse_response(with_body.as_bytes(), r.head_request),
            Ok(Some(head))
        );
    }
}
