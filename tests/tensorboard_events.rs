//! Each job's scalars land in TensorBoard event files in the server's data
//! directory, in a run directory named after the job (`<name>-<job id>`).
//! Read back twice: with our reader (record framing and CRC-32C
//! checked) and with TensorBoard's own loader, independently.

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::python;
use rwp_sdk::{Client, JobSpecBuilder, JobState, Method};
use rwp_telemetry::tfevents::{read_scalars, run_name};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_scalars_are_readable_as_tensorboard_events() {
    let cluster = Cluster::start(2).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(2).batch_size(128).build().unwrap();
    let job = client.submit("tensorboard", &spec).await.unwrap();
    let mut events = Box::pin(client.watch(&job.id, 0).await.unwrap());
    while let Some(e) = events.next().await {
        e.unwrap();
    }
    let finished = client.get(&job.id).await.unwrap();
    assert_eq!(finished.state, JobState::Succeeded);

    let dir = cluster.data_dir().join("tensorboard").join(run_name("tensorboard", &job.id));
    assert_eq!(dir.file_name().unwrap().to_string_lossy(), format!("tensorboard-{}", job.id));
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));

    let scalars = read_scalars(&files[0]).expect("framing and CRCs check out");
    let series = |tag: &str| -> Vec<(i64, f32)> {
        scalars.iter().filter(|(_, t, _)| t == tag).map(|(s, _, v)| (*s, *v)).collect()
    };
    let loss = series("train/loss");
    assert_eq!(loss.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=14).collect::<Vec<i64>>());
    assert_eq!(loss.last().unwrap().1, finished.last_step.as_ref().unwrap().loss as f32);
    // The step the job reports for its last update is the step TensorBoard shows.
    assert_eq!(finished.last_step.as_ref().unwrap().step, 14);
    assert_eq!(series("train/perturbed_loss").len(), 14);
    let accuracy = series("test/accuracy");
    assert_eq!(accuracy.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![7, 14]);
    assert_eq!(accuracy[1].1, finished.last_evaluation.as_ref().unwrap().test_accuracy as f32);

    // TensorBoard's own reader.
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1])
acc.Reload()
for tag in sorted(acc.Tags()["scalars"]):
    events = acc.Scalars(tag)
    print(tag, len(events), events[-1].step, repr(events[-1].value))
"#;
    let output = python().arg("-c").arg(script).arg(&dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("train/loss 14 14 {:?}", loss.last().unwrap().1)), "{text}");
    assert!(text.contains("test/accuracy 2 14"), "{text}");
    assert!(text.contains("train/lr 14 14"), "{text}");
    cluster.shutdown().await;
}
