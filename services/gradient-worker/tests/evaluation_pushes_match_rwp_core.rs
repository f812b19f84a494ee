//! An evaluation shard a worker pushes holds, batch by batch, exactly what
//! rwp-core computes for it, and a gradient task of the same version in
//! between fetches no weights again.

mod common;

use std::time::Duration;

use common::{fixture, wire_eval_task, wire_task, worker_config, FakeState, Running, Worker, JOB_ID};
use rwp_core::data::Dataset;
use rwp_core::model::Model;
use rwp_core::trainer::evaluate_batches;
use rwp_spec::eval::{eval_tasks, EvalSplit, SplitPlan};
use rwp_spec::plan::init_seed;
use tch::Device;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluated_batches_are_bit_identical_to_rwp_core() {
    let fx = fixture();
    let data = Dataset::for_spec(&fx.spec).unwrap();
    let plan = data.eval_plan(&data.test);
    let shards = eval_tasks(0, plan, SplitPlan { samples: 0, ..plan });
    assert_eq!(shards.len(), 2, "the built-in test split has two shards");
    let tasks = vec![
        wire_eval_task(&fx.spec, shards[1]),
        wire_task(&fx.spec, &fx.expected[0].task),
        wire_eval_task(&fx.spec, shards[0]),
    ];
    let server = Running::start_local(FakeState::new("a", &fx, tasks)).await;
    let worker = Worker::start(worker_config(&server.url()));
    let done = server.wait_for(Duration::from_secs(120), |s| s.evaluations.len() == 2 && s.pushes.len() == 1).await;
    assert!(done, "both shards and the gradient arrive");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!((report.tasks_completed, report.tasks_failed), (3, 0));

    tch::set_num_threads(1);
    let model = Model::new(fx.spec.model, data.shape, data.classes);
    let (weights, buffers) = model.init(init_seed(&fx.spec), Device::Cpu);
    let state = server.server.state.lock().unwrap();
    assert_eq!(state.fetches, [(JOB_ID.to_owned(), 0)], "version 0 fetched once for all three tasks");
    for push in &state.evaluations {
        let task = push.task.as_ref().unwrap();
        assert_eq!((task.version, task.split, task.num_shards), (0, 1, 2));
        assert_eq!(push.worker_id, "a-worker-1");
        let batches = plan.shard_batches(task.shard);
        let expected = evaluate_batches(&model, &data, &data.test, batches, &weights, &buffers, Device::Cpu).unwrap();
        let got: Vec<_> = push.batches.iter().map(|b| (b.loss_sum.to_bits(), b.correct.to_bits(), b.samples)).collect();
        let want: Vec<_> = expected.iter().map(|b| (b.loss_sum.to_bits(), b.correct.to_bits(), b.samples)).collect();
        assert_eq!(got, want, "shard {}", task.shard);
    }
    assert!(data.eval_split(EvalSplit::Validation).is_none());
}
