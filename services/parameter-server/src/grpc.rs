//! gRPC handlers: convert wire messages to domain calls and back (with the
//! `From`/`TryFrom` impls of `rwp-proto`), nothing else. What is transport
//! stays here: chunking, streams, trace context in metadata. Errors map to
//! `tonic::Status` in one place (`error.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rwp_proto::v1::{self, job_service_server::JobService, worker_service_server::WorkerService};
use rwp_spec::payload::{self, PayloadAssembler, PushMessage};
use rwp_spec::sweep::SweepSpec;
use rwp_spec::work::{EvalPush, InspectionPush};
use rwp_spec::{Extension, JobSpec, ModelFile};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::coordinator::{Coordinator, Leased, PushAdmission, PushHeader, Snapshot};
use crate::domain::{JobEvent, Principal, SubmitOptions};
use crate::error::ServerError;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A weights version as the chunks FetchWeights and the Tasks stream send.
fn weight_chunks(snapshot: &Snapshot, size: usize) -> impl Iterator<Item = v1::WeightsChunk> + '_ {
    let total = snapshot.bytes.len() as u64;
    chunks(&snapshot.bytes, size).map(move |(offset, data)| v1::WeightsChunk {
        version: snapshot.version,
        total_bytes: total,
        offset,
        data,
    })
}

/// Offer parts a Tasks stream buffers before the worker reads them.
const OFFER_BUFFER: usize = 8;

/// One worker's Tasks stream: each Ready is answered by one offer, and the
/// lease of the last offer is given back when the stream ends first.
struct TaskStream {
    coordinator: Arc<Coordinator>,
    offers: tokio::sync::mpsc::Sender<Result<v1::Offer, Status>>,
    worker: Option<String>,
    /// The lease of the latest offer: finished once the worker says Ready again.
    held: Option<String>,
}

impl TaskStream {
    async fn serve(&mut self, incoming: &mut Streaming<v1::WorkerReady>) -> Result<(), Status> {
        let mut stopping = self.coordinator.stopping();
        while let Some(ready) = incoming.message().await? {
            match &self.worker {
                None => self.worker = Some(ready.worker_id.clone()),
                Some(worker) if *worker != ready.worker_id => {
                    return Err(Status::invalid_argument(format!(
                        "worker_id {} on the stream of worker {worker}",
                        ready.worker_id
                    )))
                }
                Some(_) => {}
            }
            // Ready again: the worker is done with its last task.
            self.held = None;
            let holds: std::collections::HashSet<(String, u64)> =
                ready.holds.into_iter().map(|h| (h.job_id, h.version)).collect();
            let leased = tokio::select! {
                leased = self.lease_for(&ready.worker_id) => leased?,
                // The worker went away while waiting for work.
                () = self.offers.closed() => return Ok(()),
                // Between tasks: the worker holds none, nothing is lost.
                _ = stopping.wait_for(|stopping| *stopping) => {
                    return Err(Status::unavailable("the server is shutting down"))
                }
            };
            self.offer(leased, &holds).await?;
        }
        Ok(())
    }

    /// Waits (as long as it takes) for the worker's next task.
    async fn lease_for(&self, worker: &str) -> Result<Leased, Status> {
        loop {
            if let Some(leased) = self.coordinator.lease(worker, MAX_LEASE_WAIT).await? {
                return Ok(leased);
            }
        }
    }

