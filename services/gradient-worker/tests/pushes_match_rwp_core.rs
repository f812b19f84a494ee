//! The worker's pushed results are byte for byte what rwp-core computes for
//! the same tasks, with the right header, in bounded chunks.

mod common;

use std::time::Duration;

use common::{fixture, wire_task, worker_config, FakeState, Running, Worker, JOB_ID};
use rwp_proto::v1;
use rwp_spec::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_payloads_are_byte_identical_to_rwp_core() {
    let fx = fixture();
    let tasks: Vec<v1::Task> = fx.expected.iter().map(|e| wire_task(&fx.spec, &e.task)).collect();
    let server = Running::start_local(FakeState::new("a", &fx, tasks)).await;
    let config = worker_config(&server.url());
    let chunk_bytes = config.chunk_bytes;
    let worker = Worker::start(config);

    assert!(server.wait_for(Duration::from_secs(120), |s| s.pushes.len() == 2).await, "both results arrive");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.tasks_completed, 2);
    assert_eq!(report.tasks_failed, 0);
    assert_eq!(report.registrations, 1);

    let state = server.server.state.lock().unwrap();
    assert_eq!(state.registered.len(), 1);
    assert_eq!(state.registered[0].1.name, "test-worker");
    assert_eq!(state.registered[0].1.device, "cpu");
    assert_eq!(state.fetches, [(JOB_ID.to_owned(), 0)], "weights fetched once, then cached");
    assert!(state.releases.is_empty());

    for (expected, lease_id) in fx.expected.iter().zip(&state.leased) {
        let push = state.pushes.iter().find(|p| &p.header.lease_id == lease_id).expect("a push per lease");
        let h = &push.header;
        let role = rwp_proto::role_from_wire(h.role).unwrap();
        assert_eq!(role, expected.task.role);
        assert_eq!(h.worker_id, "a-worker-1");
        assert_eq!(h.job_id, JOB_ID);
        assert_eq!((h.step, h.shard, h.weights_version), (0, expected.task.shard, 0));
        assert_eq!(h.encoding, v1::GradientEncoding::F32 as i32);
        assert_eq!(h.gradient_bytes, expected.gradient_bytes);
        assert_eq!(h.buffer_bytes, expected.buffer_bytes);
        assert_eq!(h.loss.to_bits(), expected.loss.to_bits(), "{role:?} loss");
        assert_eq!(h.accuracy.to_bits(), expected.accuracy.to_bits(), "{role:?} accuracy");
        assert_eq!(push.payload.len() as u64, h.gradient_bytes + h.buffer_bytes);
        assert!(push.payload == expected.payload, "{role:?} payload differs from rwp-core's");
        assert!(push.chunk_sizes.len() > 1, "several chunks");
        assert!(push.chunk_sizes.iter().all(|&n| n > 0 && n <= chunk_bytes), "{:?}", push.chunk_sizes);
        match role {
            Role::Clean => assert_eq!(h.buffer_bytes, fx.buffers_len, "clean results carry BN buffers"),
            _ => assert_eq!(h.buffer_bytes, 0, "perturbed results carry none"),
        }
    }
    assert!(fx.buffers_len > 0);
}
