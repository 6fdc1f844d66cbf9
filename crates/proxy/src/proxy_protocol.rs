//! The PROXY protocol (versions 1 and 2), read before anything else on a connection when a load
//! balancer in front of Portcullis announces each client's address that way.
//!
//! The parser is bounded and takes any bytes: a version 1 header is at most 107 bytes, a
//! version 2 header at most [`MAX_V2`] bytes; anything else is refused. Nothing after the header
//! is consumed, so the TLS handshake or the HTTP request that follows is read as usual.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest version 1 header, CRLF included.
pub(crate) const MAX_V1: usize = 107;
/// The longest version 2 header accepted (16 fixed bytes and the addresses and TLVs after
/// them); the protocol allows 65 551, no load balancer sends nearly as much.
pub(crate) const MAX_V2: usize = 4096;
/// The version 2 signature.
const SIG_V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The version 1 prefix.
const PREFIX_V1: &[u8; 6] = b"PROXY ";

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The client's address and the address it connected to.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (at the load balancer).
        destination: SocketAddr,
    },
    /// No addresses (`LOCAL`, `UNKNOWN`, or an unspecified family): the connection's own peer
    /// is the client.
    Local,
}

/// The outcome of parsing the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole header of this many bytes.
    Done(Header, usize),
    /// The bytes so far may begin a header; more are needed.
    Partial,
    /// Not a valid header.
    Invalid(&'static str),
}

/// Parses a header at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    if buf[0] == SIG_V2[0] {
        return parse_v2(buf);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let n = buf.len().min(PREFIX_V1.len());
    if buf[..n] != PREFIX_V1[..n] {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1 {
            Parsed::Invalid("version 1 header longer than 107 bytes")
        } else {
            Parsed::Partial
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Parsed::Invalid("version 1 header not ended by CRLF");
    }
    let Ok(line) = std::str::from_utf8(&window[PREFIX_V1.len()..lf - 1]) else {
        return Parsed::Invalid("version 1 header is not text");
    };
    match v1_fields(line) {
        Ok(header) => Parsed::Done(header, lf + 1),
        Err(why) => Parsed::Invalid(why),
    }
}

/// The fields of a version 1 line after `PROXY `.
fn v1_fields(line: &str) -> Result<Header, &'static str> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Header::Local);
    }
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or("");
    let (src, dst, sport, dport) = match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(a), Some(b), Some(c), Some(d), None) => (a, b, c, d),
        _ => return Err("version 1 header does not have four fields after the family"),
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| "bad IPv4 source address")?),
            IpAddr::V4(dst.parse().map_err(|_| "bad IPv4 destination address")?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| "bad IPv6 source address")?),
            IpAddr::V6(dst.parse().map_err(|_| "bad IPv6 destination address")?),
        ),
        _ => return Err("version 1 header names no known family"),
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    })
}