    async fn offer(&mut self, leased: Leased, holds: &std::collections::HashSet<(String, u64)>) -> Result<(), Status> {
        use v1::offer::Part;
        let send = |part| v1::Offer { part: Some(part) };
        match leased {
            Leased::Inspection(inspection) => {
                self.held = Some(inspection.lease_id.clone());
                self.send(send(Part::Inspection((*inspection).into()))).await
            }
            Leased::Task(task) => {
                let (job, version) = (task.leased.job_id.clone(), task.leased.work.version());
                self.held = Some(task.leased.lease_id.clone());
                let snapshot = if holds.contains(&(job.clone(), version)) {
                    None
                } else {
                    Some(self.coordinator.snapshot(&job, version)?)
                };
                let offered = v1::OfferedTask {
                    trace_context: rwp_telemetry::context_map(&task.trace).into_iter().collect(),
                    task: Some(v1::Task::from(task.leased)),
                    weights_bytes: snapshot.as_ref().map_or(0, |s| s.bytes.len() as u64),
                };
                self.send(send(Part::Task(offered))).await?;
                if let Some(snapshot) = snapshot {
                    self.coordinator.count_weight_bytes(snapshot.bytes.len());
                    for chunk in weight_chunks(&snapshot, self.coordinator.chunk_bytes()) {
                        self.send(send(Part::Weights(chunk))).await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn send(&self, offer: v1::Offer) -> Result<(), Status> {
        self.offers.send(Ok(offer)).await.map_err(|_| Status::cancelled("the worker closed its task stream"))
    }

    /// The stream ended: a task the worker still held goes to another worker now.
    fn close(&mut self) {
        if let (Some(worker), Some(lease)) = (&self.worker, self.held.take()) {
            self.coordinator.stream_closed(worker, &lease);
        }
    }
}

/// Shortest time between two messages of a sweep watch.
const SWEEP_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Longest a `LeaseTask` call is held open.
const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Handlers {
    coordinator: Arc<Coordinator>,
}

impl Handlers {
    #[must_use]
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

/// The caller, as the authentication layer put it in the request.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| {
        Status::from(ServerError::Unauthenticated("the request carries no authenticated caller".to_owned()))
    })
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::from(ServerError::BadPush(e.to_string()))
}

/// A span for a client call, joined to the caller's trace when the request
/// carries one.
fn api_span<T>(name: &'static str, request: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!("rwp.api", otel.name = name, job = tracing::field::Empty);
    rwp_telemetry::set_parent_from(&span, request.metadata());
    span
}

/// Splits a shared buffer into chunks without copying.
fn chunks(bytes: &Bytes, size: usize) -> impl Iterator<Item = (u64, Bytes)> + '_ {
    (0..bytes.len().max(1))
        .step_by(size)
        .map(move |start| (start as u64, bytes.slice(start..(start + size).min(bytes.len()))))
}

#[tonic::async_trait]
impl WorkerService for Handlers {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = request.into_inner();
        let (worker_id, renew_ms) = self.coordinator.register(&r.name, &r.device);
        Ok(Response::new(v1::RegisterResponse { worker_id, renew_interval_ms: renew_ms as u32 }))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_LEASE_WAIT);
        let (response, trace) = match self.coordinator.lease(&r.worker_id, wait).await? {
            None => (v1::LeaseTaskResponse::default(), None),
            Some(Leased::Task(l)) => {
                (v1::LeaseTaskResponse { task: Some(v1::Task::from(l.leased)), inspection: None }, Some(l.trace))
            }
            Some(Leased::Inspection(i)) => (v1::LeaseTaskResponse { task: None, inspection: Some((*i).into()) }, None),
        };
        let mut response = Response::new(response);
        if let Some(span) = trace {
            rwp_telemetry::inject(&span, response.metadata_mut());
        }
        Ok(response)
    }

    type TasksStream = BoxStream<v1::Offer>;

