//! The validation split: held-out samples drawn from the job's seed, the
//! same every time and never trained on; a distributed job that holds one out
//! is still bit-identical to the local trainer, and reports validation
//! accuracy next to test accuracy, equal to the local trainer's.

use std::time::Duration;

use rwp_core::data::Dataset;
use rwp_core::trainer::LocalTrainer;
use rwp_integration_tests::cluster::{connect, data_dir, export, start_server, start_worker, submit, wait_for_success};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::plan::validation_split;
use rwp_spec::Method;
use tch::Device;

const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn the_held_out_samples_are_seeded_and_disjoint_from_the_training_samples() {
    let mut spec = small_job(5, Method::MArwp, 12);
    let full = Dataset::for_spec(&spec).unwrap();
    assert!(full.validation.is_none(), "fraction 0 holds nothing out");
    spec.validation_fraction = 0.25;
    let data = Dataset::for_spec(&spec).unwrap();
    let again = Dataset::for_spec(&spec).unwrap();
    let validation = data.validation.as_ref().unwrap();
    assert_eq!(validation.len(), full.train.len() / 4);
    assert_eq!(data.train.len() + validation.len(), full.train.len());
    assert_eq!(
        (&data.train.images, &again.validation.as_ref().unwrap().labels),
        (&again.train.images, &validation.labels)
    );
    // The split's samples are the full training set's, at the split's indices.
    let (train, held_out) = validation_split(&spec, full.train.len());
    let image = full.train.images.len() / full.train.len();
    for (k, &i) in held_out.iter().enumerate() {
        let i = i as usize;
        assert_eq!(validation.images[k * image..(k + 1) * image], full.train.images[i * image..(i + 1) * image]);
        assert_eq!(validation.labels[k], full.train.labels[i]);
    }
    for (k, &i) in train.iter().enumerate() {
        assert_eq!(data.train.labels[k], full.train.labels[i as usize]);
    }
    assert!(held_out.iter().all(|i| train.binary_search(i).is_err()), "disjoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_job_with_a_validation_split_matches_the_local_trainer() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let mut spec = small_job(6, Method::MArwp, 12);
    spec.validation_fraction = 0.2;
    let id = submit(&mut client, "validation", &spec).await;
    let job = wait_for_success(&mut client, &id, TIMEOUT).await;
    // 800 training samples: 12 updates per epoch of 64, where 1000 give 15.
    assert_eq!(job.updates_per_epoch, 12);
    assert_bit_identical("validation split", &export(&mut client, &id).await, &spec);

    let evaluation = job.last_evaluation.expect("evaluated at the end");
    tch::set_num_threads(1);
    let mut local = LocalTrainer::new(spec.clone(), Device::Cpu).unwrap();
    while !local.is_done() {
        local.step().unwrap();
    }
    let want = local.evaluate_validation().unwrap().unwrap();
    assert_eq!(evaluation.validation_accuracy, Some(want.accuracy));
    assert_eq!(evaluation.validation_loss, Some(want.loss));
    assert_eq!(evaluation.test_accuracy, local.evaluate().unwrap().accuracy);
}
