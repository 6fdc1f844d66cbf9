//! Command-line flags for reading from a Kubernetes cluster, and the choice between a cluster
//! and manifest files.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use model::ObjectKey;
use portcullis::cluster::ClusterSettings;
use source::cluster::{
    Access, ClusterConfig, ClusterSource, ElectionConfig, EventConfig, StatusConfig,
};

/// How to reach a cluster: shared by `run`, `check` and `route`.
#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Read from the Kubernetes API with this kubeconfig (default: $KUBECONFIG; inside a pod, the
    /// ServiceAccount). An alternative to manifest paths.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Only read Ingresses, Services, EndpointSlices and Secrets of this namespace (default: all).
    #[arg(long, value_name = "NS")]
    pub watch_namespace: Option<String>,
}

/// Where the objects come from.
pub enum Input {
    /// Manifest files and folders.
    Manifests(Vec<PathBuf>),
    /// A Kubernetes API server.
    Cluster(Access),
}

impl ConnectArgs {
    /// Chooses between `manifests` and a cluster: an explicit `--kubeconfig` with manifests is an
    /// error; with neither, `KUBECONFIG` and then the in-cluster configuration are used.
    pub fn input(&self, manifests: Vec<PathBuf>, what: &str) -> anyhow::Result<Input> {
        match (manifests.is_empty(), &self.kubeconfig) {
            (false, Some(_)) => anyhow::bail!(
                "{what} and --kubeconfig are alternatives: read manifests or a cluster, not both"
            ),
            (false, None) => Ok(Input::Manifests(manifests)),
            (true, Some(path)) => Ok(Input::Cluster(Access::Kubeconfig(path.clone()))),
            (true, None) => {
                let from_env = std::env::var_os("KUBECONFIG")
                    .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()));
                if let Some(path) = from_env {
                    Ok(Input::Cluster(Access::Kubeconfig(path)))
                } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                    Ok(Input::Cluster(Access::InCluster))
                } else {
                    anyhow::bail!(
                        "nothing to read: give {what}, or --kubeconfig PATH (or set KUBECONFIG), \
                         or run inside a cluster"
                    )
                }
            }
        }
    }

    /// What to watch, for annotations under `prefix`.
    pub fn source_config(&self, prefix: &str) -> ClusterConfig {
        ClusterConfig {
            namespace: self.watch_namespace.clone(),
            annotation_prefix: prefix.to_string(),
            ..ClusterConfig::default()
        }
    }
}

fn parse_service(s: &str) -> Result<ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectKey::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// Cluster-mode flags of `run`.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Write these addresses (IPs or host names) into status.loadBalancer of every Ingress
    /// served.
    #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,
    /// Write the load-balancer addresses (or external IPs) of this Service into status of every
    /// Ingress served.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_service)]
    pub publish_service: Option<ObjectKey>,
    /// On shutdown, take our addresses out of the status of the Ingresses served (default: leave
    /// them in place, as the next replica or version writes the same).
    #[arg(long)]
    pub update_status_on_shutdown: bool,
    /// Name of the Lease (in $POD_NAMESPACE) that elects the replica writing status and events.
    #[arg(long, value_name = "NAME", default_value = "portcullis-leader")]
    pub election_id: String,
}

/// This replica's name in the election: `$POD_NAME`, else the host name, else the process id.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("portcullis-{}", std::process::id()))
}

impl ClusterArgs {
    /// The cluster-mode settings for `access`.
    pub fn settings(&self, access: Access) -> anyhow::Result<ClusterSettings> {
        anyhow::ensure!(
            self.publish_status_address.is_empty() || self.publish_service.is_none(),
            "--publish-status-address and --publish-service are alternatives: give one"
        );
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_default();
        Ok(ClusterSettings {
            access,
            // The prefix follows --annotations-prefix (set when started).
            source: self.connect.source_config(""),
            status: StatusConfig {
                addresses: self
                    .publish_status_address
                    .iter()
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect(),
                publish_service: self.publish_service.clone(),
            },
            update_status_on_shutdown: self.update_status_on_shutdown,
            election: ElectionConfig::new(ObjectKey::new(namespace, &self.election_id), identity()),
            events: EventConfig::new(String::new(), String::new()),
        })
    }
}

/// Reads every object once (for `check` and `route`), with the objects annotations under
/// `prefix` name.
pub fn read_once(
    connect: &ConnectArgs,
    access: Access,
    prefix: &str,
) -> anyhow::Result<std::sync::Arc<model::Snapshot>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = source::cluster::connect(&access).await?;
        let source = ClusterSource::start(client, connect.source_config(prefix));
        Ok(source.first(Duration::from_secs(30)).await?)
    })
}
