//! Each owner may store up to `max_model_bytes_per_owner` of model files:
//! an upload that would go over is RESOURCE_EXHAUSTED before a byte is
//! stored, naming the setting, the owner's use and the limit. A file the
//! owner already has costs nothing to upload again; other owners' files do
//! not count; deleting one makes room.

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::models::{client_as, mlp, owners, stored_files};
use rwp_sdk::{ModelFile, SdkError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_owners_quota_are_refused_before_anything_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let (ten, five) = (mlp(tmp.path(), 10), mlp(tmp.path(), 5));
    let (ten_file, five_file) = (ModelFile::of_path(&ten).unwrap(), ModelFile::of_path(&five).unwrap());
    assert_ne!(ten_file.sha256, five_file.sha256);
    // Room for one file, not two.
    let limit = ten_file.size_bytes.max(five_file.size_bytes) + 16;
    let tokens = owners();
    let cluster = Cluster::start_configured(
        0,
        |c| {
            c.tokens_file = Some(tokens.path.clone());
            c.max_model_bytes_per_owner = limit;
        },
        |_| {},
    )
    .await;
    let url = cluster.url();
    let (alice, bob) = (client_as(&url, Some(&tokens), "alice").await, client_as(&url, Some(&tokens), "bob").await);

    assert_eq!(alice.upload_model(&ten).await.unwrap(), ten_file);
    let message = match alice.upload_model(&five).await {
        Err(SdkError::ResourceExhausted(message)) => message,
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    };
    for part in [
        "'alice'".to_owned(),
        format!("{} bytes of model files stored", ten_file.size_bytes),
        format!("this upload of {} bytes", five_file.size_bytes),
        format!("limit of {limit} bytes (max_model_bytes_per_owner)"),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
    assert_eq!(
        stored_files(&cluster.data_dir()),
        std::slice::from_ref(&ten_file.sha256),
        "nothing of the refused upload"
    );

    // Her own file again costs nothing; bob's quota is his own.
    assert_eq!(alice.upload_model(&ten).await.unwrap(), ten_file);
    assert_eq!(bob.upload_model(&five).await.unwrap(), five_file);
    let refused = bob.upload_model(&ten).await.unwrap_err().to_string();
    assert!(refused.contains("'bob'") && refused.contains("max_model_bytes_per_owner"), "{refused}");

    // Deleting her file makes room.
    alice.delete_model(&ten_file.sha256).await.unwrap();
    assert_eq!(alice.upload_model(&five).await.unwrap(), five_file);
    let mut models: Vec<_> = alice.list_models().await.unwrap().into_iter().map(|m| m.sha256).collect();
    models.sort();
    assert_eq!(models, std::slice::from_ref(&five_file.sha256));
    cluster.shutdown().await;
}
