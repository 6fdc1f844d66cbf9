//! Active health checks: one task per checked endpoint, sending an HTTP/1.1 `GET` of the
//! configured path every interval and telling [`Health`] when the endpoint goes down or comes
//! back. Which endpoints are checked follows the published table: routes whose policy asks for
//! checks (`portcullis.io/health-check-path`) name a backend, and each of its ready endpoints is
//! checked. Like passive health, what the checks find is keyed by endpoint identity and outlives
//! tables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use table::{BackendTarget, HealthCheck, Published, Route, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::health::Health;

/// How often the published table is looked at for changes in what to check.
const FOLLOW: Duration = Duration::from_millis(500);
/// The most of a check's response that is read (the status line is all that counts).
const READ_LIMIT: usize = 1024;

/// One endpoint checked one way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Probe {
    backend: Arc<str>,
    addr: SocketAddr,
    /// The `Host` header: the route's host, or the endpoint's address for host-less routes.
    host: String,
    check: HealthCheck,
}

/// Checks what the published table asks to be checked, until dropped.
pub async fn run(published: Arc<Published>, health: Arc<Health>) {
    let mut running: HashMap<Probe, AbortOnDrop> = HashMap::new();
    let mut seen = None;
    loop {
        let generation = published.generation();
        if seen != Some(generation) && published.is_ready() {
            seen = Some(generation);
            let wanted = probes(&published.load());
            running.retain(|probe, _| {
                let keep = wanted.contains(probe);
                if !keep {
                    // Whatever this check found no longer applies.
                    health.set_active(&probe.backend, probe.addr, false);
                }
                keep
            });
            for probe in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(probe) {
                    let task = tokio::spawn(check_forever(slot.key().clone(), health.clone()));
                    slot.insert(AbortOnDrop(task));
                }
            }
        }
        tokio::time::sleep(FOLLOW).await;
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every endpoint `table` asks to be checked, once per backend, address and check.
fn probes(table: &Table) -> Vec<Probe> {
    let mut out: Vec<Probe> = Vec::new();
    let mut add = |host: &str, route: &Route| {
        let Some(check) = route
            .policy
            .rules
            .as_ref()
            .and_then(|p| p.health_check.as_ref())
        else {
            return;
        };
        let backend = table.backend(route.backend);
        let BackendTarget::Endpoints { ready, .. } = &backend.target else {
            return;
        };
        let name: Arc<str> = Arc::from(backend.name.as_str());
        for addr in ready {
            let host = if host.is_empty() || host.starts_with('*') {
                addr.to_string()
            } else {
                host.to_string()
            };
            let probe = Probe {
                backend: name.clone(),
                addr: *addr,
                host,
                check: check.clone(),
            };
            // One check per endpoint of a backend, whichever route asked first.
            if !out
                .iter()
                .any(|p| p.backend == probe.backend && p.addr == probe.addr)
            {
                out.push(probe);
            }
        }
    };
    for vhost in table.virtual_hosts() {
        let routes = vhost.exact.values().chain(vhost.prefix.values());
        for route in routes.chain(vhost.regex.iter().flat_map(|r| r.iter().map(|(_, r)| r))) {
            add(&vhost.name, route);
        }
    }
    if let Some(route) = &table.default_backend {
        add("", route);
    }
    out
}

/// Checks one endpoint every interval, reporting changes to `health`.
async fn check_forever(probe: Probe, health: Arc<Health>) {
    let check = &probe.check;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut good, mut bad, mut down) = (0u32, 0u32, false);
    loop {
        ticker.tick().await;
        let outcome = tokio::time::timeout(check.timeout, check_once(&probe)).await;
        let result = match outcome {
            Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("status {status}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        };
        match result {
            Ok(()) => {
                good += 1;
                bad = 0;
                if down && good >= check.healthy_threshold {
                    down = false;
                    health.set_active(&probe.backend, probe.addr, false);
                    tracing::info!(backend = %probe.backend, endpoint = %probe.addr, "health check passes again; endpoint back in service");
                }
            }
            Err(why) => {
                bad += 1;
                good = 0;
                if !down && bad >= check.unhealthy_threshold {
                    down = true;
                    health.set_active(&probe.backend, probe.addr, true);
                    tracing::warn!(backend = %probe.backend, endpoint = %probe.addr, path = %check.path, reason = %why, "health check failed {bad} times in a row; endpoint out of service");
                }
            }
        }
    }
}

/// One check: the status code of `GET path` on a new connection.
async fn check_once(probe: &Probe) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(probe.addr).await?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portcullis-health-check\r\nConnection: close\r\n\r\n",
        probe.check.path, probe.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < READ_LIMIT {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    status_of(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP/1.x status line",
        )
    })
}

/// The status code of an HTTP/1.x status line at the start of `buf`.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_of(b"HTTP/2 200\r\n"), None);
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 2x0 OK\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
