//! Ingress status: the leader writes `status.loadBalancer.ingress` of every Ingress served, from
//! `--publish-status-address` or from the addresses of `--publish-service`, and takes its
//! addresses out of Ingresses it no longer serves. It works from the snapshot and the served set
//! of the translation that was published, so what `kubectl` shows matches what is served, and
//! writes only what differs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::networking::v1::{
    IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use model::k8s_openapi::api::core::v1::Service;
use model::{Ingress, ObjectKey, Snapshot};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::{Retry, Task};

/// Where the addresses written into status come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusConfig {
    /// Fixed addresses (`--publish-status-address`): IPs, or host names.
    pub addresses: Vec<String>,
    /// A Service whose load-balancer addresses (or external IPs) are published
    /// (`--publish-service`).
    pub publish_service: Option<ObjectKey>,
}

impl StatusConfig {
    /// Whether status is written at all.
    pub fn enabled(&self) -> bool {
        !self.addresses.is_empty() || self.publish_service.is_some()
    }
}

/// What was published: the objects read and the Ingresses the table serves.
#[derive(Clone, Debug)]
pub struct Served {
    /// The snapshot translated (newer for status-only changes, which need no translation).
    pub snapshot: Arc<Snapshot>,
    /// The Ingresses of our class that were translated.
    pub ingresses: Arc<BTreeSet<ObjectKey>>,
    /// Everything translation said.
    pub diagnostics: Arc<Vec<model::Diagnostic>>,
}

/// The addresses to publish (`None`: not known yet).
type Addresses = Option<Vec<IngressLoadBalancerIngress>>;

/// One status entry as compared: an IP or a host name.
type Address = (Option<String>, Option<String>);

fn entry(address: &str) -> IngressLoadBalancerIngress {
    if address.parse::<IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(address.to_string()),
            ..Default::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(address.to_string()),
            ..Default::default()
        }
    }
}

/// The addresses a Service offers, like ingress-nginx: a LoadBalancer's ingress points and
/// external IPs; an ExternalName's name; otherwise its external IPs, or its cluster IP.
pub fn service_addresses(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let spec = service.spec.clone().unwrap_or_default();
    let external: Vec<IngressLoadBalancerIngress> = spec
        .external_ips
        .iter()
        .flatten()
        .map(|ip| entry(ip))
        .collect();
    let mut out: Vec<IngressLoadBalancerIngress> = match spec.type_.as_deref() {
        Some("LoadBalancer") => {
            let lb = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref());
            let mut list: Vec<IngressLoadBalancerIngress> = lb
                .into_iter()
                .flatten()
                .filter_map(|i| match (&i.ip, &i.hostname) {
                    (Some(ip), _) => Some(entry(ip)),
                    (None, Some(host)) => Some(entry(host)),
                    (None, None) => None,
                })
                .collect();
            list.extend(external);
            list
        }
        Some("ExternalName") => spec.external_name.iter().map(|n| entry(n)).collect(),
        _ if !external.is_empty() => external,
        _ => spec
            .cluster_ip
            .iter()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(|ip| entry(ip))
            .collect(),
    };
    sort(&mut out);
    out.dedup_by_key(|e| address(e));
    out
}

/// IPs first, then host names.
fn sort(list: &mut [IngressLoadBalancerIngress]) {
    list.sort_by_key(|e| (e.ip.is_none(), address(e)));
}

fn address(e: &IngressLoadBalancerIngress) -> Address {
    (e.ip.clone(), e.hostname.clone())
}

fn current(ingress: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
}

fn same(a: &[IngressLoadBalancerIngress], b: &[IngressLoadBalancerIngress]) -> bool {
    let set = |l: &[IngressLoadBalancerIngress]| l.iter().map(address).collect::<BTreeSet<_>>();
    a.len() == b.len() && set(a) == set(b)
}

/// The status `ingress` should have: `ours` if served, otherwise what it has without `ours`.
/// `None`: it has that already.
fn wanted(
    ingress: &Ingress,
    served: bool,
    ours: &[IngressLoadBalancerIngress],
) -> Option<Vec<IngressLoadBalancerIngress>> {
    let now = current(ingress);
    let want = if served {
        ours.to_vec()
    } else {
        let mine: BTreeSet<Address> = ours.iter().map(address).collect();
        now.iter()
            .filter(|e| !mine.contains(&address(e)))
            .cloned()
            .collect()
    };
    (!same(&now, &want)).then_some(want)
}

