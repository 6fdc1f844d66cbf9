//! Command-line flags for reading from a Kubernetes cluster, and the choice between a cluster
//! and manifest files.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use portcullis::cluster::ClusterSettings;
use source::cluster::{Access, ClusterConfig, ClusterSource};

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

    /// What to watch.
    pub fn source_config(&self) -> ClusterConfig {
        ClusterConfig {
            namespace: self.watch_namespace.clone(),
            ..ClusterConfig::default()
        }
    }
}

/// Cluster-mode flags of `run`.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl ClusterArgs {
    /// The cluster-mode settings for `access`.
    pub fn settings(&self, access: Access) -> anyhow::Result<ClusterSettings> {
        Ok(ClusterSettings {
            access,
            source: self.connect.source_config(),
        })
    }
}

/// Reads every object once (for `check` and `route`).
pub fn read_once(
    connect: &ConnectArgs,
    access: Access,
) -> anyhow::Result<std::sync::Arc<model::Snapshot>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = source::cluster::connect(&access).await?;
        let source = ClusterSource::start(client, connect.source_config());
        Ok(source.first(Duration::from_secs(30)).await?)
    })
}
