//! A real S3-compatible server on loopback for the object-storage tests:
//! moto in server mode (installed into .venv by scripts/setup-libtorch.sh),
//! driven by tests/reference/s3_fixture.py (boto3).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::python;

/// A moto server process, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
}

/// The access key the server knows once [`S3Server::enforce_credentials`] ran.
#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/s3_fixture.py")
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    /// Starts moto on `port` (a restart on the port of one that was stopped).
    pub fn start_on(port: u16) -> Self {
        let child = python()
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts (scripts/setup-libtorch.sh installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {addr} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, addr }
    }

    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn fixture(&self, args: &[&str]) -> String {
        let out = python().arg(fixture()).args(args).output().unwrap();
        assert!(out.status.success(), "s3_fixture {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates `bucket` (if needed) and uploads every file under `folder`
    /// to keys `prefix/relative/path`.
    pub fn upload(&self, bucket: &str, folder: &Path, prefix: &str) {
        self.fixture(&["upload", &self.endpoint(), bucket, &folder.display().to_string(), prefix]);
    }

    /// Creates a user with an access key, then makes the server refuse any
    /// other credentials; returns the key.
    pub fn enforce_credentials(&self) -> AccessKey {
        let json: serde_json::Value = serde_json::from_str(&self.fixture(&["user", &self.endpoint()])).unwrap();
        self.fixture(&["enforce", &self.endpoint()]);
        AccessKey { id: json["id"].as_str().unwrap().to_owned(), secret: json["secret"].as_str().unwrap().to_owned() }
    }

    /// The environment a worker (or the local trainer) reads the server with.
    #[must_use]
    pub fn env(&self, key: &AccessKey) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), key.id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), key.secret.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT".into(), self.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// Stops the server (its data is gone with it).
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.addr.port()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