/// The running status writer.
pub struct StatusWriter {
    _tasks: Vec<Task>,
    api: Client,
    addresses: watch::Receiver<Option<Vec<IngressLoadBalancerIngress>>>,
    served: watch::Receiver<Option<Served>>,
}

impl StatusWriter {
    /// Starts writing status whenever this replica leads (on the current tokio runtime).
    pub fn start(
        client: Client,
        config: StatusConfig,
        served: watch::Receiver<Option<Served>>,
        leading: watch::Receiver<bool>,
        retry: Retry,
    ) -> Self {
        let mut tasks = Vec::new();
        let (tx, addresses) = watch::channel(None);
        let fixed = match &config.publish_service {
            Some(key) => {
                tasks.push(Task::spawn(Box::pin(follow_service(
                    client.clone(),
                    key.clone(),
                    tx,
                    retry,
                ))));
                None
            }
            None => {
                let mut fixed: Vec<IngressLoadBalancerIngress> =
                    config.addresses.iter().map(|a| entry(a)).collect();
                sort(&mut fixed);
                tx.send_replace(Some(fixed));
                // Kept by the loop: the addresses never change, but the channel stays open.
                Some(tx)
            }
        };
        tasks.push(Task::spawn(Box::pin(write_loop(
            client.clone(),
            served.clone(),
            leading,
            (addresses.clone(), fixed),
            retry,
        ))));
        StatusWriter {
            _tasks: tasks,
            api: client,
            addresses,
            served,
        }
    }

    /// Stops writing; with `clear`, first takes our addresses out of every Ingress served (for
    /// `--update-status-on-shutdown`; the caller checks that this replica leads).
    pub async fn stop(self, clear: bool) {
        let StatusWriter {
            _tasks,
            api,
            addresses,
            served,
        } = self;
        drop(_tasks);
        if !clear {
            return;
        }
        let (Some(ours), Some(served)) = (addresses.borrow().clone(), served.borrow().clone())
        else {
            return;
        };
        // The snapshot may not show our latest writes yet: read each Ingress afresh.
        for key in served.ingresses.iter() {
            let ingresses: Api<Ingress> = Api::namespaced(api.clone(), &key.namespace);
            let result = match ingresses.get(&key.name).await {
                Ok(fresh) => write(&api, key, &fresh, false, &ours).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(ingress = %key, error = %e, "cannot clear Ingress status");
            }
        }
    }
}

/// Keeps `tx` at the addresses of Service `key`.
async fn follow_service(
    client: Client,
    key: ObjectKey,
    tx: watch::Sender<Option<Vec<IngressLoadBalancerIngress>>>,
    retry: Retry,
) {
    let api: Api<Service> = Api::namespaced(client, &key.namespace);
    let mut stream = watcher::watch_object(api, &key.name)
        .backoff(Backoff::new(retry.min, retry.max))
        .boxed();
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(service) => {
                failing = false;
                let list = service.as_ref().map(service_addresses).unwrap_or_default();
                tx.send_if_modified(|old| {
                    let changed = old.as_ref().is_none_or(|o| !same(o, &list));
                    if changed {
                        *old = Some(list);
                    }
                    changed
                });
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(service = %key, error = %e, "cannot read --publish-service; retrying");
            }
            Err(_) => {}
        }
    }
}

/// Ingresses already written for one version of them: the watch has not shown the new version
/// yet, so their status in the snapshot is not news.
type Attempted = HashMap<ObjectKey, (Option<String>, Vec<Address>)>;

