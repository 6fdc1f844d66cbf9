//! How long a broken watch waits before it tries again.

use std::time::Duration;

/// Exponential backoff with jitter, from `min` doubling up to `max`; reset by the watcher on
/// every successful event.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// Waits from `min` doubling to at most `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64 | 1);
        Backoff {
            min,
            max: max.max(min),
            next: min,
            seed,
        }
    }

    /// A cheap pseudo-random fraction in `[0, 1)` (xorshift), to spread retries of many replicas.
    fn fraction(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to a quarter either way.
        let jitter = 0.75 + self.fraction() / 2.0;
        Some(base.mul_f64(jitter).min(self.max))
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let waits: Vec<Duration> = (&mut b).take(6).collect();
        assert!(waits[0] >= Duration::from_millis(75) && waits[0] <= Duration::from_millis(125));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(700)));
        assert!(waits[5] >= Duration::from_millis(525));
        b.reset();
        assert!(b.next().is_some_and(|w| w <= Duration::from_millis(125)));
    }
}
