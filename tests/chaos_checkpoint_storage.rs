//! Storage faults under a running job:
//! - a corrupted checkpoint file is detected by its checksum when the server
//!   restarts: the previous checkpoint is used, the event logged, the bad
//!   file kept aside;
//! - a full, then a read-only, checkpoint volume: the job pauses with a
//!   status saying why, nothing already written is damaged, and it resumes
//!   by itself once the volume is writable again.
//!
//! Every job still ends bit-identical to the local trainer. The volume is a
//! small tmpfs the test mounts (it runs as root here and in CI); without the
//! right to mount, the read-only case falls back to file permissions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rwp_integration_tests::cluster::{
    chaos_long, connect, data_dir, export, job, start_worker, submit, wait_for_state, wait_for_step, wait_for_success,
    ServerCommand,
};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_proto::v1::JobState;
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_checkpoint_is_detected_and_the_previous_one_used() {
    let updates = if chaos_long() { 60 } else { 16 };
    let (tmp, dir) = data_dir();
    let log = tmp.path().join("server.log");
    let (mut server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = small_job(31, Method::MArwp, updates);
    let id = submit(&mut client, "corrupted", &spec).await;
    let at = wait_for_step(&mut client, &id, 7, TIMEOUT).await;
    assert!(at.step < updates, "stopped mid-run");
    server.kill_hard();

    let job_dir = dir.join("jobs").join(&id);
    let latest = job_dir.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&latest).unwrap();
    let step = rwp_core::checkpoint::verify(&bytes).unwrap();
    let previous =
        rwp_core::checkpoint::verify(&std::fs::read(job_dir.join("checkpoint.previous.safetensors")).unwrap());
    assert_eq!(previous, Ok(step - 2), "the one before is kept");
    let middle = bytes.len() - (bytes.len() - 8) / 3;
    bytes[middle] ^= 0x40;
    std::fs::write(&latest, &bytes).unwrap();

    let (_server, _) = ServerCommand::new(&dir, &addr.to_string()).log_to(&log).start();
    let mut client = connect(addr).await;
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("corrupted checkpoint", &export(&mut client, &id).await, &spec);

    let text = std::fs::read_to_string(&log).unwrap();
    let line =
        text.lines().find(|l| l.contains("checkpoint unusable")).unwrap_or_else(|| panic!("no event in:\n{text}"));
    assert!(line.contains("checksum mismatch") && line.contains(&format!("step={}", step - 2)), "{line}");
    let kept: Vec<_> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside: {kept:?}");
    println!("chaos: checkpoint of step {step} corrupted; resumed from step {}; bit-identical", step - 2);
}

/// A tmpfs of its own, unmounted when dropped.
struct Volume {
    path: PathBuf,
}

impl Volume {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self { path: path.to_owned() })
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.path).status().unwrap();
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the volume at `dir` with a file until no byte is left; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 1 << 16];
    while file.write_all(&block).is_ok() {}
    while file.write_all(&[0]).is_ok() {}
    path
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Waits for the job to pause, checks it says why and makes no progress,
/// and that the checkpoints already written are intact.
async fn paused_for(
    client: &mut rwp_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    id: &str,
    job_dir: &Path,
    reason: &str,
) -> u64 {
    let paused = wait_for_state(client, id, JobState::Paused, TIMEOUT).await;
    assert!(
        paused.error.contains("could not be written") && paused.error.contains(reason),
        "the status says why: {}",
        paused.error
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let still = job(client, id).await;
    assert_eq!((still.state, still.step), (JobState::Paused as i32, paused.step), "no progress while paused");
    let latest = std::fs::read(job_dir.join("checkpoint.safetensors")).unwrap();
    let step = rwp_core::checkpoint::verify(&latest).expect("the latest checkpoint is intact");
    assert!(step < paused.step, "the checkpoint of step {} was not written", paused.step);
    assert!(!job_dir.join("checkpoint.safetensors.tmp").exists(), "no partial file left behind");
    println!("chaos: paused at step {} ({reason}); latest intact checkpoint: step {step}", paused.step);
    paused.step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_checkpoint_volume_pauses_the_job_until_it_is_writable() {
    let updates = if chaos_long() { 60 } else { 24 };
    let (tmp, dir) = data_dir();
    let volume_dir = tmp.path().join("checkpoints");
    let volume = Volume::mount(&volume_dir, "32m");
    if volume.is_none() && is_root() {
        eprintln!("SKIPPED: cannot mount a tmpfs, and file permissions do not bind root");
        return;
    }
    let flags = ["--checkpoint-dir", volume_dir.to_str().unwrap(), "--checkpoint-retry-ms", "200"];
    let (_server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").extra_flags(&flags).start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = small_job(32, Method::MArwp, updates);
    let id = submit(&mut client, "storage", &spec).await;
    let job_dir = volume_dir.join(&id);
    wait_for_step(&mut client, &id, 4, TIMEOUT).await;

    if let Some(volume) = &volume {
        let filler = fill(&volume.path);
        let step = paused_for(&mut client, &id, &job_dir, "No space left on device").await;
        std::fs::remove_file(filler).unwrap();
        wait_for_step(&mut client, &id, step + 1, TIMEOUT).await;

        volume.remount("ro");
        let step = paused_for(&mut client, &id, &job_dir, "Read-only file system").await;
        volume.remount("rw");
        wait_for_step(&mut client, &id, step + 1, TIMEOUT).await;
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let step = paused_for(&mut client, &id, &job_dir, "Permission denied").await;
        std::fs::set_permissions(&job_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        wait_for_step(&mut client, &id, step + 1, TIMEOUT).await;
    }
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("paused for storage", &export(&mut client, &id).await, &spec);
    println!("chaos: full and read-only checkpoint volume: paused, resumed, {updates} updates bit-identical");
}