/// A decimal port, 0 to 65535, without sign or leading zeros.
fn port(text: &str) -> Result<u16, &'static str> {
    let digits_ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse() {
        Ok(p) if digits_ok => Ok(p),
        _ => Err("bad port"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let n = buf.len().min(SIG_V2.len());
    if buf[..n] != SIG_V2[..n] {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    if buf.len() < 16 {
        return Parsed::Partial;
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Parsed::Invalid("version 2 header with another version number");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > MAX_V2 {
        return Parsed::Invalid("version 2 header longer than accepted");
    }
    if buf.len() < 16 + len {
        return Parsed::Partial;
    }
    let body = &buf[16..16 + len];
    let header = match (command, buf[13]) {
        (0x0, _) => Header::Local,
        (0x1, 0x00) => Header::Local,
        (0x1, 0x11) if len >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        (0x1, 0x21) if len >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([body[32], body[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([body[34], body[35]])),
            }
        }
        (0x1, 0x11 | 0x21) => return Parsed::Invalid("version 2 addresses cut short"),
        (0x1, _) => return Parsed::Invalid("version 2 header for a protocol other than TCP"),
        _ => return Parsed::Invalid("version 2 header with an unknown command"),
    };
    Parsed::Done(header, 16 + len)
}

/// Why no header was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a header.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
    /// The client closed or the socket failed first.
    #[error("connection ended before a PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing complete within the timeout.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
}

/// Reads a header from `stream` within `timeout`, consuming exactly its bytes.
///
/// What has arrived is looked at without being consumed; when it holds a whole header, exactly
/// that many bytes are read. Bytes that do not complete a header yet are consumed (they belong
/// to the header), so each wait is for new bytes.
pub(crate) async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<Header, ReadError> {
    match tokio::time::timeout(timeout, read_header(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ReadError::Timeout(timeout)),
    }
}

async fn read_header(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut taken: Vec<u8> = Vec::new();
    let mut seen = vec![0u8; MAX_V2];
    loop {
        let room = MAX_V2 - taken.len();
        let n = stream.peek(&mut seen[..room]).await?;
        if n == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let before = taken.len();
        taken.extend_from_slice(&seen[..n]);
        match parse(&taken) {
            Parsed::Done(header, len) => {
                stream.read_exact(&mut seen[..len - before]).await?;
                return Ok(header);
            }
            Parsed::Partial if taken.len() < MAX_V2 => {
                stream.read_exact(&mut seen[..n]).await?;
            }
            Parsed::Partial => return Err(ReadError::Invalid("header too long")),
            Parsed::Invalid(why) => return Err(ReadError::Invalid(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = SIG_V2.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn version_1_headers() {
        let text = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let source: SocketAddr = "192.0.2.7:56324".parse().unwrap();
        let destination: SocketAddr = "198.51.100.1:443".parse().unwrap();
        assert_eq!(
            parse(text),
            Parsed::Done(
                Header::Proxied {
                    source,
                    destination
                },
                45
            )
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        assert!(matches!(
            parse(six),
            Parsed::Done(Header::Proxied { .. }, 44)
        ));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Done(Header::Local, 15));
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"),
            Parsed::Done(Header::Local, 35)
        );
        for partial in [
            &b"PRO"[..],
            b"PROXY TCP4 192.0.2.7",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r",
        ] {
            assert_eq!(parse(partial), Parsed::Partial, "{partial:?}");
        }
    }

    #[test]
    fn bad_version_1_headers_are_refused() {
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 080 443\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 \xff\r\n",
            long.as_bytes(),
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn version_2_headers() {
        let mut four = vec![192, 0, 2, 7, 198, 51, 100, 1];
        four.extend_from_slice(&56324u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        let mut with_tlv = four.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
        let source: SocketAddr = "192.0.2.7:56324".parse().unwrap();
        let destination: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let proxied = Header::Proxied {
            source,
            destination,
        };
        assert_eq!(parse(&v2(1, 0x11, &four)), Parsed::Done(proxied, 28));
        assert_eq!(parse(&v2(1, 0x11, &with_tlv)), Parsed::Done(proxied, 33));
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&[0, 80, 1, 187]);
        let Parsed::Done(Header::Proxied { source, .. }, 52) = parse(&v2(1, 0x21, &six)) else {
            panic!("a TCP6 header");
        };
        assert_eq!(source, "[2001:db8::7]:80".parse().unwrap());
        assert_eq!(parse(&v2(0, 0x11, &four)), Parsed::Done(Header::Local, 28));
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Done(Header::Local, 16));
        assert_eq!(parse(&v2(1, 0x00, &[])), Parsed::Done(Header::Local, 16));
        let whole = v2(1, 0x11, &four);
        for cut in [1, 11, 12, 15, 16, 27] {
            assert_eq!(parse(&whole[..cut]), Parsed::Partial, "{cut}");
        }
    }

    #[test]
    fn bad_version_2_headers_are_refused() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        let mut too_long = v2(1, 0x11, &[0; 12]);
        too_long[14..16].copy_from_slice(&(MAX_V2 as u16).to_be_bytes());
        for bad in [
            wrong_version,
            too_long,
            v2(1, 0x11, &[0; 11]),
            v2(1, 0x21, &[0; 35]),
            v2(1, 0x12, &[0; 12]),
            v2(1, 0x31, &[0; 216]),
            v2(2, 0x11, &[0; 12]),
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x00".to_vec(),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn any_prefix_of_any_bytes_is_handled() {
        // A small deterministic sweep standing in for a fuzzer: no input panics, and a result
        // never claims more bytes than were given.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            if state.is_multiple_of(3) {
                bytes.splice(0..0, SIG_V2.iter().copied());
            } else if state % 3 == 1 {
                bytes.splice(0..0, PREFIX_V1.iter().copied());
            }
            if let Parsed::Done(_, n) = parse(&bytes) {
                assert!(n <= bytes.len());
            }
        }
    }
}