async fn write_loop(
    client: Client,
    mut served: watch::Receiver<Option<Served>>,
    mut leading: watch::Receiver<bool>,
    (mut addresses, _fixed): (watch::Receiver<Addresses>, Option<watch::Sender<Addresses>>),
    retry: Retry,
) {
    let mut attempted = Attempted::new();
    let mut backoff = Backoff::new(retry.min, retry.max);
    let mut failing = false;
    let mut again: Option<Duration> = None;
    loop {
        let wait = async {
            match again {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = served.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            r = addresses.changed() => if r.is_err() { return },
            () = wait => {}
        }
        if !*leading.borrow_and_update() {
            attempted.clear();
            again = None;
            continue;
        }
        let (Some(current), Some(ours)) = (
            served.borrow_and_update().clone(),
            addresses.borrow_and_update().clone(),
        ) else {
            continue;
        };
        again = match sync(&client, &current, &ours, &mut attempted).await {
            Ok(()) => {
                use kube::runtime::utils::Backoff as _;
                if failing {
                    tracing::info!("Ingress status written again");
                    failing = false;
                }
                backoff.reset();
                None
            }
            Err((key, error)) => {
                // Once per outage, not once per retry.
                if !failing {
                    tracing::warn!(ingress = %key, %error, "cannot write Ingress status; retrying with backoff");
                    failing = true;
                }
                backoff.next()
            }
        };
    }
}

/// Brings every Ingress's status in line; on failure, returns the first Ingress that could not be
/// written and why (retry later). A round stops at the first failure to reach the API server.
async fn sync(
    client: &Client,
    served: &Served,
    ours: &[IngressLoadBalancerIngress],
    attempted: &mut Attempted,
) -> Result<(), (ObjectKey, kube::Error)> {
    let mut failed = None;
    attempted.retain(|key, _| served.snapshot.ingresses.contains_key(key));
    for (key, ingress) in &served.snapshot.ingresses {
        let is_served = served.ingresses.contains(key);
        let Some(want) = wanted(ingress, is_served, ours) else {
            attempted.remove(key);
            continue;
        };
        let version = ingress.metadata.resource_version.clone();
        let mark = (
            version.clone(),
            want.iter().map(address).collect::<Vec<_>>(),
        );
        if attempted.get(key) == Some(&mark) {
            continue;
        }
        match write(client, key, ingress, is_served, ours).await {
            Ok(()) => {
                attempted.insert(key.clone(), mark);
            }
            Err(e) => {
                let unreachable = !matches!(e, kube::Error::Api(_));
                tracing::debug!(ingress = %key, error = %e, "cannot write Ingress status");
                failed.get_or_insert((key.clone(), e));
                if unreachable {
                    break;
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Writes one Ingress's status; on a conflict, reads it again and retries once.
async fn write(
    client: &Client,
    key: &ObjectKey,
    ingress: &Ingress,
    served: bool,
    ours: &[IngressLoadBalancerIngress],
) -> Result<(), kube::Error> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
    let mut object = ingress.clone();
    for _ in 0..2 {
        let Some(want) = wanted(&object, served, ours) else {
            return Ok(());
        };
        object.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: (!want.is_empty()).then_some(want),
            }),
        });
        match api
            .replace_status(&key.name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => {
                tracing::debug!(ingress = %key, "wrote status");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                object = api.get(&key.name).await?;
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    fn service(type_: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some("10.96.0.10".into()),
                external_name: Some("edge.example.com".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![
                        LoadBalancerIngress {
                            ip: Some("198.51.100.2".into()),
                            ..Default::default()
                        },
                        LoadBalancerIngress {
                            hostname: Some("lb.example.com".into()),
                            ..Default::default()
                        },
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(list: &[IngressLoadBalancerIngress]) -> Vec<String> {
        list.iter()
            .map(|e| e.ip.clone().or(e.hostname.clone()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn services_offer_addresses_by_type() {
        assert_eq!(
            names(&service_addresses(&service("LoadBalancer"))),
            ["198.51.100.2", "lb.example.com"]
        );
        assert_eq!(
            names(&service_addresses(&service("ExternalName"))),
            ["edge.example.com"]
        );
        assert_eq!(
            names(&service_addresses(&service("ClusterIP"))),
            ["10.96.0.10"]
        );
        let mut node_port = service("NodePort");
        if let Some(spec) = node_port.spec.as_mut() {
            spec.external_ips = Some(vec!["203.0.113.5".into()]);
        }
        assert_eq!(names(&service_addresses(&node_port)), ["203.0.113.5"]);
    }

    #[test]
    fn only_our_entries_are_added_or_taken_out() {
        let ours = vec![entry("203.0.113.7")];
        let mut ingress = Ingress::default();
        assert_eq!(
            wanted(&ingress, true, &ours).map(|w| names(&w)),
            Some(vec!["203.0.113.7".to_string()])
        );
        assert_eq!(
            wanted(&ingress, false, &ours),
            None,
            "nothing of ours to take out"
        );
        ingress.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(vec![entry("203.0.113.7"), entry("other.example.com")]),
            }),
        });
        assert_eq!(
            wanted(&ingress, false, &ours).map(|w| names(&w)),
            Some(vec!["other.example.com".to_string()])
        );
        assert_eq!(
            wanted(&ingress, true, &ours).map(|w| names(&w)),
            Some(vec!["203.0.113.7".to_string()])
        );
    }
}
