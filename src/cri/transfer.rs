//! Berth's own Transfer service (proto/berth/images/v1): pulls with progress events and
//! imports of image archives, used by `berth images`.
use crate::image::pull::{LayerState, PullEvent};
use crate::image::registry::Credentials;
use crate::image::store::ImageStore;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

pub mod proto {
    tonic::include_proto!("berth.images.v1");
}
use proto::transfer_server::Transfer;

pub struct TransferService {
    store: Arc<ImageStore>,
}

impl TransferService {
    pub fn new(store: Arc<ImageStore>) -> Self {
        TransferService { store }
    }
}

fn to_proto(ev: PullEvent) -> proto::PullEvent {
    use proto::pull_event::Event;
    let event = match ev {
        PullEvent::Resolved { layers, total } => Event::Resolved(proto::Resolved { layers: layers as u32, total_bytes: total }),
        PullEvent::Layer { digest, done, total, state } => Event::Layer(proto::LayerProgress {
            digest,
            done,
            total,
            state: match state {
                LayerState::Downloading => "downloading",
                LayerState::Exists => "exists",
                LayerState::Done => "done",
            }
            .into(),
        }),
    };
    proto::PullEvent { event: Some(event) }
}

type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::PullEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Transfer for TransferService {
    type PullStream = EventStream;

    async fn pull(&self, request: Request<proto::PullRequest>) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("transfer", rpc = "pull", image = %req.image);
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<proto::PullEvent, Status>>(64);
        let store = self.store.clone();
        let creds = Credentials { username: req.username, password: req.password, ..Default::default() };
        tokio::spawn(
            async move {
                let pull = store.pull(&req.image, &creds, Some(events_tx));
                tokio::pin!(pull);
                let result = loop {
                    tokio::select! {
                        r = &mut pull => break r,
                        Some(ev) = events_rx.recv() => { let _ = out_tx.send(Ok(to_proto(ev))).await; }
                    }
                };
                while let Ok(ev) = events_rx.try_recv() {
                    let _ = out_tx.send(Ok(to_proto(ev))).await;
                }
                let last = match result {
                    Ok(rec) => Ok(proto::PullEvent {
                        event: Some(proto::pull_event::Event::Done(proto::PullDone {
                            image_id: rec.id.to_string(),
                            repo_tags: rec.repo_tags,
                            repo_digests: rec.repo_digests,
                        })),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "pull failed");
                        Err(Status::from(e))
                    }
                };
                let _ = out_tx.send(last).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }

    async fn import(&self, request: Request<proto::ImportRequest>) -> Result<Response<proto::ImportResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("transfer", rpc = "import", path = %req.path);
        async move {
            let path = Path::new(&req.path);
            if !path.is_absolute() {
                return Err(Status::invalid_argument("import path must be absolute"));
            }
            let name = Some(req.name).filter(|n| !n.is_empty());
            let recs = self.store.import(path, name).await.map_err(|e| {
                tracing::warn!(error = %e, "import failed");
                Status::from(e)
            })?;
            Ok(Response::new(proto::ImportResponse {
                images: recs.into_iter().map(|r| proto::ImportedImage { id: r.id.to_string(), repo_tags: r.repo_tags }).collect(),
            }))
        }
        .instrument(span)
        .await
    }
}
