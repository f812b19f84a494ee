//! Writes the binary seeds of the `proto_job_spec` target (encoded rwp.v1
//! `SubmitJobRequest`s) into seeds/proto_job_spec/. Run from fuzz/ with
//! `cargo run --example write_seeds` after the wire format changes.

use std::path::{Path, PathBuf};

use prost::Message;
use rwp_proto::v1;
use rwp_spec::{DatasetKind, GradientEncoding, JobSpec, LrSchedule, Method, NonFinitePolicy};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/proto_job_spec");
    std::fs::create_dir_all(&dir)?;
    let mut specs: Vec<(String, JobSpec)> =
        Method::ALL.iter().map(|&m| (format!("reference-{}", m.name()), JobSpec::reference(m))).collect();
    let mut sharded = JobSpec::reference(Method::MArwp);
    sharded.batch_size = 96;
    sharded.clean_shards = 3;
    sharded.perturbed_shards = 4;
    sharded.independent_noise = true;
    sharded.max_updates = Some(17);
    sharded.warmup_updates = 5;
    sharded.lr_schedule = LrSchedule::Step { milestones: vec![1, 2, 5], gamma: 0.5 };
    sharded.non_finite = NonFinitePolicy::Skip;
    sharded.gradient_encoding = GradientEncoding::Bf16;
    specs.push(("sharded-m-arwp".to_owned(), sharded));
    let mut cifar = JobSpec::reference(Method::Sam);
    cifar.dataset = DatasetKind::Cifar10;
    cifar.data_dir = Some(PathBuf::from("/data/cifar10"));
    cifar.epochs = 200;
    cifar.nesterov = true;
    specs.push(("cifar-sam".to_owned(), cifar));
    for (name, spec) in specs {
        spec.validate().expect("seeds are valid specs");
        let request = v1::SubmitJobRequest { name: name.clone(), spec: Some((&spec).into()), request_id: None, ..Default::default() };
        std::fs::write(dir.join(format!("{name}.bin")), request.encode_to_vec())?;
    }
    Ok(())
}
