//! Loopback throughput of the two bulk transfers of the service, against a
//! plain TCP copy of the same bytes in the same run:
//!
//! - **push**: a worker-side client pushes a full ResNet-18 gradient
//!   (11,173,962 float32 = 44.7 MB, plus the BatchNorm buffers a clean task
//!   returns) with `PushGradient`, exactly as `rwp-worker` does (header, then
//!   data chunks of CHUNK_BYTES), timed from the call to the server's answer
//!   (the server has then put the chunks together, scanned them for NaN/∞
//!   and stored the result);
//! - **fetch**: `FetchWeights` of the job's snapshot (44.7 MB), put back
//!   together in one buffer, the previous snapshot's, as the worker does;
//! - **raw**: a tokio `TcpStream` `write_all` of the same number of bytes, read
//!   with `read_exact` on the other end, then a 1-byte ack: into one buffer
//!   reused throughout (transport alone: the ratios are against this one), and
//!   into a fresh buffer each time (what a receiver that keeps the bytes pays,
//!   as the server and the worker do).
//!
//! The server is the real one, in this process on 127.0.0.1 (and its
//! endpoint settings), with an `sgd` job of SHARDS clean shards per update on
//! a tiny CIFAR-10-format data directory the benchmark writes itself: each
//! pushed shard is a leased task, and the update (not timed) is applied once
//! all SHARDS are in. Each of ROUNDS rounds does, per leased task, the two raw
//! copies, one fetch and one push, interleaved; figures are the median over all
//! transfers (best also given). MB = 10⁶ bytes.
//!
//!     target/release/bench-transport     # ROUNDS=5 SHARDS=8 CHUNK_BYTES=1048576
//!
//! The last stdout line is one JSON object.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rwp_core::model::{InputShape, Model};
use rwp_integration_tests::bench::{env, write_cifar_like};
use rwp_integration_tests::cluster::{connect, submit};
use rwp_integration_tests::in_process::spawn_server;
use rwp_parameter_server::pool::PayloadPool;
use rwp_parameter_server::ServerConfig;
use rwp_proto::v1::gradient_chunk::Part;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{
    self, FetchWeightsRequest, GradientChunk, GradientHeader, LeaseTaskRequest, RegisterRequest, Task,
};
use rwp_spec::payload::{Announced, Layout, PayloadAssembler, PushMessage};
use rwp_spec::{DatasetKind, GradientEncoding, JobSpec, Method, ModelKind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// A client with the worker's endpoint settings (services/gradient-worker/src/rpc.rs).
async fn worker_client(addr: std::net::SocketAddr, chunk_bytes: usize) -> WorkerServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size((1 << 24) - 1)
        .connect()
        .await
        .unwrap();
    let limit = chunk_bytes + (1 << 20);
    WorkerServiceClient::new(channel).max_encoding_message_size(limit).max_decoding_message_size(limit.max(64 << 20))
}

/// `rwp-worker`'s push: the header, then the payload in chunks, sliced without copying.
async fn push(client: &mut WorkerServiceClient<Channel>, header: GradientHeader, payload: Bytes, chunk: usize) -> bool {
    let data = (0..payload.len().div_ceil(chunk)).map(move |i| {
        let end = ((i + 1) * chunk).min(payload.len());
        GradientChunk { part: Some(Part::Data(payload.slice(i * chunk..end))) }
    });
    let messages = std::iter::once(GradientChunk { part: Some(Part::Header(header)) }).chain(data);
    client.push_gradient(tokio_stream::iter(messages)).await.unwrap().into_inner().accepted
}

/// `rwp-worker`'s fetch: the chunks appended to one buffer of the announced
/// size, the one the previous snapshot was fetched into.
async fn fetch(client: &mut WorkerServiceClient<Channel>, job_id: &str, version: u64, buffer: Vec<u8>) -> Vec<u8> {
    let request = FetchWeightsRequest { job_id: job_id.to_owned(), version };
    let mut stream = client.fetch_weights(request).await.unwrap().into_inner();
    let mut bytes = buffer;
    bytes.clear();
    while let Some(chunk) = stream.message().await.unwrap() {
        if bytes.is_empty() {
            bytes.reserve_exact(chunk.total_bytes as usize);
        }
        assert_eq!(chunk.offset as usize, bytes.len());
        bytes.extend_from_slice(&chunk.data);
    }
    bytes
}