    async fn tasks(&self, request: Request<Streaming<v1::WorkerReady>>) -> Result<Response<Self::TasksStream>, Status> {
        let mut incoming = request.into_inner();
        let (offers, outgoing) = tokio::sync::mpsc::channel(OFFER_BUFFER);
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            let mut stream = TaskStream { coordinator, offers, worker: None, held: None };
            let ended = stream.serve(&mut incoming).await;
            if let Err(status) = ended {
                let _ = stream.offers.send(Err(status)).await;
            }
            stream.close();
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(outgoing))))
    }

    async fn push_inspection(
        &self,
        request: Request<v1::PushInspectionRequest>,
    ) -> Result<Response<v1::PushInspectionResponse>, Status> {
        let push = InspectionPush::try_from(request.into_inner()).map_err(invalid)?;
        self.coordinator.push_inspection(push)?;
        Ok(Response::new(v1::PushInspectionResponse {}))
    }

    async fn renew_lease(
        &self,
        request: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::RenewLeaseResponse>, Status> {
        let r = request.into_inner();
        let deadline = self.coordinator.renew(&r.worker_id, &r.lease_id)?;
        Ok(Response::new(v1::RenewLeaseResponse { lease_deadline_unix_ms: deadline }))
    }

    async fn release_lease(
        &self,
        request: Request<v1::ReleaseLeaseRequest>,
    ) -> Result<Response<v1::ReleaseLeaseResponse>, Status> {
        let r = request.into_inner();
        let error = (!r.error.is_empty()).then_some(r.error.as_str());
        if r.storage_unavailable {
            self.coordinator.storage_unavailable(&r.worker_id, &r.lease_id, error.unwrap_or("no reason given"))?;
        } else {
            self.coordinator.release(&r.worker_id, &r.lease_id, error)?;
        }
        Ok(Response::new(v1::ReleaseLeaseResponse {}))
    }

    type FetchWeightsStream = BoxStream<v1::WeightsChunk>;

    async fn fetch_weights(
        &self,
        request: Request<v1::FetchWeightsRequest>,
    ) -> Result<Response<Self::FetchWeightsStream>, Status> {
        let r = request.into_inner();
        let snapshot = self.coordinator.snapshot(&r.job_id, r.version)?;
        self.coordinator.count_weight_bytes(snapshot.bytes.len());
        let messages: Vec<_> = weight_chunks(&snapshot, self.coordinator.chunk_bytes()).map(Ok).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    type FetchModelStream = BoxStream<v1::ModelChunk>;

    async fn fetch_model(
        &self,
        request: Request<v1::FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let sha256 = request.into_inner().sha256;
        let bytes = self.coordinator.model_bytes(&sha256).await?;
        let total = bytes.len() as u64;
        let messages: Vec<_> = chunks(&bytes, self.coordinator.chunk_bytes())
            .map(|(offset, data)| {
                let sha256 = if offset == 0 { sha256.clone() } else { String::new() };
                Ok(v1::ModelChunk { total_bytes: total, sha256, offset, data })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn push_gradient(
        &self,
        request: Request<Streaming<v1::GradientChunk>>,
    ) -> Result<Response<v1::PushGradientResponse>, Status> {
        // A child of the worker's task span, whose context the push carries.
        let span = tracing::info_span!("rwp.push");
        rwp_telemetry::set_parent_from(&span, request.metadata());
        self.push(request).instrument(span).await
    }

    async fn push_evaluation(
        &self,
        request: Request<v1::PushEvaluationRequest>,
    ) -> Result<Response<v1::PushEvaluationResponse>, Status> {
        let span = tracing::info_span!("rwp.push_evaluation");
        rwp_telemetry::set_parent_from(&span, request.metadata());
        let push = EvalPush::try_from(request.into_inner()).map_err(invalid)?;
        let accepted = self.coordinator.push_evaluation(push).instrument(span).await?;
        Ok(Response::new(v1::PushEvaluationResponse { accepted }))
    }
}

impl Handlers {
    async fn push(
        &self,
        request: Request<Streaming<v1::GradientChunk>>,
    ) -> Result<Response<v1::PushGradientResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.map(PushMessage::from);
        let header = payload::header_first(first).map_err(invalid)?;
        let header = PushHeader::try_from(header).map_err(invalid)?;
        let mut assembler = match self.coordinator.admit_push(&header)? {
            PushAdmission::Expect(sizes) => {
                PayloadAssembler::with_buffer(sizes, self.coordinator.payload_buffer(sizes.total()))
            }
            PushAdmission::Duplicate(sizes) => PayloadAssembler::discarding(sizes),
        };
        while let Some(chunk) = stream.message().await? {
            assembler.feed(PushMessage::from(chunk)).map_err(invalid)?;
        }
        let Some(payload) = assembler.finish().map_err(invalid)? else {
            return Ok(Response::new(v1::PushGradientResponse { accepted: false }));
        };
        let accepted = self.coordinator.complete_push(&header, payload).await?;
        Ok(Response::new(v1::PushGradientResponse { accepted }))
    }
}

#[tonic::async_trait]
impl JobService for Handlers {
    async fn submit_job(&self, request: Request<v1::SubmitJobRequest>) -> Result<Response<v1::Job>, Status> {
        let span = api_span("rwp.submit", &request);
        let principal = principal(&request)?;
        let r = request.into_inner();
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("invalid job spec: spec must be set"))?;
        let spec = JobSpec::try_from(spec).map_err(|e| Status::from(ServerError::InvalidSpec(e.to_string())))?;
        let options =
            SubmitOptions { labels: r.labels, init_from: (!r.init_from_job.is_empty()).then_some(r.init_from_job) };
        let record =
            self.coordinator.submit(&principal, r.name, spec, options, r.request_id).instrument(span.clone()).await?;
        span.record("job", record.id.as_str());
        Ok(Response::new((&record.job).into()))
    }

    async fn inspect_data(&self, request: Request<v1::InspectDataRequest>) -> Result<Response<v1::DataReport>, Status> {
        let span = api_span("rwp.inspect_data", &request);
        let principal = principal(&request)?;
        let r = request.into_inner();
        let invalid = |e: rwp_proto::ConversionError| Status::from(ServerError::InvalidSpec(e.to_string()));
        let dataset = rwp_proto::dataset_from_wire(r.dataset).map_err(invalid)?;
        let data = r.data.ok_or_else(|| Status::invalid_argument("invalid job spec: data must be set"))?;
        let data = rwp_spec::DataSource::try_from(data).map_err(invalid)?;
        let report = self.coordinator.inspect_own_data(&principal, dataset, data, r.decode).instrument(span).await?;
        Ok(Response::new((&report).into()))
    }

    async fn get_job(&self, request: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let principal = principal(&request)?;
        Ok(Response::new((&self.coordinator.get(&principal, &request.into_inner().job_id)?.job).into()))
    }

    async fn list_jobs(&self, request: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        let principal = principal(&request)?;
        let selector = request.into_inner().labels;
        let jobs = self.coordinator.list(&principal, &selector)?.iter().map(|r| (&r.job).into()).collect();
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(&self, request: Request<v1::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let (history, live) = self.coordinator.watch(&principal, &r.job_id, r.from_step)?;
        let mut next_step = history
            .iter()
            .filter_map(|e| if let JobEvent::Step(m) = e { Some(m.step) } else { None })
            .max()
            .unwrap_or(r.from_step);
        // Evaluations complete on the workers while later steps go on: one
        // is new unless the history held it, whatever the steps sent since.
        let mut evaluated: std::collections::HashSet<u64> =
            history.iter().filter_map(|e| if let JobEvent::Evaluation(e) = e { Some(e.step) } else { None }).collect();
        let from_step = r.from_step;
        let (tx, rx) = mpsc::channel(64);
        let mut stopping = self.coordinator.stopping();
        tokio::spawn(async move {
            for event in &history {
                if tx.send(Ok(event.into())).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            loop {
                let event = tokio::select! {
                    event = live.recv() => event,
                    _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down; watch again"))).await;
                        return;
                    }
                };
                let event = match event {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watch fell behind; watch again from step {next_step}"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let terminal = matches!(&event, JobEvent::State(j) if j.state.is_terminal());
                let fresh = match &event {
                    JobEvent::Step(m) => m.step > next_step,
                    JobEvent::Evaluation(e) => e.step > from_step && evaluated.insert(e.step),
                    JobEvent::State(_) => true,
                };
                if let JobEvent::Step(m) = &event {
                    next_step = next_step.max(m.step);
                }
                if fresh && tx.send(Ok((&event).into())).await.is_err() {
                    return;
                }
                if terminal {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(&self, request: Request<v1::CancelJobRequest>) -> Result<Response<v1::Job>, Status> {
        let span = api_span("rwp.cancel", &request);
        let principal = principal(&request)?;
        let job = request.into_inner().job_id;
        span.record("job", job.as_str());
        Ok(Response::new((&self.coordinator.cancel(&principal, &job).instrument(span).await?.job).into()))
    }

    async fn resume_job(&self, request: Request<v1::ResumeJobRequest>) -> Result<Response<v1::Job>, Status> {
        let span = api_span("rwp.resume", &request);
        let principal = principal(&request)?;
        let r = request.into_inner();
        span.record("job", r.job_id.as_str());
        let extend = Extension::from_flags(r.epochs, r.max_updates);
        Ok(Response::new((&self.coordinator.resume(&principal, &r.job_id, &extend).instrument(span).await?.job).into()))
    }

    async fn delete_job(
        &self,
        request: Request<v1::DeleteJobRequest>,
    ) -> Result<Response<v1::DeleteJobResponse>, Status> {
        let span = api_span("rwp.delete", &request);
        let principal = principal(&request)?;
        let job = request.into_inner().job_id;
        span.record("job", job.as_str());
        span.in_scope(|| self.coordinator.delete(&principal, &job))?;
        Ok(Response::new(v1::DeleteJobResponse {}))
    }

    type WatchJobLogStream = BoxStream<v1::JobLogEntry>;

    async fn watch_job_log(
        &self,
        request: Request<v1::WatchJobLogRequest>,
    ) -> Result<Response<Self::WatchJobLogStream>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let (history, live) = self.coordinator.job_log(&principal, &r.job_id, r.after_seq, r.follow)?;
        let mut stopping = self.coordinator.stopping();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = r.after_seq;
            for entry in &history {
                last = entry.seq;
                if tx.send(Ok(entry.into())).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            if history.last().is_some_and(|e| e.kind.is_end()) {
                return;
            }
            loop {
                let entry = tokio::select! {
                    entry = live.recv() => entry,
                    _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = tx.send(Err(Status::unavailable(format!(
                            "the server is shutting down; follow again after entry {last}"
                        )))).await;
                        return;
                    }
                };
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "the follow fell behind; follow again after entry {last}"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if entry.seq <= last {
                    continue;
                }
                last = entry.seq;
                if tx.send(Ok((&entry).into())).await.is_err() || entry.kind.is_end() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self.coordinator.workers(&principal(&request)?)?.iter().map(Into::into).collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn create_sweep(&self, request: Request<v1::CreateSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        let span = api_span("rwp.create_sweep", &request);
        let principal = principal(&request)?;
        let r = request.into_inner();
        let spec = r.spec.ok_or_else(|| Status::from(ServerError::InvalidSweep("spec must be set".into())))?;
        let spec = SweepSpec::try_from(spec).map_err(|e| Status::from(ServerError::InvalidSweep(e.to_string())))?;
        let view = self.coordinator.create_sweep(&principal, r.name, spec, r.request_id).instrument(span).await?;
        Ok(Response::new((&view).into()))
    }

    async fn get_sweep(&self, request: Request<v1::GetSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        let principal = principal(&request)?;
        Ok(Response::new((&self.coordinator.get_sweep(&principal, &request.into_inner().sweep_id)?).into()))
    }

    async fn list_sweeps(
        &self,
        request: Request<v1::ListSweepsRequest>,
    ) -> Result<Response<v1::ListSweepsResponse>, Status> {
        let sweeps = self.coordinator.list_sweeps(&principal(&request)?)?.iter().map(Into::into).collect();
        Ok(Response::new(v1::ListSweepsResponse { sweeps }))
    }

    type WatchSweepStream = BoxStream<v1::Sweep>;

    async fn watch_sweep(
        &self,
        request: Request<v1::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let principal = principal(&request)?;
        let id = request.into_inner().sweep_id;
        let (first, mut changed) = self.coordinator.watch_sweep(&principal, &id)?;
        let coordinator = self.coordinator.clone();
        let mut stopping = self.coordinator.stopping();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut view = first;
            loop {
                let terminal = view.is_finished();
                if tx.send(Ok((&view).into())).await.is_err() || terminal {
                    return;
                }
                tokio::select! {
                    changed = changed.changed() => if changed.is_err() { return },
                    _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down; watch again"))).await;
                        return;
                    }
                }
                // At most a few updates a second: a sweep's trials change at every update.
                tokio::time::sleep(SWEEP_WATCH_INTERVAL).await;
                view = match coordinator.sweep_now(&id) {
                    Ok(view) => view,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_sweep(&self, request: Request<v1::CancelSweepRequest>) -> Result<Response<v1::Sweep>, Status> {
        let span = api_span("rwp.cancel_sweep", &request);
        let principal = principal(&request)?;
        let id = request.into_inner().sweep_id;
        Ok(Response::new((&self.coordinator.cancel_sweep(&principal, &id).instrument(span).await?).into()))
    }

    type ExportWeightsStream = BoxStream<v1::ExportChunk>;

    async fn export_weights(
        &self,
        request: Request<v1::ExportWeightsRequest>,
    ) -> Result<Response<Self::ExportWeightsStream>, Status> {
        let principal = principal(&request)?;
        let (step, bytes) = self.coordinator.export(&principal, &request.into_inner().job_id).await?;
        let bytes = Bytes::from(bytes);
        let total = bytes.len() as u64;
        let messages: Vec<_> = chunks(&bytes, self.coordinator.chunk_bytes())
            .map(|(offset, data)| Ok(v1::ExportChunk { step, total_bytes: total, offset, data }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages).map(|m| m))))
    }

    async fn upload_model(
        &self,
        request: Request<Streaming<v1::ModelChunk>>,
    ) -> Result<Response<v1::ModelFile>, Status> {
        let span = api_span("rwp.upload_model", &request);
        let principal = principal(&request)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::from(ServerError::InvalidModel("the upload carries no chunks".to_owned())))?;
        let announced = ModelFile { sha256: first.sha256, size_bytes: first.total_bytes };
        let mut upload = self.coordinator.begin_model_upload(&principal, announced)?;
        upload.write(first.offset, &first.data)?;
        while let Some(chunk) = stream.message().await? {
            upload.write(chunk.offset, &chunk.data)?;
        }
        let file = self.coordinator.finish_model_upload(upload).instrument(span).await?;
        Ok(Response::new(v1::ModelFile { sha256: file.sha256, size_bytes: file.size_bytes }))
    }

    async fn list_models(
        &self,
        request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let models = self.coordinator.list_models(&principal(&request)?)?.into_iter().map(Into::into).collect();
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn delete_model(
        &self,
        request: Request<v1::DeleteModelRequest>,
    ) -> Result<Response<v1::DeleteModelResponse>, Status> {
        let span = api_span("rwp.delete_model", &request);
        let principal = principal(&request)?;
        let sha256 = request.into_inner().sha256;
        span.in_scope(|| self.coordinator.delete_model(&principal, &sha256))?;
        Ok(Response::new(v1::DeleteModelResponse {}))
    }
}
