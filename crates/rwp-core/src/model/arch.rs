//! The architectures, declared in the parameter order of their reference
//! PyTorch implementations.

use super::{Builder, InputShape, Layer};

/// Three fully connected layers on the flattened image.
pub(super) fn mlp(b: &mut Builder, input: InputShape, classes: i64) -> Vec<Layer> {
    let features = input.channels * input.height * input.width;
    vec![
        Layer::Flatten,
        b.linear("fc1", features, 512),
        Layer::Relu,
        b.linear("fc2", 512, 256),
        Layer::Relu,
        b.linear("fc3", 256, classes),
    ]
}

/// Two conv-BN-ReLU-pool stages and a linear classifier.
pub(super) fn small_cnn(b: &mut Builder, input: InputShape, classes: i64) -> Vec<Layer> {
    let mut layers = vec![
        b.conv("conv1", input.channels, 32, 3, 1, false),
        b.batch_norm("bn1", 32),
        Layer::Relu,
        Layer::MaxPool2,
        b.conv("conv2", 32, 64, 3, 1, false),
        b.batch_norm("bn2", 64),
        Layer::Relu,
        Layer::MaxPool2,
        Layer::Flatten,
    ];
    let features = 64 * (input.height / 4) * (input.width / 4);
    layers.push(b.linear("fc", features, classes));
    layers
}

/// ResNet-18, CIFAR variant (3×3 stem, no stem pooling), as in the
/// references' `models/resnet.py`.
pub(super) fn resnet18(b: &mut Builder, input: InputShape, classes: i64) -> Vec<Layer> {
    let mut layers = vec![b.conv("conv1", input.channels, 64, 3, 1, false), b.batch_norm("bn1", 64), Layer::Relu];
    let mut in_planes = 64;
    for (stage, (planes, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if block == 0 { stride } else { 1 };
            let name = format!("layer{}.{block}", stage + 1);
            let conv1 = b.conv(&format!("{name}.conv1"), in_planes, planes, 3, stride, false);
            let bn1 = b.batch_norm(&format!("{name}.bn1"), planes);
            let conv2 = b.conv(&format!("{name}.conv2"), planes, planes, 3, 1, false);
            let bn2 = b.batch_norm(&format!("{name}.bn2"), planes);
            let shortcut = if stride != 1 || in_planes != planes {
                vec![
                    b.conv(&format!("{name}.shortcut.0"), in_planes, planes, 1, stride, false),
                    b.batch_norm(&format!("{name}.shortcut.1"), planes),
                ]
            } else {
                vec![]
            };
            layers.push(Layer::Residual { body: vec![conv1, bn1, Layer::Relu, conv2, bn2], shortcut });
            layers.push(Layer::Relu);
            in_planes = planes;
        }
    }
    layers.extend([Layer::GlobalAvgPool, Layer::Flatten, b.linear("linear", 512, classes)]);
    layers
}

/// ResNet-50 as torchvision's `resnet50`, in its parameter order and names:
/// the ImageNet stem (7×7 stride-2 conv, 3×3 stride-2 max pool) and
/// bottleneck blocks [3, 4, 6, 3] with the stride on their 3×3 conv
/// ("ResNet v1.5"); 25,557,032 parameters with 1000 classes, as
/// torchvision's.
pub(super) fn resnet50(b: &mut Builder, input: InputShape, classes: i64) -> Vec<Layer> {
    let mut layers = vec![
        b.conv("conv1", input.channels, 64, 7, 2, false),
        b.batch_norm("bn1", 64),
        Layer::Relu,
        Layer::MaxPool3Stride2,
    ];
    let mut in_planes = 64;
    for (stage, (planes, blocks, stride)) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)].into_iter().enumerate()
    {
        for block in 0..blocks {
            let stride = if block == 0 { stride } else { 1 };
            let name = format!("layer{}.{block}", stage + 1);
            let out = planes * 4;
            let body = vec![
                b.conv(&format!("{name}.conv1"), in_planes, planes, 1, 1, false),
                b.batch_norm(&format!("{name}.bn1"), planes),
                Layer::Relu,
                b.conv(&format!("{name}.conv2"), planes, planes, 3, stride, false),
                b.batch_norm(&format!("{name}.bn2"), planes),
                Layer::Relu,
                b.conv(&format!("{name}.conv3"), planes, out, 1, 1, false),
                b.batch_norm(&format!("{name}.bn3"), out),
            ];
            let shortcut = if stride != 1 || in_planes != out {
                vec![
                    b.conv(&format!("{name}.downsample.0"), in_planes, out, 1, stride, false),
                    b.batch_norm(&format!("{name}.downsample.1"), out),
                ]
            } else {
                vec![]
            };
            layers.push(Layer::Residual { body, shortcut });
            layers.push(Layer::Relu);
            in_planes = out;
        }
    }
    layers.extend([Layer::GlobalAvgPool, Layer::Flatten, b.linear("fc", 2048, classes)]);
    layers
}