/// One end of a raw TCP copy: `write_all` of the payload, `read_exact` of it
/// on the other end, then a 1-byte ack.
struct RawCopy {
    stream: TcpStream,
    receiver: tokio::task::JoinHandle<()>,
}

impl RawCopy {
    /// `fresh`: the receiver reads every copy into a newly allocated buffer
    /// (as a receiver that keeps the bytes must, paying the page faults);
    /// otherwise into one buffer reused throughout (transport alone).
    async fn connect(len: usize, fresh: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buffer = vec![0u8; len];
            loop {
                if fresh {
                    buffer = vec![0u8; len];
                }
                if stream.read_exact(&mut buffer).await.is_err() {
                    return;
                }
                std::hint::black_box(&buffer);
                stream.write_all(&[1]).await.unwrap();
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, receiver }
    }

    async fn copy(&mut self, payload: &[u8]) {
        self.stream.write_all(payload).await.unwrap();
        let mut ack = [0u8; 1];
        self.stream.read_exact(&mut ack).await.unwrap();
    }

    async fn close(self) {
        drop(self.stream);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.receiver).await;
    }
}

/// Minor page faults of this process so far (0 where /proc is not there):
/// what fresh memory costs, counted exactly however busy the machine is.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses; minflt is the 10th field.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok()).unwrap_or(0)
}

/// Seconds and minor page faults of each transfer of one kind.
#[derive(Default)]
struct Samples {
    seconds: Vec<f64>,
    faults: u64,
}

impl Samples {
    async fn time<T>(&mut self, transfer: impl std::future::Future<Output = T>) -> T {
        let (started, faults) = (Instant::now(), minor_faults());
        let out = transfer.await;
        self.seconds.push(started.elapsed().as_secs_f64());
        self.faults += minor_faults() - faults;
        out
    }

    fn faults_per_transfer(&self) -> u64 {
        self.faults / self.seconds.len().max(1) as u64
    }
}

