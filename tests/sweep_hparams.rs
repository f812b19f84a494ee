//! A sweep's trials carry their hyper-parameters in TensorBoard's HParams
//! format: the sweep's run directory (`<name>-<sweep id>`) holds the
//! experiment (the searched field, its values, the metrics), each trial's
//! run (`<sweep run>/<index>-<field>=<value>-<job id>`) its session start
//! (its value), its scalars and its session end. Read back twice: with our
//! prost messages, and with TensorBoard's own event multiplexer and the
//! HParams plugin's parsers, independently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::python;
use rwp_integration_tests::sweeps::{sigma_grid, wait_for_sweep};
use rwp_sdk::{Client, JobState, SweepState};
use rwp_telemetry::hparams::{self, Domain, HParamsPluginData, PluginContent, ProtoValue, Status};
use rwp_telemetry::tfevents::{read_events, read_scalars, run_name, What};

/// The HParams data in the event files of `dir` (not below it), by tag.
fn plugin_data(dir: &Path) -> Vec<(String, HParamsPluginData)> {
    let mut found = Vec::new();
    for file in event_files(dir) {
        for event in read_events(&file).expect("framing and CRCs check out") {
            let Some(What::Summary(summary)) = event.what else { continue };
            found.extend(summary.value.iter().filter_map(|v| Some((v.tag.clone(), hparams::plugin_data(v)?))));
        }
    }
    found
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_trials_are_hparams_sessions_of_the_sweeps_experiment() {
    let cluster = Cluster::start(2).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let sigmas = [0.01, 0.1];
    let created = client.create_sweep("sigma grid", &sigma_grid(&sigmas, 1, 2, None)).await.unwrap();
    let sweep = wait_for_sweep(&client, &created.id, Duration::from_secs(120)).await;
    assert_eq!(sweep.state, SweepState::Succeeded, "{:?}", sweep.error);

    let logdir = cluster.data_dir().join("tensorboard");
    let sweep_dir = logdir.join(run_name("sigma grid", &sweep.id));
    assert_eq!(sweep_dir.file_name().unwrap().to_string_lossy(), format!("sigma_grid-{}", sweep.id));

    // The experiment, in the sweep's own run.
    let experiment = plugin_data(&sweep_dir);
    assert_eq!(experiment.len(), 1, "{experiment:?}");
    assert_eq!(experiment[0].0, hparams::EXPERIMENT_TAG);
    let Some(PluginContent::Experiment(experiment)) = &experiment[0].1.data else { panic!("{experiment:?}") };
    assert_eq!(experiment.hparam_infos.len(), 1);
    let sigma = &experiment.hparam_infos[0];
    assert_eq!((sigma.name.as_str(), sigma.r#type), ("sigma", hparams::DataType::Float64 as i32));
    let Some(Domain::Discrete(values)) = &sigma.domain else { panic!("{sigma:?}") };
    assert_eq!(values.values, sigmas.map(ProtoValue::number));
    let metrics: Vec<&str> = experiment.metric_infos.iter().map(|m| m.name.as_ref().unwrap().tag.as_str()).collect();
    assert!(metrics.contains(&"validation/accuracy") && metrics.contains(&"test/accuracy"), "{metrics:?}");

    // Each trial: its session's start and end, its scalars, in its own run below the sweep's.
    let mut expected = BTreeMap::new();
    for (trial, sigma) in sweep.trials.iter().zip(sigmas) {
        let job = trial.job.as_ref().expect("every trial ran");
        assert_eq!(job.state, JobState::Succeeded, "trial {}: {:?}", trial.index, job.error);
        let run = format!("{}-sigma={sigma}-{}", trial.index, job.id);
        let dir = sweep_dir.join(&run);
        let data = plugin_data(&dir);
        let tags: Vec<&str> = data.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, [hparams::SESSION_START_INFO_TAG, hparams::SESSION_END_INFO_TAG], "{run}");
        let Some(PluginContent::SessionStartInfo(start)) = &data[0].1.data else { panic!("{data:?}") };
        assert_eq!(start.hparams, BTreeMap::from([("sigma".to_owned(), ProtoValue::number(sigma))]));
        let Some(PluginContent::SessionEndInfo(end)) = &data[1].1.data else { panic!("{data:?}") };
        assert_eq!(end.status, Status::Success as i32);
        let evaluation = client.get(&job.id).await.unwrap().last_evaluation.expect("evaluated");
        let validation = evaluation.validation_accuracy.expect("a validation accuracy");
        let scalars = read_scalars(&event_files(&dir)[0]).unwrap();
        let last = scalars.iter().rev().find(|(_, tag, _)| tag == "validation/accuracy").expect("validation accuracy");
        assert_eq!(last.2, validation as f32);
        expected.insert(format!("{}/{run}", sweep_dir.file_name().unwrap().to_string_lossy()), (sigma, validation));
    }

    // TensorBoard's own reading: the multiplexer over the whole log
    // directory, the HParams plugin's parsers, each session's last scalar.
    let script = r#"
import json, sys
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util
from google.protobuf import json_format
m = plugin_event_multiplexer.EventMultiplexer()
m.AddRunsFromDirectory(sys.argv[1])
m.Reload()
out = {"experiments": {}, "sessions": {}}
for run, tags in m.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
    if metadata.EXPERIMENT_TAG in tags:
        e = metadata.parse_experiment_plugin_data(tags[metadata.EXPERIMENT_TAG])
        out["experiments"][run] = {
            "hparams": {h.name: json_format.MessageToDict(h.domain_discrete) for h in e.hparam_infos},
            "metrics": [i.name.tag for i in e.metric_infos],
        }
    if metadata.SESSION_START_INFO_TAG in tags:
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
        last = m.Tensors(run, "validation/accuracy")[-1]
        out["sessions"][run] = {
            "hparams": {k: json_format.MessageToDict(v) for k, v in start.hparams.items()},
            "status": end.status,
            "validation/accuracy": float(tensor_util.make_ndarray(last.tensor_proto)),
        }
print(json.dumps(out))
"#;
    let output = python().arg("-c").arg(script).arg(&logdir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sweep_run = sweep_dir.file_name().unwrap().to_string_lossy().into_owned();
    let experiment = &read["experiments"][&sweep_run];
    assert_eq!(experiment["hparams"]["sigma"], serde_json::json!(sigmas), "{read}");
    assert!(experiment["metrics"].as_array().unwrap().contains(&"validation/accuracy".into()), "{read}");
    let sessions = read["sessions"].as_object().unwrap();
    assert_eq!(sessions.len(), expected.len(), "{read}");
    for (run, (sigma, validation)) in expected {
        let session = &sessions[&run];
        assert_eq!(session["hparams"]["sigma"], sigma, "{run}: {read}");
        assert_eq!(session["status"], Status::Success as i32, "{run}: {read}");
        assert_eq!(session["validation/accuracy"].as_f64().unwrap(), f64::from(validation as f32), "{run}: {read}");
    }
    cluster.shutdown().await;
}
