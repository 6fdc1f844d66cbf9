//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder
//! renews the Lease every retry period; the others watch its record and take it over once it
//! has not changed for a whole lease duration (measured on their own clock, so clock skew between
//! nodes does not matter). A leader that cannot renew within the renew deadline stops leading
//! before anyone else can start. Only the leader writes status and events; every replica serves.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use model::ObjectKey;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Task;

/// How to elect.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The Lease (namespace and name: `POD_NAMESPACE` / `--election-id`).
    pub lease: ObjectKey,
    /// Who this replica is (`POD_NAME`).
    pub identity: String,
    /// How long a Lease that is not renewed stays with its holder.
    pub lease_duration: Duration,
    /// How long a leader goes on leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(lease: ObjectKey, identity: String) -> Self {
        ElectionConfig {
            lease,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The Lease record as last seen, and when (on this replica's clock) it last changed.
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>, Option<String>)>,
    at: Instant,
}

/// What one attempt found.
enum Attempt {
    /// This replica holds the Lease (acquired or renewed now).
    Leading,
    /// Someone else holds it.
    Following,
}

/// One replica's part in an election: tries to acquire and then renew the Lease until stopped.
pub struct Election {
    _task: Task,
    leading: watch::Receiver<bool>,
    api: Api<Lease>,
    config: ElectionConfig,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn record(lease: &Lease) -> (Option<String>, Option<MicroTime>, Option<String>) {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.clone()),
        spec.and_then(|s| s.renew_time.clone()),
        lease.metadata.resource_version.clone(),
    )
}

impl Election {
    /// Starts taking part (on the current tokio runtime).
    pub fn start(client: Client, config: ElectionConfig) -> Self {
        let api: Api<Lease> = Api::namespaced(client, &config.lease.namespace);
        let (tx, leading) = watch::channel(false);
        let task = Task::spawn(Box::pin(run(api.clone(), config.clone(), tx)));
        Election {
            _task: task,
            leading,
            api,
            config,
        }
    }

    /// Whether this replica leads now; changes as leadership comes and goes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops taking part; if this replica holds the Lease, gives it up so another replica can
    /// take over at once instead of after the lease duration.
    pub async fn release(self) {
        let was_leading = *self.leading.borrow();
        drop(self._task);
        if !was_leading {
            return;
        }
        let Ok(mut lease) = self.api.get(&self.config.lease.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.config.lease.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.lease, "gave up leadership"),
            Err(e) => tracing::debug!(error = %e, "could not give up the Lease"),
        }
    }
}

async fn run(api: Api<Lease>, config: ElectionConfig, leading: watch::Sender<bool>) {
    let mut observed = Observed {
        record: None,
        at: Instant::now(),
    };
    let mut renewed: Option<Instant> = None;
    let mut failing = false;
    loop {
        match attempt(&api, &config, &mut observed).await {
            Ok(Attempt::Leading) => {
                renewed = Some(Instant::now());
                failing = false;
                if !leading.send_replace(true) {
                    tracing::info!(lease = %config.lease, identity = %config.identity, "became the leader");
                }
            }
            Ok(Attempt::Following) => {
                failing = false;
                renewed = None;
                if leading.send_replace(false) {
                    tracing::info!(lease = %config.lease, "another replica leads now");
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(lease = %config.lease, error = %e, "cannot reach the Lease; retrying");
                    failing = true;
                }
                let expired = renewed.is_none_or(|at| at.elapsed() >= config.renew_deadline);
                if expired && leading.send_replace(false) {
                    tracing::warn!(lease = %config.lease, "could not renew the Lease in time; no longer the leader");
                }
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

fn lease_seconds(config: &ElectionConfig) -> i32 {
    i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Acquires or renews the Lease once.
async fn attempt(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Observed,
) -> Result<Attempt, kube::Error> {
    let name = &config.lease.name;
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(config.lease.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(config)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Attempt::Following),
            Err(e) => Err(e),
        };
    };
    let seen = record(&lease);
    if observed.record.as_ref() != Some(&seen) {
        observed.record = Some(seen);
        observed.at = Instant::now();
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let ours = holder.as_deref() == Some(config.identity.as_str());
    if !ours {
        let expired = holder.is_none() || observed.at.elapsed() >= config.lease_duration;
        if !expired {
            return Ok(Attempt::Following);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(lease_seconds(config));
    spec.renew_time = Some(now());
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(updated) => {
            observed.record = Some(record(&updated));
            observed.at = Instant::now();
            Ok(Attempt::Leading)
        }
        // Someone else wrote the Lease first: they lead (or renewed) for now.
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Attempt::Following),
        Err(e) => Err(e),
    }
}
