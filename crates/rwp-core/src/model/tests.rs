use rwp_spec::ModelKind;
use tch::{Device, Kind, Tensor};

use super::{BnMode, InputShape, Model};

const CIFAR: InputShape = InputShape { channels: 3, height: 32, width: 32 };

#[test]
fn parameter_counts_match_the_reference_architectures() {
    // Counts of the reference PyTorch models for CIFAR-10 (10 classes).
    let expected = [
        (ModelKind::Resnet18, 11_173_962),
        // torchvision's resnet50(num_classes=10) (tests/resnet50_matches_torchvision.rs).
        (ModelKind::Resnet50, 23_528_522),
        (ModelKind::Vgg16Bn, 14_728_266),
        (ModelKind::Wrn16_8, 10_961_370),
        (ModelKind::Wrn28_10, 36_479_194),
    ];
    for (kind, count) in expected {
        assert_eq!(Model::new(kind, CIFAR, 10).num_parameters(), count, "{kind}");
    }
}

#[test]
fn resnet18_declares_parameters_in_pytorch_order() {
    let model = Model::new(ModelKind::Resnet18, CIFAR, 10);
    let names: Vec<&str> = model.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        &names[..8],
        &[
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
        ]
    );
    let shortcut = names.iter().position(|n| *n == "layer2.0.shortcut.0.weight").unwrap();
    assert_eq!(names[shortcut - 1], "layer2.0.bn2.bias");
    assert_eq!(names[names.len() - 2..], ["linear.weight", "linear.bias"]);
}

#[test]
fn every_model_runs_forward_and_backward_on_small_inputs() {
    let input = InputShape { channels: 3, height: 16, width: 16 };
    let kinds = [
        ModelKind::Mlp,
        ModelKind::SmallCnn,
        ModelKind::Resnet18,
        ModelKind::Resnet50,
        ModelKind::Vgg16Bn,
        ModelKind::Wrn16_8,
    ];
    for kind in kinds {
        let model = Model::new(kind, input, 7);
        let (params, buffers) = model.init(1, Device::Cpu);
        let leaves: Vec<Tensor> = params.iter().map(|p| p.detach().set_requires_grad(true)).collect();
        let x = Tensor::arange(2 * 3 * 16 * 16, (Kind::Float, Device::Cpu)).sin().view([2, 3, 16, 16]);
        let logits = model.forward(&leaves, &buffers, &x, BnMode::Train);
        assert_eq!(logits.size(), vec![2, 7], "{kind}");
        let loss = logits.cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 3]));
        let grads = Tensor::run_backward(&[loss], &leaves, false, false);
        assert_eq!(grads.len(), params.len());
        for (g, p) in grads.iter().zip(&params) {
            assert_eq!(g.size(), p.size());
        }
    }
}

#[test]
fn init_is_deterministic_and_seed_dependent() {
    let model = Model::new(ModelKind::SmallCnn, CIFAR, 10);
    let (a, _) = model.init(5, Device::Cpu);
    let (b, _) = model.init(5, Device::Cpu);
    let (c, _) = model.init(6, Device::Cpu);
    assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
    assert!(!a[0].equal(&c[0]));
}

#[test]
fn batch_stats_mode_leaves_running_statistics_alone() {
    let model = Model::new(ModelKind::SmallCnn, CIFAR, 10);
    let (params, buffers) = model.init(5, Device::Cpu);
    let before: Vec<Tensor> = buffers.iter().map(Tensor::copy).collect();
    let x = Tensor::arange(4 * 3 * 32 * 32, (Kind::Float, Device::Cpu)).cos().view([4, 3, 32, 32]);
    let _ = model.forward(&params, &buffers, &x, BnMode::BatchStats);
    assert!(before.iter().zip(&buffers).all(|(a, b)| a.equal(b)));
    let _ = model.forward(&params, &buffers, &x, BnMode::Train);
    assert!(!before[0].equal(&buffers[0]));
}
