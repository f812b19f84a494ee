use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rwp_credentials::{client_tls, Bearer, Pem, Token};
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{self, job_event::Event};
use rwp_spec::sweep::SweepSpec;
use rwp_spec::{Extension, JobSpec, LogEntry, ModelFile, SubmitOptions, WorkerInfo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::{Job, JobEvent, SdkError, StoredModel, Sweep};

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(k, v);
        }
    }
}

/// A request carrying the caller's current OpenTelemetry context (W3C
/// `traceparent`), so the server's spans join the caller's trace. Nothing is
/// added when the application has set up no propagator.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&opentelemetry::Context::current(), &mut MetadataInjector(request.metadata_mut()));
    });
    request
}

/// A fresh request id for one submission: 128 random bits in hex.
fn new_request_id() -> Result<String, SdkError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SdkError::Protocol("the system's random number generator failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Bytes per `UploadModel` message (well under the server's message limit).
const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// How the client reaches the server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` (plaintext) or `https://host:port` (TLS).
    pub endpoint: String,
    /// The CA that signed the server's certificate; the public web roots are
    /// used when absent.
    pub tls_ca: Option<Pem>,
    /// A certificate to present to the server, for a server that requires
    /// mutual TLS; with `tls_client_key`.
    pub tls_client_cert: Option<Pem>,
    /// The private key of `tls_client_cert`.
    pub tls_client_key: Option<Pem>,
    /// Name to check the server's certificate against, when it differs from the host.
    pub tls_domain: Option<String>,
    /// Bearer token sent with every call, for a server with a tokens file.
    pub token: Option<Token>,
    pub connect_timeout: Duration,
    /// Attempts of an idempotent call before giving up (at least 1).
    pub attempts: u32,
    /// First delay between attempts; doubles each time, up to 2 s.
    pub initial_backoff: Duration,
}

impl ClientConfig {
    #[must_use]
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_domain: None,
            token: None,
            connect_timeout: Duration::from_secs(5),
            attempts: 4,
            initial_backoff: Duration::from_millis(200),
        }
    }
}

/// A job's exported weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// Updates applied to the exported state.
    pub step: u64,
    pub bytes: usize,
}

/// The job service's client stub, with the token on every call.
type Stub = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// A connection to the job service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Stub,
    config: ClientConfig,
}

