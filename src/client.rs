//! `berth images`: a client of the daemon's CRI ImageService and Transfer service.
use anyhow::{bail, Context, Result};
use berth::cri::transfer::proto::{self, pull_event::Event, transfer_client::TransferClient};
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(clap::Subcommand)]
pub enum ImagesCommand {
    /// List images.
    Ls,
    /// Pull an image, with progress.
    Pull {
        image: String,
        /// Registry credentials as USER:PASSWORD.
        #[arg(long)]
        creds: Option<String>,
    },
    /// Remove images (by ID, name:tag or name@digest).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an OCI layout tar or a docker-archive tar (`docker save`).
    Import {
        file: PathBuf,
        /// Repository name for OCI layouts that name their images only by tag.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Keep printing new lines until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines since a time (RFC 3339) or for a duration back (10s, 5m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Stop after this many bytes.
    #[arg(long)]
    limit_bytes: Option<u64>,
    /// Container ID (or a unique prefix).
    container: String,
}

/// `berth logs`: find the container's log through the CRI and read it.
pub async fn logs(socket: &Path, args: LogsArgs) -> Result<()> {
    use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
    use std::io::Write;
    let rt = RuntimeServiceClient::new(connect(socket).await?);
    let status = |mut rt: RuntimeServiceClient<Channel>, id: String| async move {
        rt.container_status(cri::ContainerStatusRequest { container_id: id, verbose: false }).await.map(|r| r.into_inner().status)
    };
    let st = status(rt.clone(), args.container.clone()).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?.context("no status")?;
    if st.log_path.is_empty() {
        bail!("container {} has no log path", st.id);
    }
    let since_ns = match &args.since {
        Some(s) => Some(berth::logs::parse_since(s, berth::runtime::state::now_ns()).with_context(|| format!("--since {s}: not a time or duration"))?),
        None => None,
    };
    let opts = berth::logs::LogOptions { follow: args.follow, tail: args.tail, since_ns, timestamps: args.timestamps, limit_bytes: args.limit_bytes };
    let id = st.id.clone();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let write = |l: &berth::logs::LogLine| {
        let bytes = l.render(opts.timestamps);
        let ok = match l.stream {
            berth::logs::LogStream::Stdout => out.write_all(&bytes).and_then(|_| out.flush()),
            berth::logs::LogStream::Stderr => err.write_all(&bytes),
        };
        ok.is_ok()
    };
    let running = || {
        let rt = rt.clone();
        let id = id.clone();
        async move { matches!(status(rt, id).await, Ok(Some(s)) if s.state == cri::ContainerState::ContainerRunning as i32) }
    };
    berth::logs::read_logs(Path::new(&st.log_path), &opts, write, running).await.with_context(|| format!("reading {}", st.log_path))?;
    Ok(())
}

/// A gRPC channel over the daemon's unix socket.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://berth.sock")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {} (is `berth runtime` running?)", socket.display()))
}

pub async fn run(socket: &Path, cmd: ImagesCommand) -> Result<()> {
    let channel = connect(socket).await?;
    match cmd {
        ImagesCommand::Ls => list(ImageServiceClient::new(channel)).await,
        ImagesCommand::Pull { image, creds } => pull(TransferClient::new(channel), image, creds).await,
        ImagesCommand::Rm { images } => remove(ImageServiceClient::new(channel), images).await,
        ImagesCommand::Import { file, name } => import(TransferClient::new(channel), file, name).await,
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

async fn list(mut c: ImageServiceClient<Channel>) -> Result<()> {
    let images = c.list_images(cri::ListImagesRequest::default()).await?.into_inner().images;
    println!("{:<50} {:<20} {:<15} {:>10}", "IMAGE", "TAG", "IMAGE ID", "SIZE");
    for i in images {
        let id = i.id.trim_start_matches("sha256:").chars().take(13).collect::<String>();
        let rows: Vec<(String, String)> = if i.repo_tags.is_empty() {
            let name = i.repo_digests.first().and_then(|d| d.split('@').next()).unwrap_or("<none>");
            vec![(name.to_string(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((n, tag)) if !tag.contains('/') => (n.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (name, tag) in rows {
            println!("{:<50} {:<20} {:<15} {:>10}", name, tag, id, human(i.size));
        }
    }
    Ok(())
}

async fn pull(mut c: TransferClient<Channel>, image: String, creds: Option<String>) -> Result<()> {
    let (username, password) = match creds {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => bail!("--creds wants USER:PASSWORD"),
        },
        None => Default::default(),
    };
    let mut stream = c.pull(proto::PullRequest { image: image.clone(), username, password }).await?.into_inner();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:.bold} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}")?;
    let mut layers: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(Event::Resolved(r)) => {
                bars.println(format!("{image}: {} layers, {}", r.layers, human(r.total_bytes)))?;
            }
            Some(Event::Layer(l)) => {
                let bar = layers.entry(l.digest.clone()).or_insert_with(|| {
                    let b = bars.add(ProgressBar::new(l.total));
                    b.set_style(style.clone());
                    b.set_prefix(l.digest.trim_start_matches("sha256:").chars().take(12).collect::<String>());
                    b
                });
                bar.set_position(l.done);
                match l.state.as_str() {
                    "done" => bar.finish_with_message("done"),
                    "exists" => bar.finish_with_message("already present"),
                    _ => {}
                }
            }
            Some(Event::Done(d)) => {
                bars.clear()?;
                println!("pulled {image}");
                println!("  id:      {}", d.image_id);
                for t in d.repo_tags {
                    println!("  tag:     {t}");
                }
                for r in d.repo_digests {
                    println!("  digest:  {r}");
                }
            }
            None => {}
        }
    }
    Ok(())
}

async fn remove(mut c: ImageServiceClient<Channel>, images: Vec<String>) -> Result<()> {
    for i in images {
        let spec = Some(cri::ImageSpec { image: i.clone(), ..Default::default() });
        let status = c.image_status(cri::ImageStatusRequest { image: spec.clone(), verbose: false }).await?.into_inner();
        if status.image.is_none() {
            bail!("image {i:?} not found");
        }
        c.remove_image(cri::RemoveImageRequest { image: spec }).await?;
        println!("removed {i}");
    }
    Ok(())
}

async fn import(mut c: TransferClient<Channel>, file: PathBuf, name: Option<String>) -> Result<()> {
    let path = std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
    let resp = c.import(proto::ImportRequest { path: path.display().to_string(), name: name.unwrap_or_default() }).await?.into_inner();
    for i in resp.images {
        println!("imported {} {}", i.id, i.repo_tags.join(" "));
    }
    Ok(())
}
