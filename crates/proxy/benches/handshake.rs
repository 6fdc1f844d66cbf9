//! The server's side of TLS, per cryptography provider: a full TLS 1.3 handshake, a resumed
//! one, and a 1 KiB record each way on an open connection. Client and server talk through
//! memory, and only the server's calls are timed, so the numbers are what the HTTPS listener
//! spends (less the kernel's TCP work).
//!
//! `cargo bench -p portcullis-proxy --bench handshake` (add `-- --quick` for a short run).

// `criterion_group!` defines a public function it cannot document.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const HOST: &str = "tls.bench.local";

/// The certificate and key every server uses: ECDSA P-256, as `bench/run.sh` makes.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![HOST.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    (cert.der().clone(), key)
}

/// A server configuration and two clients for it: one that never resumes and one that does.
struct Setup {
    server: Arc<ServerConfig>,
    fresh: Arc<ClientConfig>,
    resuming: Arc<ClientConfig>,
}

fn setup(provider: CryptoProvider, ticketer: Arc<dyn rustls::server::ProducesTickets>) -> Setup {
    let provider = Arc::new(provider);
    let (cert, key) = certificate();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    server.ticketer = ticketer;
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let resuming = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut fresh = resuming.clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    Setup {
        server: Arc::new(server),
        fresh: Arc::new(fresh),
        resuming: Arc::new(resuming),
    }
}

/// Feeds `wire` to `conn` and processes it.
fn feed(
    conn: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    wire: &[u8],
) {
    let mut rd = wire;
    while !rd.is_empty() {
        conn.read_tls(&mut rd).expect("read_tls");
        conn.process_new_packets().expect("process_new_packets");
    }
}

/// Takes everything `conn` has to send.
fn drain(
    conn: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    wire: &mut Vec<u8>,
) {
    wire.clear();
    while conn.wants_write() {
        conn.write_tls(wire).expect("write_tls");
    }
}

/// One connection's handshake, driven to its end (tickets included); the time the server
/// spent on it.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (Duration, ServerConnection, ClientConnection) {
    let name = ServerName::try_from(HOST).expect("name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client");
    let mut server = ServerConnection::new(server.clone()).expect("server");
    let mut spent = Duration::ZERO;
    let mut wire = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() || server.wants_write() {
        drain(&mut client, &mut wire);
        let t = Instant::now();
        feed(&mut server, &wire);
        drain(&mut server, &mut wire);
        spent += t.elapsed();
        feed(&mut client, &wire);
    }
    (spent, server, client)
}

/// The server reads a 1 KiB request and writes a 1 KiB response on an open connection.
fn exchange(
    server: &mut ServerConnection,
    client: &mut ClientConnection,
    wire: &mut Vec<u8>,
) -> Duration {
    let body = [b'a'; 1024];
    let mut got = [0u8; 1024];
    client.writer().write_all(&body).expect("client write");
    drain(client, wire);
    let t = Instant::now();
    feed(server, wire);
    server.reader().read_exact(&mut got).expect("server read");
    server.writer().write_all(&got).expect("server write");
    drain(server, wire);
    let spent = t.elapsed();
    feed(client, wire);
    client.reader().read_exact(&mut got).expect("client read");
    spent
}

fn providers() -> Vec<(&'static str, Setup)> {
    vec![
        (
            "ring",
            setup(
                rustls::crypto::ring::default_provider(),
                rustls::crypto::ring::Ticketer::new().expect("ticketer"),
            ),
        ),
        (
            "aws-lc-rs",
            setup(
                rustls::crypto::aws_lc_rs::default_provider(),
                rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer"),
            ),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls-server");
    group.measurement_time(Duration::from_secs(4));
    for (name, s) in providers() {
        group.bench_function(BenchmarkId::new("full-handshake", name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&s.server, &s.fresh).0).sum())
        });
        // The first handshake leaves tickets with the client; every later one resumes and
        // leaves new ones.
        handshake(&s.server, &s.resuming);
        group.bench_function(BenchmarkId::new("resumed-handshake", name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (spent, server, _) = handshake(&s.server, &s.resuming);
                        assert!(server.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
                        spent
                    })
                    .sum()
            })
        });
        let (_, mut server, mut client) = handshake(&s.server, &s.fresh);
        let mut wire = Vec::with_capacity(4096);
        group.bench_function(BenchmarkId::new("1k-each-way", name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| exchange(&mut server, &mut client, &mut wire))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