impl Client {
    /// Connects to `endpoint` with the default settings.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, SdkError> {
        Self::connect_with(ClientConfig::new(endpoint)).await
    }

    /// Connects with explicit settings. The connection is made on first use
    /// and re-made after failures; this checks that the server answers.
    pub async fn connect_with(config: ClientConfig) -> Result<Self, SdkError> {
        let bad = |reason: String| SdkError::Endpoint { endpoint: config.endpoint.clone(), reason };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone()).map_err(|e| bad(e.to_string()))?;
        endpoint = endpoint.connect_timeout(config.connect_timeout).tcp_nodelay(true);
        let identity = match (&config.tls_client_cert, &config.tls_client_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(SdkError::Credentials(
                    "a client certificate needs its key, and a key its certificate".into(),
                ))
            }
        };
        if config.endpoint.starts_with("https://") || config.tls_ca.is_some() {
            let tls = client_tls(config.tls_ca.as_ref(), identity, config.tls_domain.as_deref())
                .map_err(|e| SdkError::Credentials(e.to_string()))?;
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        } else if identity.is_some() {
            return Err(SdkError::Credentials(format!(
                "a client certificate is given but {} is not an https:// address",
                config.endpoint
            )));
        }
        let bearer =
            Bearer::new(config.token.as_ref(), "the token").map_err(|e| SdkError::Credentials(e.to_string()))?;
        let inner =
            JobServiceClient::with_interceptor(endpoint.connect_lazy(), bearer).max_decoding_message_size(256 << 20);
        let client = Self { inner, config };
        client.list().await?;
        Ok(client)
    }

    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    fn error(&self, status: tonic::Status) -> SdkError {
        SdkError::from_status(status, &self.config.endpoint)
    }

    /// Runs an idempotent call, retrying transient failures with backoff
    /// (backon): `initial_backoff`, doubling up to 2 s, no jitter.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, SdkError>
    where
        F: FnMut(Stub) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.config.initial_backoff)
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.config.attempts.max(1) as usize - 1);
        let mut attempt = 0;
        (|| {
            let pending = call(self.inner.clone());
            async move { pending.await.map_err(|s| self.error(s)) }
        })
        .retry(backoff)
        .when(SdkError::is_transient)
        .notify(|e, _| {
            attempt += 1;
            debug!(what, attempt, error = %e, "retrying");
        })
        .await
    }

    /// Stores a TorchScript file (`torch.jit.script(model).save(path)`) on
    /// the server for jobs to name in `JobSpec::model_file`. Content-addressed:
    /// uploading the same file again is harmless, so a failed attempt is
    /// retried.
    pub async fn upload_model(&self, path: &Path) -> Result<ModelFile, SdkError> {
        let io = |source| SdkError::Io { path: path.display().to_string(), source };
        let bytes = bytes::Bytes::from(tokio::fs::read(path).await.map_err(io)?);
        let file = ModelFile { sha256: rwp_spec::sha256_hex(&bytes), size_bytes: bytes.len() as u64 };
        let stored = self
            .retrying("upload_model", |mut c| {
                let (bytes, file) = (bytes.clone(), file.clone());
                async move {
                    let chunks = (0..bytes.len().max(1)).step_by(UPLOAD_CHUNK_BYTES).map(move |start| {
                        let end = (start + UPLOAD_CHUNK_BYTES).min(bytes.len());
                        v1::ModelChunk {
                            total_bytes: file.size_bytes,
                            sha256: if start == 0 { file.sha256.clone() } else { String::new() },
                            offset: start as u64,
                            data: bytes.slice(start..end),
                        }
                    });
                    c.upload_model(traced(tokio_stream::iter(chunks))).await.map(tonic::Response::into_inner)
                }
            })
            .await?;
        if stored.sha256 != file.sha256 || stored.size_bytes != file.size_bytes {
            return Err(SdkError::InvalidSpec(format!(
                "the server stored {} ({} bytes) for {} ({} bytes)",
                stored.sha256, stored.size_bytes, file.sha256, file.size_bytes
            )));
        }
        Ok(file)
    }

    /// The model files the caller uploaded (every owner's for an admin, or
    /// on a server without authentication), by owner then digest.
    pub async fn list_models(&self) -> Result<Vec<StoredModel>, SdkError> {
        let r = self
            .retrying("list_models", |mut c| async move {
                c.list_models(traced(v1::ListModelsRequest {})).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(r.models.into_iter().map(StoredModel::from).collect())
    }

    /// Gives up the caller's ownership of the model file `sha256` (not found
    /// when it has none); the server removes the file once no owner is left
    /// and no running job names it. Not retried: a retry of a call that did
    /// go through would be told the file is not found.
    pub async fn delete_model(&self, sha256: &str) -> Result<(), SdkError> {
        let request = v1::DeleteModelRequest { sha256: sha256.to_owned() };
        self.inner.clone().delete_model(traced(request)).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Uploads the TorchScript file at `model` and submits `spec` with it as
    /// the job's model (`spec.model` becomes `torchscript`).
    pub async fn submit_with_model_file(&self, name: &str, spec: &JobSpec, model: &Path) -> Result<Job, SdkError> {
        let mut spec = spec.clone();
        spec.model = rwp_spec::ModelKind::TorchScript;
        spec.model_file = Some(self.upload_model(model).await?);
        self.submit(name, &spec).await
    }

    /// Submits a job. Transient failures are retried: every attempt carries
    /// the same fresh request id, and the server answers a retry with the
    /// job the first attempt started, so a job never starts twice.
    pub async fn submit(&self, name: &str, spec: &JobSpec) -> Result<Job, SdkError> {
        self.submit_with(name, spec, &SubmitOptions::default()).await
    }

    /// [`Client::submit`] with labels, or starting from another job's
    /// weights (`options.init_from`, a job id).
    pub async fn submit_with(&self, name: &str, spec: &JobSpec, options: &SubmitOptions) -> Result<Job, SdkError> {
        spec.validate().map_err(|e| SdkError::InvalidSpec(e.to_string()))?;
        rwp_spec::labels::validate(&options.labels).map_err(SdkError::InvalidSpec)?;
        let request = v1::SubmitJobRequest {
            name: name.to_owned(),
            spec: Some(spec.into()),
            request_id: Some(new_request_id()?),
            labels: options.labels.clone(),
            init_from_job: options.init_from.clone().unwrap_or_default(),
        };
        let job = self
            .retrying("submit", |mut c| {
                let request = request.clone();
                async move { c.submit_job(traced(request)).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(job.try_into()?)
    }

    /// A job's own data as a worker finds it, without starting a job: its
    /// classes, samples and files per split, input shape and digest; with
    /// `decode`, every image is read and decoded too and the unreadable
    /// ones listed (slow for a large dataset). A worker reads it as the
    /// job's workers would, with their credentials; the server never does.
    /// The first problem is [`SdkError::InvalidSpec`], naming the split,
    /// the file and the rule.
    pub async fn inspect_data(
        &self,
        dataset: rwp_spec::DatasetKind,
        data: &rwp_spec::DataSource,
        decode: bool,
    ) -> Result<rwp_spec::DataReport, SdkError> {
        let request =
            v1::InspectDataRequest { dataset: v1::Dataset::from(dataset).into(), data: Some(data.into()), decode };
        let report = self
            .retrying("inspect data", |mut c| {
                let request = request.clone();
                async move { c.inspect_data(traced(request)).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(report.try_into()?)
    }

    pub async fn get(&self, job_id: &str) -> Result<Job, SdkError> {
        let job = self
            .retrying("get", |mut c| async move {
                c.get_job(traced(v1::GetJobRequest { job_id: job_id.to_owned() }))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(job.try_into()?)
    }

    /// Every job the caller may see (its own, or all for an admin or on a
    /// server without authentication), oldest id first.
    pub async fn list(&self) -> Result<Vec<Job>, SdkError> {
        self.list_labelled(&BTreeMap::new()).await
    }

    /// The jobs of [`Client::list`] that carry every label of `selector`.
    pub async fn list_labelled(&self, selector: &BTreeMap<String, String>) -> Result<Vec<Job>, SdkError> {
        let r = self
            .retrying("list", |mut c| async move {
                let request = v1::ListJobsRequest { labels: selector.clone() };
                c.list_jobs(traced(request)).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(r.jobs.into_iter().map(Job::try_from).collect::<Result<_, _>>()?)
    }

    /// Continues a job that ended (succeeded, cancelled, failed or stopped
    /// early) from its latest checkpoint; `extend` gives it more epochs or
    /// another update cap. Not retried: a retry of a call that went through
    /// would be told the job is running.
    pub async fn resume(&self, job_id: &str, extend: &Extension) -> Result<Job, SdkError> {
        let request = v1::ResumeJobRequest {
            job_id: job_id.to_owned(),
            epochs: extend.epochs,
            max_updates: extend.max_updates_flag(),
        };
        let job = self.inner.clone().resume_job(traced(request)).await.map_err(|s| self.error(s))?;
        Ok(job.into_inner().try_into()?)
    }

    /// The job's event log after entry `after_seq` (0: all of it); with
    /// `follow`, then the entries as they come, ending after the one that
    /// records the job's end. A broken connection ends the stream with the
    /// error: follow again after the last entry seen.
    pub async fn logs(
        &self,
        job_id: &str,
        after_seq: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<LogEntry, SdkError>> + Send + 'static, SdkError> {
        let stream = self
            .retrying("logs", |mut c| {
                let request = v1::WatchJobLogRequest { job_id: job_id.to_owned(), after_seq, follow };
                async move { c.watch_job_log(traced(request)).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let this = self.clone();
        Ok(stream.map(move |entry| match entry {
            Ok(entry) => LogEntry::try_from(entry).map_err(SdkError::from),
            Err(status) => Err(this.error(status)),
        }))
    }

    /// The workers the server knows (connected, or lost lately); the job and
    /// task of each only where the caller may see the job.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, SdkError> {
        let r = self
            .retrying("workers", |mut c| async move {
                c.list_workers(traced(v1::ListWorkersRequest {})).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(r.workers.into_iter().map(WorkerInfo::from).collect())
    }

    /// Deletes a job that ended, with its metrics, checkpoints and
    /// TensorBoard run. Not retried: a retry of a call that went through
    /// would be told the job is not found.
    pub async fn delete(&self, job_id: &str) -> Result<(), SdkError> {
        let request = v1::DeleteJobRequest { job_id: job_id.to_owned() };
        self.inner.clone().delete_job(traced(request)).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Cancels a job (idempotent: cancelling an ended job returns it as it is).
    pub async fn cancel(&self, job_id: &str) -> Result<Job, SdkError> {
        let job = self
            .retrying("cancel", |mut c| async move {
                c.cancel_job(traced(v1::CancelJobRequest { job_id: job_id.to_owned() }))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(job.try_into()?)
    }

    /// The job's events after its first `from_step` updates (0: all): every
    /// step in order (numbered from 1, as `Job::step` counts updates), the
    /// evaluations, state changes, ending after the terminal state. If the
    /// connection breaks (a server restart, say) the watch resumes where it
    /// stopped.
    pub async fn watch(
        &self,
        job_id: &str,
        from_step: u64,
    ) -> Result<impl Stream<Item = Result<JobEvent, SdkError>> + Send + 'static, SdkError> {
        let open = |from: u64| {
            let this = self.clone();
            let job_id = job_id.to_owned();
            async move {
                this.retrying("watch", |mut c| {
                    let job_id = job_id.clone();
                    async move {
                        c.watch_job(traced(v1::WatchJobRequest { job_id, from_step: from }))
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
            }
        };
        let mut stream = open(from_step).await?;
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move {
            let mut next_step = from_step;
            let mut reconnects = 0;
            loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        if let Some(Event::Step(m)) = &event.event {
                            next_step = m.step;
                        }
                        let converted = JobEvent::try_from(event).map_err(SdkError::from);
                        let terminal = matches!(&converted, Ok(JobEvent::State(j)) if j.state.is_terminal());
                        if tx.send(converted).await.is_err() || terminal {
                            return;
                        }
                        reconnects = 0;
                    }
                    Some(Err(status)) => {
                        let e = this.error(status);
                        let resumable =
                            e.is_transient() || matches!(&e, SdkError::Server { code: tonic::Code::DataLoss, .. });
                        if !resumable || reconnects >= this.config.attempts {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        reconnects += 1;
                        tokio::time::sleep(this.config.initial_backoff * reconnects).await;
                        let reopened = {
                            let this = this.clone();
                            let job_id = job_id.clone();
                            this.retrying("watch", |mut c| {
                                let job_id = job_id.clone();
                                async move {
                                    c.watch_job(traced(v1::WatchJobRequest { job_id, from_step: next_step }))
                                        .await
                                        .map(tonic::Response::into_inner)
                                }
                            })
                            .await
                        };
                        match reopened {
                            Ok(s) => stream = s,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    None => {
                        let _ = tx.send(Err(SdkError::Protocol("the watch ended before the job did".into()))).await;
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Creates a sweep, retried like [`Client::submit`] (one request id for
    /// every attempt, so it is created once). Its trials are generated and
    /// checked here first, so that a bad search space fails before anything
    /// is sent.
    pub async fn create_sweep(&self, name: &str, spec: &SweepSpec) -> Result<Sweep, SdkError> {
        spec.trials().map_err(|e| SdkError::InvalidSpec(e.to_string()))?;
        let request = v1::CreateSweepRequest {
            name: name.to_owned(),
            spec: Some(spec.into()),
            request_id: Some(new_request_id()?),
        };
        let sweep = self
            .retrying("create_sweep", |mut c| {
                let request = request.clone();
                async move { c.create_sweep(traced(request)).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(sweep.try_into()?)
    }

    pub async fn get_sweep(&self, sweep_id: &str) -> Result<Sweep, SdkError> {
        let sweep = self
            .retrying("get_sweep", |mut c| async move {
                c.get_sweep(traced(v1::GetSweepRequest { sweep_id: sweep_id.to_owned() }))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(sweep.try_into()?)
    }

    /// Every sweep the caller may see.
    pub async fn list_sweeps(&self) -> Result<Vec<Sweep>, SdkError> {
        let r = self
            .retrying("list_sweeps", |mut c| async move {
                c.list_sweeps(traced(v1::ListSweepsRequest {})).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(r.sweeps.into_iter().map(Sweep::try_from).collect::<Result<_, _>>()?)
    }

    /// Cancels a sweep's running trials; waiting ones never start.
    pub async fn cancel_sweep(&self, sweep_id: &str) -> Result<Sweep, SdkError> {
        let sweep = self
            .retrying("cancel_sweep", |mut c| async move {
                c.cancel_sweep(traced(v1::CancelSweepRequest { sweep_id: sweep_id.to_owned() }))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(sweep.try_into()?)
    }

    /// The sweep now and after every change (a few per second at most),
    /// ending once it and all its trials have ended. A broken connection (a
    /// server restart) is reopened: each message is the whole sweep, so
    /// nothing is lost.
    pub async fn watch_sweep(
        &self,
        sweep_id: &str,
    ) -> Result<impl Stream<Item = Result<Sweep, SdkError>> + Send + 'static, SdkError> {
        let open = {
            let this = self.clone();
            let sweep_id = sweep_id.to_owned();
            move || {
                let this = this.clone();
                let sweep_id = sweep_id.clone();
                async move {
                    this.retrying("watch_sweep", |mut c| {
                        let sweep_id = sweep_id.clone();
                        async move {
                            c.watch_sweep(traced(v1::WatchSweepRequest { sweep_id }))
                                .await
                                .map(tonic::Response::into_inner)
                        }
                    })
                    .await
                }
            }
        };
        let mut stream = open().await?;
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut reconnects = 0;
            loop {
                match stream.next().await {
                    Some(Ok(sweep)) => {
                        let converted = Sweep::try_from(sweep).map_err(SdkError::from);
                        let finished = matches!(&converted, Ok(s) if s.is_finished());
                        if tx.send(converted).await.is_err() || finished {
                            return;
                        }
                        reconnects = 0;
                    }
                    failure => {
                        let e = match failure {
                            Some(Err(status)) => this.error(status),
                            _ => SdkError::Unreachable {
                                endpoint: this.config.endpoint.clone(),
                                reason: "the sweep watch ended early".into(),
                            },
                        };
                        if !e.is_transient() || reconnects >= this.config.attempts {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        reconnects += 1;
                        tokio::time::sleep(this.config.initial_backoff * reconnects).await;
                        match open().await {
                            Ok(s) => stream = s,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Writes the job's current state (weights, BN buffers, momentum, `F`) as a
    /// safetensors file that PyTorch's `safetensors` reads. Written to a
    /// temporary file and renamed, so `path` is never left half-written.
    pub async fn export(&self, job_id: &str, path: &Path) -> Result<Export, SdkError> {
        let (step, bytes) = self
            .retrying("export", |mut c| async move {
                let mut stream = c
                    .export_weights(traced(v1::ExportWeightsRequest { job_id: job_id.to_owned() }))
                    .await?
                    .into_inner();
                let mut bytes = Vec::new();
                let mut step = 0;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if chunk.offset as usize != bytes.len() {
                        return Err(tonic::Status::data_loss(format!(
                            "export chunk at offset {} after {} bytes",
                            chunk.offset,
                            bytes.len()
                        )));
                    }
                    step = chunk.step;
                    bytes.extend_from_slice(&chunk.data);
                    if bytes.len() as u64 > chunk.total_bytes {
                        return Err(tonic::Status::data_loss("export longer than announced"));
                    }
                }
                Ok((step, bytes))
            })
            .await?;
        let io = |source| SdkError::Io { path: path.display().to_string(), source };
        let tmp = path.with_extension("partial");
        tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)?;
        Ok(Export { step, bytes: bytes.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_submission_gets_its_own_request_id() {
        let (a, b) = (new_request_id().unwrap(), new_request_id().unwrap());
        assert_ne!(a, b);
        assert!(a.len() == 32 && a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}