async fn lease(client: &mut WorkerServiceClient<Channel>, worker_id: &str) -> Task {
    loop {
        let request = LeaseTaskRequest { worker_id: worker_id.to_owned(), wait_ms: 5_000 };
        if let Some(task) = client.lease_task(request).await.unwrap().into_inner().task {
            return task;
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The server's own work on a push outside the network path, in ms (best of
/// `repeats`): putting the chunks together (`PayloadAssembler`, in a buffer
/// from the pool, as the push handler does), and the NaN/∞ scan
/// (`Layout::check_finite`).
fn server_side_costs(layout: &Layout, payload: &Bytes, chunk: usize, repeats: usize) -> (f64, f64) {
    let pool = PayloadPool::new(usize::MAX);
    let announced = Announced {
        encoding: layout.encoding(),
        gradient_bytes: layout.gradient_bytes() as u64,
        buffer_bytes: layout.buffer_bytes() as u64,
    };
    let sizes = layout.expect(&announced, true).unwrap();
    let (mut copy, mut scan) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeats {
        let started = Instant::now();
        let mut assembler = PayloadAssembler::with_buffer(sizes, pool.take(sizes.total()));
        for piece in payload.chunks(chunk) {
            assembler.feed(PushMessage::<(), _>::Data(piece)).unwrap();
        }
        let assembled = assembler.finish().unwrap().expect("kept");
        copy = copy.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        layout.check_finite(assembled.gradient(), assembled.buffers()).unwrap();
        scan = scan.min(started.elapsed().as_secs_f64());
        pool.give(Bytes::from(assembled.into_bytes()));
    }
    (copy * 1e3, scan * 1e3)
}

#[tokio::main]
async fn main() {
    let rounds: usize = env("ROUNDS", 5);
    let shards: u32 = env("SHARDS", 8);
    let chunk: usize = env("CHUNK_BYTES", 1 << 20);

    let tmp = tempfile::tempdir().unwrap();
    let cifar = tmp.path().join("cifar");
    write_cifar_like(&cifar, 16, 16, 1);

    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: tmp.path().join("server"),
        torch_threads: 1,
        checkpoint_every: u64::MAX,
        eval_every_epochs: 0,
        chunk_bytes: chunk,
        max_message_bytes: (8 << 20).max(chunk + (1 << 20)),
        ..ServerConfig::default()
    };
    let (addr, stop, server) = spawn_server(config).await;

    let mut spec = JobSpec::reference(Method::Sgd);
    spec.model = ModelKind::Resnet18;
    spec.dataset = DatasetKind::Cifar10;
    spec.data_dir = Some(cifar.clone());
    spec.augment = false;
    spec.batch_size = 8 * shards;
    spec.clean_shards = shards;
    spec.epochs = 10_000;
    let mut jobs = connect(addr).await;
    let job_id = submit(&mut jobs, "bench-transport", &spec).await;

    let model = Model::new(ModelKind::Resnet18, InputShape { channels: 3, height: 32, width: 32 }, 10);
    let layout = Layout::new(
        model.params().iter().map(|p| (p.name.clone(), p.numel() as usize)).collect(),
        model.buffers().iter().map(|b| b.numel() as usize).sum(),
        GradientEncoding::F32,
    )
    .unwrap();
    let gradient_bytes = layout.gradient_bytes();
    // Small finite values, the gradient followed by the BN buffers (all 1.0: finite).
    let mut payload = Vec::with_capacity(gradient_bytes + layout.buffer_bytes());
    for i in 0..gradient_bytes / 4 {
        payload.extend_from_slice(&(((i % 2001) as f32 - 1000.0) * 1e-7).to_le_bytes());
    }
    for _ in 0..layout.buffer_bytes() / 4 {
        payload.extend_from_slice(&1.0f32.to_le_bytes());
    }
    let payload = Bytes::from(payload);

    let mut client = worker_client(addr, chunk).await;
    let registration = RegisterRequest { name: "bench-transport".into(), device: "cpu".into() };
    let worker_id = client.register(registration).await.unwrap().into_inner().worker_id;

    let mut raw = RawCopy::connect(payload.len(), false).await;
    let mut raw_fresh = RawCopy::connect(payload.len(), true).await;

    // Warm-up: connections, allocator, the first snapshot.
    let task = lease(&mut client, &worker_id).await;
    let mut snapshot = fetch(&mut client, &job_id, task.step, Vec::new()).await;
    let snapshot_bytes = snapshot.len();
    raw.copy(&payload).await;
    raw_fresh.copy(&payload).await;
    let warm_header = header(&worker_id, &task, gradient_bytes, payload.len());
    assert!(push(&mut client, warm_header, payload.clone(), chunk).await);

    let (mut push_s, mut fetch_s, mut raw_s, mut fresh_s) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    for round in 1..=rounds {
        for _ in 0..shards {
            let task = lease(&mut client, &worker_id).await;
            raw_s.time(raw.copy(&payload)).await;
            fresh_s.time(raw_fresh.copy(&payload)).await;
            snapshot = fetch_s.time(fetch(&mut client, &job_id, task.step, snapshot)).await;
            assert_eq!(snapshot.len(), snapshot_bytes);
            let header = header(&worker_id, &task, gradient_bytes, payload.len());
            // The last shard of an update starts the (untimed) update, which
            // the next lease waits for.
            let accepted = push_s.time(push(&mut client, header, payload.clone(), chunk)).await;
            assert!(accepted, "the push is accepted");
        }
        let round_median = |s: &Samples| median(&mut s.seconds[s.seconds.len() - shards as usize..].to_vec());
        eprintln!(
            "round {round}: push {:.0} MB/s, fetch {:.0} MB/s, raw {:.0} MB/s, raw into fresh buffers {:.0} MB/s \
             (medians of the round)",
            mb_per_s(payload.len(), round_median(&push_s)),
            mb_per_s(snapshot_bytes, round_median(&fetch_s)),
            mb_per_s(payload.len(), round_median(&raw_s)),
            mb_per_s(payload.len(), round_median(&fresh_s)),
        );
    }
    let (copy_ms, scan_ms) = server_side_costs(&layout, &payload, chunk, 5);

    raw.close().await;
    raw_fresh.close().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;

    let best =
        |s: &Samples, bytes: usize| round1(mb_per_s(bytes, s.seconds.iter().copied().fold(f64::INFINITY, f64::min)));
    let bests = json!({
        "push": best(&push_s, payload.len()),
        "fetch": best(&fetch_s, snapshot_bytes),
        "raw_tcp": best(&raw_s, payload.len()),
        "raw_tcp_fresh_buffer": best(&fresh_s, payload.len()),
    });
    let faults = json!({
        "push": push_s.faults_per_transfer(),
        "fetch": fetch_s.faults_per_transfer(),
        "raw_tcp": raw_s.faults_per_transfer(),
        "raw_tcp_fresh_buffer": fresh_s.faults_per_transfer(),
    });
    let push_mbs = mb_per_s(payload.len(), median(&mut push_s.seconds));
    let fetch_mbs = mb_per_s(snapshot_bytes, median(&mut fetch_s.seconds));
    let raw_mbs = mb_per_s(payload.len(), median(&mut raw_s.seconds));
    let fresh_mbs = mb_per_s(payload.len(), median(&mut fresh_s.seconds));
    let ratio = |a: f64, b: f64| (a / b * 1e3).round() / 1e3;
    let report = json!({
        "benchmark": "transport",
        "model": "resnet18",
        "parameters": model.num_parameters(),
        "push_bytes": payload.len(),
        "fetch_bytes": snapshot_bytes,
        "raw_bytes": payload.len(),
        "chunk_bytes": chunk,
        "shards_per_update": shards,
        "rounds": rounds,
        "transfers_each": push_s.seconds.len(),
        "statistic": "median over all transfers (best also given); raw, raw into fresh buffers, fetch and push \
                      interleaved per leased task; MB = 1e6 bytes",
        "push_mb_s": round1(push_mbs),
        "fetch_mb_s": round1(fetch_mbs),
        "raw_tcp_mb_s": round1(raw_mbs),
        "raw_tcp_fresh_buffer_mb_s": round1(fresh_mbs),
        "push_over_raw": ratio(push_mbs, raw_mbs),
        "fetch_over_raw": ratio(fetch_mbs, raw_mbs),
        "push_over_raw_fresh_buffer": ratio(push_mbs, fresh_mbs),
        "fetch_over_raw_fresh_buffer": ratio(fetch_mbs, fresh_mbs),
        "best_mb_s": bests,
        "minor_page_faults_per_transfer": faults,
        "target_ratio": 0.7,
        "server_push_work_ms": {"assemble_chunks": round1(copy_ms), "non_finite_scan": round1(scan_ms)},
    });
    println!("{report}");
}

fn header(worker_id: &str, task: &Task, gradient_bytes: usize, payload_bytes: usize) -> GradientHeader {
    assert!(task.returns_buffers, "clean sgd tasks return BN buffers");
    GradientHeader {
        worker_id: worker_id.to_owned(),
        lease_id: task.lease_id.clone(),
        job_id: task.job_id.clone(),
        step: task.step,
        shard: task.shard,
        role: task.role,
        weights_version: task.step,
        loss: 2.3,
        accuracy: 0.1,
        encoding: v1::GradientEncoding::F32.into(),
        gradient_bytes: gradient_bytes as u64,
        buffer_bytes: (payload_bytes - gradient_bytes) as u64,
        skipped_samples: Vec::new(),
    }
}
