//! What the parameter server plans without reading data agrees with the
//! loaders, and an evaluation summed from shards (any grouping of its
//! 500-sample batches) is the one-pass evaluation to the bit.

use rwp_core::data::{DataError, Dataset, DatasetInfo};
use rwp_core::trainer::{evaluate_batches, LocalTrainer};
use rwp_spec::eval::{eval_tasks, EvalSplit, EvalTotals};
use rwp_spec::{DatasetKind, JobSpec, Method};
use tch::{Device, Kind, Tensor};

fn spec(validation_fraction: f64) -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.batch_size = 64;
    spec.validation_fraction = validation_fraction;
    spec
}

#[test]
fn dataset_info_is_what_the_loader_loads() {
    for fraction in [0.0, 0.2, 0.37] {
        let spec = spec(fraction);
        let info = DatasetInfo::for_spec(&spec);
        let data = Dataset::for_spec(&spec).unwrap();
        let validation = data.validation.as_ref().map_or(0, rwp_core::data::Split::len);
        assert_eq!((info.train, info.validation, info.test), (data.train.len(), validation, data.test.len()));
        assert_eq!((info.shape, info.classes), (data.shape, data.classes));
    }
    let mut mnist = spec(0.1);
    mnist.dataset = DatasetKind::Mnist;
    let info = DatasetInfo::for_spec(&mnist);
    assert_eq!((info.train, info.validation, info.test, info.classes), (54_000, 6_000, 10_000, 10));
    mnist.dataset = DatasetKind::Cifar100;
    let info = DatasetInfo::for_spec(&mnist);
    assert_eq!((info.train, info.validation, info.test, info.classes), (45_000, 5_000, 10_000, 100));
}

#[test]
fn files_of_another_size_than_the_standard_one_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (prefix, n) in [("train", 3u32), ("t10k", 2)] {
        let mut images: Vec<u8> = [0x0803u32, n, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect();
        images.resize(images.len() + n as usize * 784, 7);
        std::fs::write(dir.path().join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let mut labels: Vec<u8> = [0x0801u32, n].iter().flat_map(|v| v.to_be_bytes()).collect();
        labels.resize(labels.len() + n as usize, 1);
        std::fs::write(dir.path().join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    let mut spec = spec(0.0);
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some(dir.path().to_owned());
    let err = Dataset::for_spec(&spec).unwrap_err();
    assert!(matches!(err, DataError::Size { split: "train", found: 3, expected: 60_000, .. }), "{err}");
    assert_eq!(err.redacted(), "the train split of mnist has 3 samples; the dataset has 60000");
}

#[test]
fn an_evaluation_summed_from_its_shards_is_the_one_pass_evaluation() {
    tch::set_num_threads(1);
    let mut trainer = LocalTrainer::new(spec(0.2), Device::Cpu).unwrap();
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    let (model, data, state) = (&trainer.model, &trainer.data, &trainer.state);
    let info = DatasetInfo::for_spec(&trainer.spec);
    let tasks = eval_tasks(3, info.eval_plan(EvalSplit::Test), info.eval_plan(EvalSplit::Validation));
    assert!(tasks.len() >= 3, "several shards: {tasks:?}");
    for (split, whole) in [
        (EvalSplit::Test, trainer.evaluate().unwrap()),
        (EvalSplit::Validation, trainer.evaluate_validation().unwrap().unwrap()),
    ] {
        let samples = data.eval_split(split).unwrap();
        let mut totals = EvalTotals::default();
        for task in tasks.iter().filter(|t| t.split == split) {
            let batches = data.eval_plan(samples).shard_batches(task.shard);
            for batch in
                evaluate_batches(model, data, samples, batches, state.weights(), state.buffers(), Device::Cpu).unwrap()
            {
                totals.add(&batch);
            }
        }
        assert_eq!(
            (totals.loss().to_bits(), totals.accuracy().to_bits()),
            (whole.loss.to_bits(), whole.accuracy.to_bits())
        );

        // The sum as it was written before shards: one pass over batches of 500.
        let _no_grad = tch::no_grad_guard();
        let (mut loss, mut correct, mut n) = (0.0, 0.0, 0usize);
        for batch in data.batches(samples, 500).map(Result::unwrap) {
            let logits = model.forward(state.weights(), state.buffers(), &batch.images, rwp_core::model::BnMode::Eval);
            loss += logits.cross_entropy_for_logits(&batch.labels).double_value(&[]) * batch.len() as f64;
            let hits: Tensor = logits.argmax(-1, false).eq_tensor(&batch.labels).to_kind(Kind::Double);
            correct += hits.sum(Kind::Double).double_value(&[]);
            n += batch.len();
        }
        assert_eq!(
            ((loss / n as f64).to_bits(), (correct / n as f64).to_bits()),
            (whole.loss.to_bits(), whole.accuracy.to_bits())
        );
    }
}
