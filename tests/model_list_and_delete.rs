//! `ListModels` shows a user its own uploads (an admin every owner's) and
//! `DeleteModel` gives up the caller's ownership: NOT_FOUND for a file it
//! does not own. A file leaves the disk once no owner is left and no
//! running job names it; while one does, it stays until that job ends.

use std::time::Duration;

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::models::{client_as, mlp, owners, script_job, stored_files};
use rwp_sdk::{Client, SdkError};

/// (owner, sha256, size) of each file `client` lists.
async fn listed(client: &Client) -> Vec<(String, String, u64)> {
    let models = client.list_models().await.unwrap();
    models.into_iter().map(|m| (m.owner.unwrap_or_default(), m.sha256, m.size_bytes)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_and_delete_their_own_files_and_the_last_owner_removes_it() {
    let tokens = owners();
    let cluster = Cluster::start_configured(0, |c| c.tokens_file = Some(tokens.path.clone()), |_| {}).await;
    let url = cluster.url();
    let alice = client_as(&url, Some(&tokens), "alice").await;
    let bob = client_as(&url, Some(&tokens), "bob").await;
    let root = client_as(&url, Some(&tokens), "root").await;
    let tmp = tempfile::tempdir().unwrap();
    let five = mlp(tmp.path(), 5);
    let shared = alice.upload_model(&five).await.unwrap();
    assert_eq!(bob.upload_model(&five).await.unwrap(), shared);
    let own = alice.upload_model(&mlp(tmp.path(), 10)).await.unwrap();
    let row = |owner: &str, file: &rwp_sdk::ModelFile| (owner.to_owned(), file.sha256.clone(), file.size_bytes);

    let mut hers = listed(&alice).await;
    hers.sort();
    let mut expected = vec![row("alice", &shared), row("alice", &own)];
    expected.sort();
    assert_eq!(hers, expected);
    assert_eq!(listed(&bob).await, [row("bob", &shared)]);
    let mut all = listed(&root).await;
    all.sort();
    expected.push(row("bob", &shared));
    expected.sort();
    assert_eq!(all, expected, "an admin sees every owner's files");
    let uploaded = alice.list_models().await.unwrap()[0].uploaded_unix_ms;
    assert!(uploaded > 1_700_000_000_000, "{uploaded}");

    // Not his: NOT_FOUND, as a digest nobody uploaded.
    let refused = bob.delete_model(&own.sha256).await.unwrap_err();
    let SdkError::NotFound(message) = &refused else { panic!("{refused:?}") };
    let unknown = rwp_spec::sha256_hex(b"nobody");
    let SdkError::NotFound(unknown_message) = bob.delete_model(&unknown).await.unwrap_err() else { panic!() };
    assert_eq!(*message, unknown_message.replace(&unknown, &own.sha256));
    assert!(matches!(root.delete_model(&own.sha256).await, Err(SdkError::NotFound(_))), "an admin owns none");

    // The shared file stays while bob owns it, and goes with his copy.
    alice.delete_model(&shared.sha256).await.unwrap();
    assert!(matches!(alice.delete_model(&shared.sha256).await, Err(SdkError::NotFound(_))));
    assert!(stored_files(&cluster.data_dir()).contains(&shared.sha256));
    assert_eq!(listed(&bob).await, [row("bob", &shared)]);
    bob.delete_model(&shared.sha256).await.unwrap();
    assert_eq!(stored_files(&cluster.data_dir()), std::slice::from_ref(&own.sha256));

    // A file a running job names stays after its last owner let go, until the job ends.
    let job = alice.submit("uses it", &script_job(&own)).await.unwrap();
    alice.delete_model(&own.sha256).await.unwrap();
    assert_eq!(listed(&alice).await, []);
    assert_eq!(stored_files(&cluster.data_dir()), std::slice::from_ref(&own.sha256), "the running job still needs it");
    alice.cancel(&job.id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stored_files(&cluster.data_dir()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the file outlived its last job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}
