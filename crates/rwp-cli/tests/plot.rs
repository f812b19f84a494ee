//! The chart on synthetic curves, without a server: PNG and SVG, with the
//! embedded font (no system fonts needed).

use rwp_cli::plot::{render, Curves, TestPoint, TrainPoint};

fn synthetic(label: &str, speed: f64, steps: u64) -> Curves {
    let train = (1..=steps)
        .map(|s| TrainPoint {
            step: s,
            wall_time_s: s as f64 / speed,
            loss: 2.3 * (-(s as f64) / 60.0).exp() + 0.3 + 0.05 * ((s * 7919 % 13) as f64 / 13.0),
        })
        .collect();
    let test = (1..=steps / 20)
        .map(|e| {
            let s = e * 20;
            TestPoint { step: s, wall_time_s: s as f64 / speed, accuracy: 0.85 - 0.75 * (-(s as f64) / 80.0).exp() }
        })
        .collect();
    Curves { label: label.to_owned(), train, test, validation: vec![] }
}

/// With `RWP_PLOT_KEEP=DIR`, copies a drawn file there to look at.
fn keep(path: &std::path::Path) {
    if let Some(dir) = std::env::var_os("RWP_PLOT_KEEP") {
        std::fs::copy(path, std::path::Path::new(&dir).join(path.file_name().unwrap())).unwrap();
    }
}

fn jobs() -> Vec<Curves> {
    vec![synthetic("cifar-marwp (m-arwp)", 5.8, 240), synthetic("baseline (sgd)", 9.5, 200)]
}

#[test]
fn writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.png");
    render(&path, &jobs(), (1200, 900)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "suspiciously small PNG: {} bytes", bytes.len());
    keep(&path);
}

#[test]
fn writes_an_svg_with_the_legend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    render(&path, &jobs(), (1200, 900)).unwrap();
    keep(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("<svg"), "not an SVG");
    for want in ["cifar-marwp (m-arwp)", "baseline (sgd)", "Train loss by step", "Test accuracy by wall time", "step"] {
        assert!(text.contains(want), "{want} missing from the SVG");
    }
    assert!(text.matches("<polyline").count() >= 8, "a line per job per panel");
}

#[test]
fn empty_and_degenerate_series_still_draw() {
    let dir = tempfile::tempdir().unwrap();
    let single = Curves {
        label: "one step (sgd)".into(),
        train: vec![
            TrainPoint { step: 1, wall_time_s: 0.5, loss: f64::NAN },
            TrainPoint { step: 2, wall_time_s: 1.0, loss: 2.0 },
        ],
        test: vec![],
        validation: vec![],
    };
    for name in ["empty.png", "empty.svg"] {
        let path = dir.path().join(name);
        render(&path, &[Curves { label: "new (m-arwp)".into(), ..Curves::default() }, single.clone()], (600, 400))
            .unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000, "{name}");
        keep(&path);
    }
    let svg = std::fs::read_to_string(dir.path().join("empty.svg")).unwrap();
    assert!(svg.contains("no data yet"), "empty panels say so");
}

#[test]
fn other_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = render(&dir.path().join("curves.jpg"), &jobs(), (600, 400)).unwrap_err();
    assert!(err.contains(".png or .svg"), "{err}");
}