/// VGG16 with BatchNorm (conv layers with bias), as in the references'
/// `models/vgg.py`. Pooling stages are skipped once the feature map is 1×1,
/// so small inputs work too.
pub(super) fn vgg16_bn(b: &mut Builder, input: InputShape, classes: i64) -> Vec<Layer> {
    const CFG: [i64; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    let mut layers = Vec::new();
    let (mut channels, mut size, mut index) = (input.channels, input.height.min(input.width), 0);
    for v in CFG {
        if v == 0 {
            if size >= 2 {
                layers.push(Layer::MaxPool2);
                size /= 2;
            }
            index += 1;
        } else {
            layers.push(b.conv(&format!("features.{index}"), channels, v, 3, 1, true));
            layers.push(b.batch_norm(&format!("features.{}", index + 1), v));
            layers.push(Layer::Relu);
            channels = v;
            index += 3;
        }
    }
    layers.extend([Layer::GlobalAvgPool, Layer::Flatten, b.linear("classifier", 512, classes)]);
    layers
}

/// Wide ResNet `depth`-`widen` with pre-activation blocks and no dropout,
/// as in the references' `models/wide_resnet.py`.
pub(super) fn wide_resnet(b: &mut Builder, input: InputShape, classes: i64, depth: i64, widen: i64) -> Vec<Layer> {
    let blocks = (depth - 4) / 6;
    let widths = [16, 16 * widen, 32 * widen, 64 * widen];
    let mut layers = vec![b.conv("conv1", input.channels, widths[0], 3, 1, false)];
    for stage in 0..3 {
        let stride = if stage == 0 { 1 } else { 2 };
        for i in 0..blocks {
            let (cin, cout) = (if i == 0 { widths[stage] } else { widths[stage + 1] }, widths[stage + 1]);
            let stride = if i == 0 { stride } else { 1 };
            let name = format!("block{}.layer.{i}", stage + 1);
            let bn1 = b.batch_norm(&format!("{name}.bn1"), cin);
            let conv1 = b.conv(&format!("{name}.conv1"), cin, cout, 3, stride, false);
            let bn2 = b.batch_norm(&format!("{name}.bn2"), cout);
            let conv2 = b.conv(&format!("{name}.conv2"), cout, cout, 3, 1, false);
            if cin == cout {
                layers.push(Layer::Residual {
                    body: vec![bn1, Layer::Relu, conv1, bn2, Layer::Relu, conv2],
                    shortcut: vec![],
                });
            } else {
                let shortcut = b.conv(&format!("{name}.convShortcut"), cin, cout, 1, stride, false);
                layers.extend([bn1, Layer::Relu]);
                layers.push(Layer::Residual { body: vec![conv1, bn2, Layer::Relu, conv2], shortcut: vec![shortcut] });
            }
        }
    }
    layers.extend([
        b.batch_norm("bn1", widths[3]),
        Layer::Relu,
        Layer::GlobalAvgPool,
        Layer::Flatten,
        b.linear("fc", widths[3], classes),
    ]);
    layers
}
