//! Upstream connections of the HTTP/1.1 path: TCP (or TLS over TCP) streams with their read
//! buffers, kept idle per endpoint and TLS configuration. One pool per worker thread, so its
//! lock is never contended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::Buf;
use crate::decide::Forward;
use crate::upstream::{open, Stream, Target, UpstreamError};
use table::fasthash::BuildFast;
use table::UpstreamTls;

/// One upstream connection.
pub(crate) struct Upstream {
    pub(crate) stream: Stream,
    /// The TLS configuration the connection was made with (0: cleartext).
    pub(crate) tls: u64,
    pub(crate) buf: Buf,
    /// Whether the connection served an earlier request (and so may have been closed by the
    /// upstream meanwhile).
    pub(crate) reused: bool,
}

struct Idle {
    conn: Upstream,
    since: Instant,
}

/// Idle keep-alive connections by endpoint.
pub(crate) struct Pool {
    /// By endpoint; each connection remembers its TLS configuration, so cleartext and TLS
    /// connections to one endpoint are told apart without a wider key.
    idle: Mutex<HashMap<Target, Vec<Idle>, BuildFast>>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Pool {
    pub(crate) fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(HashMap::default()),
            idle_timeout,
            max_idle,
        }
    }

    /// The most recently used idle connection to `target` with the TLS configuration `tls`
    /// that is still open, at time `now`.
    pub(crate) fn take(
        &self,
        target: &Target,
        tls: Option<&UpstreamTls>,
        now: Instant,
    ) -> Option<Upstream> {
        let mut idle = self.idle.lock().ok()?;
        let tls = tls.map_or(0, |t| t.id);
        let list = idle.get_mut(target)?;
        while let Some(at) = list.iter().rposition(|e| e.conn.tls == tls) {
            let entry = list.remove(at);
            if now.saturating_duration_since(entry.since) < self.idle_timeout
                && is_quiet(entry.conn.stream.tcp())
            {
                let mut conn = entry.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn`, idle since `now`, for the next request to `target`; connections with
    /// unread bytes are not reusable and are closed.
    pub(crate) fn put(&self, target: &Target, mut conn: Upstream, now: Instant) {
        if !conn.buf.is_empty() {
            return;
        }
        conn.buf.release_if_empty();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = match idle.get_mut(target) {
            Some(list) => list,
            None => idle.entry(target.clone()).or_default(),
        };
        let expired = list
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        list.drain(..expired);
        if list.len() < self.max_idle {
            list.push(Idle { conn, since: now });
        }
    }

    /// A new connection to `target` for `forward` (TLS when its route asks for it), within
    /// `timeout`.
    pub(crate) async fn connect(
        &self,
        target: &Target,
        forward: &Forward,
        timeout: Duration,
    ) -> Result<Upstream, UpstreamError> {
        let tls = forward.upstream_tls();
        let stream = open(target, tls, &forward.backend.name, timeout).await?;
        let tls = tls.map_or(0, |t| t.id);
        Ok(Upstream {
            stream,
            tls,
            buf: Buf::new(),
            reused: false,
        })
    }

    /// A new cleartext connection to `target`.
    #[cfg(test)]
    pub(crate) async fn connect_plain(&self, target: &Target) -> Result<Upstream, UpstreamError> {
        Ok(Upstream {
            stream: open(target, None, "", Duration::from_secs(5)).await?,
            tls: 0,
            buf: Buf::new(),
            reused: false,
        })
    }
}

/// Whether an idle connection has nothing to say: an idle upstream that became readable has
/// either closed or sent bytes nobody asked for, and is not reused either way.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_idle_connections_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Target::Addr(addr);
        let pool = Pool::new(Duration::from_secs(60), 4);

        let conn = pool.connect_plain(&target).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        pool.put(&target, conn, Instant::now());
        let again = pool
            .take(&target, None, Instant::now())
            .expect("an open idle connection is reused");
        assert!(again.reused);

        // The peer closes; once its FIN has arrived the connection goes back to the pool.
        drop(peer);
        let mut probe = [0u8; 1];
        assert_eq!(again.stream.tcp().peek(&mut probe).await.unwrap(), 0);
        pool.put(&target, again, Instant::now());
        assert!(
            pool.take(&target, None, Instant::now()).is_none(),
            "a closed connection is dropped"
        );

        let conn = pool.connect_plain(&target).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        peer.write_all(b"unexpected").await.unwrap();
        assert_eq!(conn.stream.tcp().peek(&mut probe).await.unwrap(), 1);
        pool.put(&target, conn, Instant::now());
        assert!(
            pool.take(&target, None, Instant::now()).is_none(),
            "a chatty connection is dropped"
        );
    }

    /// Makes the idle cleartext connections to `target` look `age` older than they are.
    fn age(pool: &Pool, target: &Target, age: Duration) {
        let mut idle = pool.idle.lock().unwrap();
        for entry in idle.get_mut(target).unwrap() {
            entry.since = entry.since.checked_sub(age).unwrap();
        }
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Addr(listener.local_addr().unwrap());
        let idle_timeout = Duration::from_secs(60);
        let pool = Pool::new(idle_timeout, 4);
        let conn = pool.connect_plain(&target).await.unwrap();
        let _peer = listener.accept().await.unwrap();
        pool.put(&target, conn, Instant::now());

        age(&pool, &target, idle_timeout - Duration::from_secs(1));
        let conn = pool
            .take(&target, None, Instant::now())
            .expect("not idle for long enough to expire");
        pool.put(&target, conn, Instant::now());

        age(&pool, &target, idle_timeout);
        assert!(
            pool.take(&target, None, Instant::now()).is_none(),
            "idle past the timeout"
        );
    }

    #[tokio::test]
    async fn expired_connections_are_dropped_when_another_is_put() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Addr(listener.local_addr().unwrap());
        let idle_timeout = Duration::from_secs(60);
        let pool = Pool::new(idle_timeout, 1);
        let old = pool.connect_plain(&target).await.unwrap();
        let _old_peer = listener.accept().await.unwrap();
        pool.put(&target, old, Instant::now());
        age(&pool, &target, idle_timeout);

        // With room for one idle connection, the fresh one takes the expired one's place.
        let fresh = pool.connect_plain(&target).await.unwrap();
        let fresh_addr = fresh.stream.tcp().local_addr().unwrap();
        let _fresh_peer = listener.accept().await.unwrap();
        pool.put(&target, fresh, Instant::now());
        let taken = pool
            .take(&target, None, Instant::now())
            .expect("the fresh connection is kept");
        assert_eq!(taken.stream.tcp().local_addr().unwrap(), fresh_addr);
    }
}
