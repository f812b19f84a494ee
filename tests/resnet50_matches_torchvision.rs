//! The built-in ResNet-50 is torchvision's: the same parameter names, order,
//! shapes and count (23,528,522 with 10 classes; 25,557,032 with 1000), and,
//! loaded with rwp-core's initial weights, torchvision's `resnet50` computes
//! the same training-mode logits, gradients and running statistics and the
//! same evaluation-mode logits, bit for bit, on one CPU thread
//! (`tests/reference/resnet50_torchvision.py`).

use rwp_core::model::{BnMode, InputShape, Model};
use rwp_integration_tests::{python, workspace_root};
use rwp_spec::ModelKind;
use tch::{Device, Kind, Tensor};

#[test]
fn resnet50_is_torchvisions_to_the_bit() {
    tch::set_num_threads(1);
    let input = InputShape { channels: 3, height: 32, width: 32 };
    assert_eq!(
        Model::new(ModelKind::Resnet50, InputShape { channels: 3, height: 224, width: 224 }, 1000).num_parameters(),
        25_557_032
    );
    let model = Model::new(ModelKind::Resnet50, input, 10);
    assert_eq!(model.num_parameters(), 23_528_522);
    let (params, buffers) = model.init(5, Device::Cpu);
    let initial_buffers: Vec<Tensor> = buffers.iter().map(Tensor::copy).collect();
    let leaves: Vec<Tensor> = params.iter().map(|p| p.detach().set_requires_grad(true)).collect();
    let x = Tensor::arange(4 * 3 * 32 * 32, (Kind::Float, Device::Cpu)).sin().view([4, 3, 32, 32]);
    let y = Tensor::from_slice(&[0i64, 3, 7, 9]);
    let logits = model.forward(&leaves, &buffers, &x, BnMode::Train);
    let loss = logits.cross_entropy_for_logits(&y);
    let grads = Tensor::run_backward(&[loss], &leaves, false, false);
    let eval_logits = tch::no_grad(|| model.forward(&leaves, &buffers, &x, BnMode::Eval));

    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (i, (spec, p)) in model.params().iter().zip(&params).enumerate() {
        named.push((format!("param.{}", spec.name), p.copy()));
        named.push((format!("order.{i:04}.{}", spec.name), Tensor::from(0.0f32)));
    }
    for (spec, g) in model.params().iter().zip(&grads) {
        named.push((format!("grad.{}", spec.name), g.copy()));
    }
    for ((spec, initial), updated) in model.buffers().iter().zip(&initial_buffers).zip(&buffers) {
        named.push((format!("buffer.{}", spec.name), initial.copy()));
        named.push((format!("updated.{}", spec.name), updated.copy()));
    }
    named.push(("input".into(), x));
    named.push(("labels".into(), y.to_kind(Kind::Float)));
    named.push(("train_logits".into(), logits.detach()));
    named.push(("eval_logits".into(), eval_logits));
    named.push(("count".into(), Tensor::from(model.num_parameters() as f64)));
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("resnet50.safetensors");
    Tensor::write_safetensors(&named, &case).unwrap();

    let out =
        python().arg(workspace_root().join("tests/reference/resnet50_torchvision.py")).arg(&case).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "torchvision disagrees:\n{text}");
    assert!(text.contains(": 0 problems"), "{text}");
}
