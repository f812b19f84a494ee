//! Evaluations as a job reports them, against the local trainer's at the
//! same versions.

use rwp_core::trainer::{Evaluation, LocalTrainer};
use rwp_proto::v1::job_event::Event;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{self, WatchJobRequest};
use rwp_spec::JobSpec;
use tch::Device;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Server flags for tests of evaluations: [`crate::cluster::SERVER_FLAGS`]
/// with an evaluation at the end of every epoch.
pub const EVERY_EPOCH: &[&str] =
    &["--lease-timeout-ms", "1500", "--checkpoint-every", "2", "--torch-threads", "1", "--eval-every-epochs", "1"];

/// Every evaluation in an ended job's history, in step order.
pub async fn job_evaluations(client: &mut JobServiceClient<Channel>, id: &str) -> Vec<v1::Evaluation> {
    let request = WatchJobRequest { job_id: id.into(), from_step: 0 };
    let mut stream = client.watch_job(request).await.unwrap().into_inner();
    let mut evaluations = Vec::new();
    while let Some(event) = stream.next().await {
        if let Some(Event::Evaluation(e)) = event.unwrap().event {
            evaluations.push(e);
        }
    }
    evaluations
}

/// The local trainer's test and validation evaluations after each of `steps` updates.
pub fn local_evaluations(spec: &JobSpec, steps: &[u64]) -> Vec<(u64, Evaluation, Option<Evaluation>)> {
    tch::set_num_threads(1);
    let mut trainer = LocalTrainer::new(spec.clone(), Device::Cpu).unwrap();
    let mut out = Vec::new();
    for &step in steps {
        while trainer.state.step < step {
            trainer.step().unwrap();
        }
        out.push((step, trainer.evaluate().unwrap(), trainer.evaluate_validation().unwrap()));
    }
    out
}

/// Asserts that the job evaluated exactly at `steps`, each time with the
/// local trainer's figures to the bit.
pub fn assert_evaluations_match(label: &str, got: &[v1::Evaluation], spec: &JobSpec, steps: &[u64]) {
    let got_steps: Vec<u64> = got.iter().map(|e| e.step).collect();
    assert_eq!(got_steps, steps, "{label}: evaluated versions");
    for (e, (step, test, validation)) in got.iter().zip(local_evaluations(spec, steps)) {
        assert_eq!((e.test_loss, e.test_accuracy), (test.loss, test.accuracy), "{label}: test at {step} ({e:?})");
        let local = validation.map(|v| (v.loss, v.accuracy));
        assert_eq!(e.validation_loss.zip(e.validation_accuracy), local, "{label}: validation at {step}");
    }
}
