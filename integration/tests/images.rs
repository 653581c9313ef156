//! CRI ImageService end to end: the real daemon, the real local registries (hack/registry.sh,
//! hack/images.sh), the generated CRI client.
use berth_integration::registry::{push_image, Layer, TarBuilder};
use berth_integration::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tonic::Code;

fn base_config() -> String {
    String::new()
}

fn reg() -> String {
    test_registry()
}

fn snapshot_dirs(info: &serde_json::Value) -> Vec<PathBuf> {
    info["snapshots"].as_array().expect("snapshots").iter().map(|s| PathBuf::from(s.as_str().unwrap())).collect()
}

/// The file `rel` as the image's merged rootfs would show it (topmost layer that has it).
fn find_in_layers(dirs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(rel)).find(|p| p.symlink_metadata().is_ok())
}

#[tokio::test]
async fn pull_by_tag_list_status_and_verbose_info() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let image = format!("{}/berth/busybox:latest", reg());
    let id = pull(&mut c, &image).await.expect("pull");
    assert!(id.starts_with("sha256:"), "image ref is the image ID: {id}");

    let listed = list(&mut c).await;
    let img = listed.iter().find(|i| i.id == id).expect("listed");
    assert_eq!(img.repo_tags, vec![image.clone()]);
    let digest = image_digest("BUSYBOX_DIGEST");
    assert_eq!(img.repo_digests, vec![format!("{}/berth/busybox@{digest}", reg())]);
    assert!(img.size > 500_000, "size counts the layer: {}", img.size);

    // status by tag, by ID, by short ID, by digest; a missing image is no error
    for name in [image.clone(), id.clone(), id[7..19].to_string(), format!("{}/berth/busybox@{digest}", reg())] {
        assert_eq!(status(&mut c, &name).await.map(|i| i.id), Some(id.clone()), "status {name}");
    }
    assert!(status(&mut c, &format!("{}/berth/nothere:latest", reg())).await.is_none());

    // the filter of ListImages
    let filtered = c
        .list_images(berth::cri::v1::ListImagesRequest { filter: Some(berth::cri::v1::ImageFilter { image: spec(&image) }) })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    let info = verbose_info(&mut c, &image).await;
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
    let dirs = snapshot_dirs(&info);
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("bin/busybox").is_file(), "layer unpacked into a snapshot");
    assert!(dirs[0].starts_with(d.data_dir()));
}

#[tokio::test]
async fn pull_by_digest_and_by_tag_at_digest() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let digest = image_digest("BUSYBOX_DIGEST");
    let by_digest = format!("{}/berth/busybox@{digest}", reg());
    let id = pull(&mut c, &by_digest).await.expect("pull by digest");
    let img = status(&mut c, &id).await.unwrap();
    assert!(img.repo_tags.is_empty(), "a digest pull adds no tag: {:?}", img.repo_tags);
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);

    let both = format!("{}/berth/busybox:latest@{digest}", reg());
    assert_eq!(pull(&mut c, &both).await.expect("tag@digest"), id);
    let img = status(&mut c, &id).await.unwrap();
    assert_eq!(img.repo_tags, vec![format!("{}/berth/busybox:latest", reg())]);

    // a digest that does not exist
    let missing = format!("{}/berth/busybox@sha256:{}", reg(), "0".repeat(64));
    assert_eq!(pull(&mut c, &missing).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn pull_index_picks_the_node_platform() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let image = format!("{}/berth/multiarch:latest", reg());
    pull(&mut c, &image).await.expect("pull index");
    let img = status(&mut c, &image).await.unwrap();
    assert_eq!(img.repo_digests, vec![format!("{}/berth/multiarch@{}", reg(), image_digest("MULTIARCH_DIGEST"))]);
    let dirs = snapshot_dirs(&verbose_info(&mut c, &image).await);
    let platform = find_in_layers(&dirs, "platform").expect("/platform in the image");
    assert_eq!(std::fs::read_to_string(platform).unwrap().trim(), "amd64");
}

#[tokio::test]
async fn pull_docker_schema2_zstd_and_uncompressed_layers() {
    for (tag, media) in [
        ("docker", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("uncompressed", "application/vnd.oci.image.layer.v1.tar"),
    ] {
        // a daemon of its own each: the three share the image ID, and a record keeps the
        // layers of the first pull
        let d = Daemon::start(&base_config()).await;
        let mut c = d.images().await;
        let image = format!("{}/berth/busybox:{tag}", reg());
        pull(&mut c, &image).await.unwrap_or_else(|e| panic!("pull {image}: {e}"));
        let info = verbose_info(&mut c, &image).await;
        assert_eq!(info["layers"][0]["media_type"], media, "{tag}");
        let dirs = snapshot_dirs(&info);
        assert!(find_in_layers(&dirs, "bin/busybox").is_some(), "{tag}: rootfs unpacked");
    }
}

/// Mount the image's layers as overlayfs (as containers will) and look at the merged tree.
struct Overlay {
    target: PathBuf,
    _dir: TempDir,
}

impl Overlay {
    fn mount(lower: &[PathBuf]) -> Overlay {
        let dir = TempDir::new("overlay");
        let target = dir.path().join("merged");
        std::fs::create_dir_all(&target).unwrap();
        let lowers = lower.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let status = std::process::Command::new("mount").args(["-t", "overlay", "overlay", "-o", &format!("lowerdir={lowers}")]).arg(&target).status().unwrap();
        assert!(status.success(), "mount overlay");
        Overlay { target, _dir: dir }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.target).status();
    }
}

#[tokio::test]
async fn layered_image_whiteouts_links_and_owners() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let image = format!("{}/berth/layered:latest", reg());
    pull(&mut c, &image).await.expect("pull layered");
    let img = status(&mut c, &image).await.unwrap();
    assert_eq!(img.uid.map(|u| u.value), Some(1000), "USER 1000:1000 reported as uid");
    let info = verbose_info(&mut c, &image).await;
    let dirs = snapshot_dirs(&info);
    assert_eq!(dirs.len(), 3);

    let o = Overlay::mount(&dirs);
    let root = &o.target;
    assert!(!root.join("data/a").exists(), "file whiteout hides /data/a");
    assert_eq!(std::fs::read_to_string(root.join("data/b")).unwrap(), "b\n");
    let mut opaque: Vec<_> = std::fs::read_dir(root.join("opaque")).unwrap().map(|e| e.unwrap().file_name()).collect();
    opaque.sort();
    assert_eq!(opaque, vec![std::ffi::OsString::from("new")], "opaque dir shows only the new layer");
    let b = std::fs::metadata(root.join("data/b")).unwrap();
    let hard = std::fs::metadata(root.join("data/hard")).unwrap();
    assert_eq!(b.ino(), hard.ino(), "hard link shares the inode");
    assert_eq!(std::fs::read_link(root.join("data/link")).unwrap(), Path::new("b"));
    let owned = std::fs::metadata(root.join("data/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o7777), (1000, 1000, 0o640));
    assert!(std::fs::read_to_string(root.join("data/sub/c")).is_ok());
}

#[tokio::test]
async fn auth_registry_needs_credentials() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let image = format!("{}/berth/busybox:latest", auth_registry());
    let err = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let wrong = berth::cri::v1::AuthConfig { username: "berth".into(), password: "wrong".into(), ..Default::default() };
    assert_eq!(pull_with(&mut c, &image, Some(wrong)).await.unwrap_err().code(), Code::Unauthenticated);
    let good = berth::cri::v1::AuthConfig { username: "berth".into(), password: "berth-secret".into(), ..Default::default() };
    pull_with(&mut c, &image, Some(good)).await.expect("pull with username/password");

    // the base64 `auth` field
    let d2 = Daemon::start(&base_config()).await;
    let mut c2 = d2.images().await;
    let auth = berth::cri::v1::AuthConfig { auth: "YmVydGg6YmVydGgtc2VjcmV0".into(), ..Default::default() };
    pull_with(&mut c2, &image, Some(auth)).await.expect("pull with auth field");

    // credentials from the config file
    let cfg = format!("[registry.configs.\"{}\".auth]\nusername = \"berth\"\npassword = \"berth-secret\"\n", auth_registry());
    let d3 = Daemon::start(&cfg).await;
    let mut c3 = d3.images().await;
    pull(&mut c3, &image).await.expect("pull with configured credentials");
}

#[tokio::test]
async fn mirrors_and_rewrites_redirect_pulls() {
    let cfg = format!(
        r#"
[registry.mirrors."docker.io"]
endpoints = ["http://{r}"]
[registry.mirrors."registry.berth.invalid"]
endpoints = ["http://{r}"]
rewrite = {{ "^apps/(.*)" = "berth/$1" }}
"#,
        r = reg()
    );
    let d = Daemon::start(&cfg).await;
    let mut c = d.images().await;
    // docker.io normalisation: "berth/busybox" is docker.io/berth/busybox:latest
    let id = pull(&mut c, "berth/busybox").await.expect("pull through the docker.io mirror");
    let img = status(&mut c, "docker.io/berth/busybox:latest").await.expect("normalised name");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec!["docker.io/berth/busybox:latest"]);
    // a rewrite maps the repository path on the mirror
    pull(&mut c, "registry.berth.invalid/apps/busybox:latest").await.expect("pull with rewrite");
    assert!(status(&mut c, "registry.berth.invalid/apps/busybox:latest").await.is_some());
}

#[tokio::test]
async fn plain_http_only_when_allowed() {
    let d = Daemon::start("[registry]\nplain_http_localhost = false\n").await;
    let mut c = d.images().await;
    let image = format!("{}/berth/busybox:latest", reg());
    let err = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("HTTP"), "the error says why: {}", err.message());
    drop(c);
    drop(d);
    let d = Daemon::start(&format!("[registry]\nplain_http_localhost = false\ninsecure = [\"{}\"]\n", reg())).await;
    let mut c = d.images().await;
    pull(&mut c, &image).await.expect("insecure registry configured");
}

#[tokio::test]
async fn images_survive_restart_and_kill9() {
    let mut d = Daemon::start(&base_config()).await;
    let image = format!("{}/berth/busybox:latest", reg());
    let id = pull(&mut d.images().await, &image).await.unwrap();
    d.restart_after_kill9().await;
    let mut c = d.images().await;
    assert_eq!(status(&mut c, &image).await.map(|i| i.id), Some(id.clone()));
    d.restart().await;
    let mut c = d.images().await;
    assert_eq!(status(&mut c, &image).await.map(|i| i.id), Some(id));
    assert!(snapshot_dirs(&verbose_info(&mut c, &image).await)[0].join("bin/sh").exists());
}

#[tokio::test]
async fn concurrent_pulls_share_the_work() {
    let d = Daemon::start(&base_config()).await;
    let image = format!("{}/berth/layered:latest", reg());
    let mut tasks = vec![];
    for _ in 0..6 {
        let mut c = d.images().await;
        let image = image.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &image).await }));
    }
    let mut ids = vec![];
    for t in tasks {
        ids.push(t.await.unwrap().expect("concurrent pull"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let snaps = d.data_dir().join("images/snapshots");
    assert_eq!(entries_with_prefix(&snaps, "tmp-"), Vec::<String>::new(), "no temporary snapshots left");
    assert_eq!(entries_with_prefix(&snaps, "").len(), 3, "each layer unpacked once");
    assert!(entries_with_prefix(&d.data_dir().join("images/content/ingest"), "").is_empty());
}

#[tokio::test]
async fn remove_by_tag_id_and_digest_and_collect_garbage() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let busybox = format!("{}/berth/busybox:latest", reg());
    let layered = format!("{}/berth/layered:latest", reg());
    let multi = format!("{}/berth/multiarch:latest", reg());
    let id = pull(&mut c, &busybox).await.unwrap();
    pull(&mut c, &layered).await.unwrap();
    pull(&mut c, &multi).await.unwrap();

    c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec(&busybox) }).await.expect("remove by tag");
    assert!(status(&mut c, &id).await.is_none());
    // removing again is not an error
    c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec(&busybox) }).await.expect("idempotent");
    let lid = status(&mut c, &layered).await.unwrap().id;
    c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec(&lid) }).await.expect("remove by id");
    let by_digest = format!("{}/berth/multiarch@{}", reg(), image_digest("MULTIARCH_DIGEST"));
    c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec(&by_digest) }).await.expect("remove by digest");
    assert!(list(&mut c).await.is_empty());
    // nothing left behind: no blobs, no snapshots
    let images = d.data_dir().join("images");
    assert!(entries_with_prefix(&images.join("content/blobs/sha256"), "").is_empty(), "blobs collected");
    assert!(entries_with_prefix(&images.join("snapshots"), "").is_empty(), "snapshots collected");

    let err = c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec("Not A Ref") }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn image_fs_info_reports_real_usage() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let before = c.image_fs_info(berth::cri::v1::ImageFsInfoRequest {}).await.unwrap().into_inner();
    let fs = &before.image_filesystems[0];
    assert!(fs.fs_id.as_ref().unwrap().mountpoint.starts_with(&d.data_dir().display().to_string()));
    let used_before = fs.used_bytes.as_ref().unwrap().value;
    pull(&mut c, &format!("{}/berth/busybox:latest", reg())).await.unwrap();
    let after = c.image_fs_info(berth::cri::v1::ImageFsInfoRequest {}).await.unwrap().into_inner();
    let fs = &after.image_filesystems[0];
    assert!(fs.used_bytes.as_ref().unwrap().value > used_before + 1_000_000, "pull grew usage");
    assert!(fs.inodes_used.as_ref().unwrap().value > 10);
}

#[tokio::test]
async fn invalid_requests_get_clear_errors() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    for bad in ["", "docker.io/UPPER/case", "busybox@sha256:123", "a b", "127.0.0.1:5000/x:-bad"] {
        let err = pull(&mut c, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    let err = pull(&mut c, &format!("{}/berth/nothere:latest", reg())).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}

/// Every hostile image fails to pull (or stays inside the store), leaves nothing outside the
/// store, leaves no temporary state, and records nothing.
#[tokio::test]
async fn hostile_layers_are_rejected() {
    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let r = reg();
    let outside = TempDir::new("outside");
    let marker = outside.path().join("pwned");
    let n = std::process::id();

    // 1. path escape with ..
    let depth = "../".repeat(12);
    let tar = TarBuilder::new().file(&format!("{depth}{}", marker.display().to_string().trim_start_matches('/')), b"x").finish();
    push_image(&r, "berth/hostile-dotdot", &format!("t{n}"), &[Layer::gzip_tar(&tar)]).await;
    let err = pull(&mut c, &format!("{r}/berth/hostile-dotdot:t{n}")).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");

    // 2. symlink escape: a link to the outside dir, then a file through it
    let tar = TarBuilder::new()
        .symlink("evil", &outside.path().display().to_string())
        .file("evil/pwned", b"x")
        .symlink("rel", &depth)
        .file(&format!("rel{}", marker.display()), b"x")
        .finish();
    push_image(&r, "berth/hostile-symlink", &format!("t{n}"), &[Layer::gzip_tar(&tar)]).await;
    let _ = pull(&mut c, &format!("{r}/berth/hostile-symlink:t{n}")).await;
    assert!(!marker.exists(), "a symlink let a layer write outside the store");

    // 3. hard link to a file outside
    let tar = TarBuilder::new().hardlink("passwd", "../../../../../../../../etc/passwd").finish();
    push_image(&r, "berth/hostile-hardlink", &format!("t{n}"), &[Layer::gzip_tar(&tar)]).await;
    let res = pull(&mut c, &format!("{r}/berth/hostile-hardlink:t{n}")).await;
    assert!(res.is_err(), "hard link out of the layer accepted");
    assert_eq!(std::fs::metadata("/etc/passwd").unwrap().nlink(), 1, "/etc/passwd got a new link");

    // 4. truncated gzip
    let tar = TarBuilder::new().file("big", &vec![7u8; 200_000]).finish();
    let mut layer = Layer::gzip_tar(&tar);
    layer.blob.truncate(layer.blob.len() - 20);
    push_image(&r, "berth/hostile-truncated", &format!("t{n}"), &[layer]).await;
    let err = pull(&mut c, &format!("{r}/berth/hostile-truncated:t{n}")).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");

    // 5. a diff ID that does not match the layer
    let tar = TarBuilder::new().file("f", b"content").finish();
    let mut layer = Layer::gzip_tar(&tar);
    layer.diff_id = berth_integration::registry::digest(b"something else");
    push_image(&r, "berth/hostile-diffid", &format!("t{n}"), &[layer]).await;
    let err = pull(&mut c, &format!("{r}/berth/hostile-diffid:t{n}")).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");

    // 6. a blob whose bytes do not match its digest (the registry's storage corrupted)
    let tar = TarBuilder::new().file("g", b"genuine").finish();
    let layer = Layer::gzip_tar(&tar);
    let blob_digest = berth_integration::registry::digest(&layer.blob);
    push_image(&r, "berth/hostile-digest", &format!("t{n}"), &[layer]).await;
    let hex = &blob_digest[7..];
    let storage = std::env::var("BERTH_REGISTRY_DIR").unwrap_or_else(|_| "/tmp/berth-registry".into());
    let data = PathBuf::from(&storage).join("plain/storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data");
    let good = std::fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mut bad = good.clone();
    let last = bad.len() - 30;
    bad[last] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();
    let res = pull(&mut c, &format!("{r}/berth/hostile-digest:t{n}")).await;
    std::fs::write(&data, &good).unwrap();
    assert_eq!(res.unwrap_err().code(), Code::DataLoss);

    // nothing recorded, nothing half-made, nothing outside
    let images = list(&mut c).await;
    assert!(images.iter().all(|i| i.repo_tags.iter().all(|t| !t.contains("hostile") || t.contains("hostile-symlink"))), "{images:?}");
    let store = d.data_dir().join("images");
    assert!(entries_with_prefix(&store.join("snapshots"), "tmp-").is_empty());
    assert!(entries_with_prefix(&store.join("content/ingest"), "").is_empty());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
}

#[tokio::test]
async fn cli_pull_ls_rm_and_import() {
    let d = Daemon::start(&base_config()).await;
    let image = format!("{}/berth/busybox:latest", reg());
    let (ok, out, err) = d.cli(&["images", "pull", &image]);
    assert!(ok, "pull: {out}{err}");
    assert!(out.contains("pulled") && out.contains("sha256:"), "{out}");
    let (ok, out, _) = d.cli(&["images", "ls"]);
    assert!(ok && out.contains(&format!("{}/berth/busybox", reg())) && out.contains("latest"), "{out}");

    // an OCI archive and a docker archive, made by skopeo from the registry
    let tmp = TempDir::new("import");
    let oci = tmp.path().join("oci.tar");
    let docker = tmp.path().join("docker.tar");
    for (dest, _) in [
        (format!("oci-archive:{}:berth.test/imported/oci:v1", oci.display()), ()),
        (format!("docker-archive:{}:berth.test/imported/docker:v2", docker.display()), ()),
    ] {
        let st = std::process::Command::new("skopeo").args(["copy", "--src-tls-verify=false", &format!("docker://{image}"), &dest]).status().expect("skopeo");
        assert!(st.success(), "skopeo copy to {dest}");
    }
    let (ok, out, err) = d.cli(&["images", "import", oci.to_str().unwrap()]);
    assert!(ok, "import oci: {out}{err}");
    let (ok, out, err) = d.cli(&["images", "import", docker.to_str().unwrap()]);
    assert!(ok, "import docker: {out}{err}");
    let mut c = d.images().await;
    let a = status(&mut c, "berth.test/imported/oci:v1").await.expect("oci import listed");
    let b = status(&mut c, "berth.test/imported/docker:v2").await.expect("docker import listed");
    assert!(snapshot_dirs(&verbose_info(&mut c, &b.id).await)[0].join("bin/busybox").exists());
    assert!(!a.id.is_empty());

    // a file that is no image archive
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, TarBuilder::new().file("hello", b"x").finish()).unwrap();
    let (ok, _, err) = d.cli(&["images", "import", junk.to_str().unwrap()]);
    assert!(!ok && err.contains("not an image archive"), "{err}");

    let (ok, out, err) = d.cli(&["images", "rm", &image]);
    assert!(ok, "rm: {out}{err}");
    assert!(status(&mut c, &image).await.is_none());
}

#[tokio::test]
async fn runtime_version_and_status() {
    let d = Daemon::start(&base_config()).await;
    let mut r = d.runtime().await;
    let v = r.version(berth::cri::v1::VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
    assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("berth", "v1"));
    let s = r.status(berth::cri::v1::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let conds = s.status.unwrap().conditions;
    assert!(conds.iter().any(|c| c.r#type == "NetworkReady" && !c.status && !c.reason.is_empty()));
}

/// A layer of incompressible bytes, pushed as its own image; returns (image, blob digest, blob).
async fn push_random_image(repo: &str, mib: usize) -> (String, String, Vec<u8>) {
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = std::process::id() as u64 | 1;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let tar = TarBuilder::new().file("random.bin", &data).finish();
    let layer = Layer::gzip_tar(&tar);
    let blob = layer.blob.clone();
    let blob_digest = berth_integration::registry::digest(&blob);
    let tag = format!("t{}", std::process::id());
    push_image(&reg(), repo, &tag, &[layer]).await;
    (format!("{}/{repo}:{tag}", reg()), blob_digest, blob)
}

#[tokio::test]
async fn interrupted_download_resumes_from_the_partial_blob() {
    let (image, blob_digest, blob) = push_random_image("berth/resume", 8).await;
    let mut d = Daemon::start(&base_config()).await;
    d.stop();
    // what a pull cut off halfway leaves: the first half of the blob in the ingest area
    let ingest = d.data_dir().join("images/content/ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::write(ingest.join(&blob_digest[7..]), &blob[..blob.len() / 2]).unwrap();
    d.restart().await;
    let mut c = d.images().await;
    pull(&mut c, &image).await.expect("resumed pull");
    let info = verbose_info(&mut c, &image).await;
    assert!(snapshot_dirs(&info)[0].join("random.bin").is_file());
    assert!(entries_with_prefix(&ingest, "").is_empty(), "ingest moved into the store");
    let stored = d.data_dir().join("images/content/blobs/sha256").join(&blob_digest[7..]);
    assert_eq!(std::fs::read(stored).unwrap(), blob, "the resumed blob is whole");
    // the registry served the rest with a range request (206 in its access log)
    let dir = std::env::var("BERTH_REGISTRY_DIR").unwrap_or_else(|_| "/tmp/berth-registry".into());
    let log = std::fs::read_to_string(format!("{dir}/plain/registry.log")).unwrap_or_default();
    assert!(log.lines().any(|l| l.contains(&blob_digest) && l.contains("\" 206 ")), "no ranged blob request in the registry log");
}

#[tokio::test]
async fn crash_mid_pull_leaves_a_consistent_store() {
    let (image, _, _) = push_random_image("berth/crash", 32).await;
    let mut d = Daemon::start(&base_config()).await;
    let socket = d.socket();
    let img = image.clone();
    // pull in the background and kill the daemon while it runs
    let puller = tokio::spawn(async move {
        let ch = tonic::transport::Endpoint::try_from("http://berth.sock")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let s = socket.clone();
                async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(s).await?)) }
            }))
            .await
            .unwrap();
        let mut c = berth::cri::v1::image_service_client::ImageServiceClient::new(ch);
        let _ = pull(&mut c, &img).await;
    });
    let snaps = d.data_dir().join("images/snapshots");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while entries_with_prefix(&snaps, "tmp-").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    d.kill9();
    let _ = puller.await;
    d.restart().await;
    assert!(entries_with_prefix(&snaps, "tmp-").is_empty(), "half-unpacked snapshot removed at start-up");
    let mut c = d.images().await;
    assert!(status(&mut c, &image).await.is_none(), "an interrupted pull records nothing");
    pull(&mut c, &image).await.expect("pull after the crash");
    assert!(snapshot_dirs(&verbose_info(&mut c, &image).await)[0].join("random.bin").is_file());
}

#[tokio::test]
async fn bearer_token_flow_against_a_token_auth_registry() {
    use berth_integration::registry::push_image_as;
    use berth_integration::token::{Signer, TokenServer};
    let signer = std::sync::Arc::new(Signer::from_registry_dir());
    let server = TokenServer::start(signer.clone()).await;
    let registry = std::env::var("BERTH_TEST_TOKEN_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5002".into());
    let tar = TarBuilder::new().dir("etc/").file("etc/token-image", b"behind a token").finish();
    let push_auth = format!("Bearer {}", signer.token("repository:berth/private:pull,push"));
    push_image_as(&registry, "berth/private", "v1", &[Layer::gzip_tar(&tar)], Some(&push_auth)).await;
    let issued_before = server.issued.load(std::sync::atomic::Ordering::SeqCst);

    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let image = format!("{registry}/berth/private:v1");
    let err = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "anonymous: {err}");
    let creds = berth::cri::v1::AuthConfig { username: "berth".into(), password: "berth-secret".into(), ..Default::default() };
    pull_with(&mut c, &image, Some(creds)).await.expect("pull with a token from the token service");
    assert!(server.issued.load(std::sync::atomic::Ordering::SeqCst) > issued_before, "a token was issued");
    let dirs = snapshot_dirs(&verbose_info(&mut c, &image).await);
    assert_eq!(std::fs::read_to_string(dirs[0].join("etc/token-image")).unwrap(), "behind a token");
    // a registry token handed over by the caller is used as is
    let d2 = Daemon::start(&base_config()).await;
    let mut c2 = d2.images().await;
    let direct = berth::cri::v1::AuthConfig { registry_token: signer.token("repository:berth/private:pull"), ..Default::default() };
    pull_with(&mut c2, &image, Some(direct)).await.expect("pull with a registry token");
    // an identity token is exchanged for an access token with an OAuth2 refresh grant
    let d3 = Daemon::start(&base_config()).await;
    let mut c3 = d3.images().await;
    let wrong = berth::cri::v1::AuthConfig { identity_token: "not-the-token".into(), ..Default::default() };
    assert_eq!(pull_with(&mut c3, &image, Some(wrong)).await.unwrap_err().code(), Code::Unauthenticated);
    let identity = berth::cri::v1::AuthConfig { identity_token: berth_integration::token::IDENTITY_TOKEN.into(), ..Default::default() };
    pull_with(&mut c3, &image, Some(identity)).await.expect("pull with an identity token");
}

/// A TLS front for the plain test registry on a free loopback port, with a generated
/// self-signed certificate for 127.0.0.1 (written to `dir`/cert.pem). Stops when dropped.
struct TlsRegistry {
    port: u16,
    cert: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRegistry {
    async fn start(dir: &Path) -> TlsRegistry {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = dir.join("cert.pem");
        let cfg = berth::util::tls::server_config(&cert, &dir.join("key.pem"), vec!["127.0.0.1".into()], true).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = reg();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsRegistry { port, cert, task }
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_host_without_ca_certificates_starts_and_says_why_https_fails() {
    let certs = TempDir::new("tlsreg");
    let front = TlsRegistry::start(certs.path()).await;
    let host = format!("127.0.0.1:{}", front.port);
    // No CA bundle: what a minimal Debian without ca-certificates looks like to the daemon.
    let no_roots = [("SSL_CERT_FILE", "/nonexistent/berth-ca.pem"), ("SSL_CERT_DIR", "/nonexistent/berth-ca")];
    let cfg = "[registry]\nplain_http_localhost = false\ninsecure = []\n".to_string();
    let d = Daemon::start_with_env(&cfg, &no_roots).await;
    assert!(d.log().contains("no CA certificates found on this host"), "{}", d.log());
    let mut c = d.images().await;
    let err = pull(&mut c, &format!("{host}/berth/busybox:latest")).await.unwrap_err();
    assert!(err.message().contains("no CA certificates were found on this host") && err.message().contains("ca_file"), "{}", err.message());
    drop(c);
    drop(d);

    // The registry's own CA in the config: the pull goes through over HTTPS.
    let cfg = format!("[registry]\nplain_http_localhost = false\n[registry.configs.\"{host}\".tls]\nca_file = \"{}\"\n", front.cert.display());
    let d = Daemon::start_with_env(&cfg, &no_roots).await;
    let mut c = d.images().await;
    let id = pull(&mut c, &format!("{host}/berth/busybox:latest")).await.expect("pull over HTTPS with the configured CA");
    assert!(id.starts_with("sha256:"));

    // Plain-HTTP registries never needed a CA.
    let d = Daemon::start_with_env(&base_config(), &no_roots).await;
    let mut c = d.images().await;
    pull(&mut c, &format!("{}/berth/busybox:latest", reg())).await.expect("plain HTTP pull without CA certificates");
}

#[tokio::test]
async fn a_token_is_only_reused_by_the_credentials_that_earned_it() {
    use berth_integration::registry::push_image_as;
    use berth_integration::token::{Signer, TokenServer};
    let signer = std::sync::Arc::new(Signer::from_registry_dir());
    let _server = TokenServer::start(signer.clone()).await;
    let registry = std::env::var("BERTH_TEST_TOKEN_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5002".into());
    let tar = TarBuilder::new().dir("etc/").file("etc/secret-image", b"for user A").finish();
    let push_auth = format!("Bearer {}", signer.token("repository:berth/secret:pull,push"));
    push_image_as(&registry, "berth/secret", "v1", &[Layer::gzip_tar(&tar)], Some(&push_auth)).await;
    let image = format!("{registry}/berth/secret:v1");

    let d = Daemon::start(&base_config()).await;
    let mut c = d.images().await;
    let user_a = berth::cri::v1::AuthConfig { username: "berth".into(), password: "berth-secret".into(), ..Default::default() };
    pull_with(&mut c, &image, Some(user_a.clone())).await.expect("user A pulls with its own token");
    let removed = c.remove_image(berth::cri::v1::RemoveImageRequest { image: spec(&image) }).await;
    assert!(removed.is_ok(), "{removed:?}");
    // The token user A earned is still valid, but nobody else may ride on it.
    let anonymous = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "anonymous: {anonymous}");
    let user_b = berth::cri::v1::AuthConfig { username: "berth".into(), password: "not-berths-password".into(), ..Default::default() };
    let b = pull_with(&mut c, &image, Some(user_b)).await.unwrap_err();
    assert_eq!(b.code(), Code::Unauthenticated, "user B: {b}");
    assert!(status(&mut c, &image).await.is_none(), "nothing was pulled for them");
    pull_with(&mut c, &image, Some(user_a)).await.expect("user A again");
}

#[tokio::test]
async fn an_opaque_directory_the_store_cannot_keep_fails_the_pull() {
    // ramfs keeps no extended attributes, so it cannot mark a directory opaque.
    let d = Daemon::start_prepared(&base_config(), |dir| {
        let images = dir.join("data/images");
        std::fs::create_dir_all(&images).unwrap();
        let st = std::process::Command::new("mount").args(["-t", "ramfs", "berth-it-noxattr"]).arg(&images).status().unwrap();
        assert!(st.success(), "mount ramfs");
    })
    .await;
    let mut c = d.images().await;
    // The layered test image deletes a directory's content with an opaque whiteout.
    let image = format!("{}/berth/layered:latest", reg());
    let err = pull(&mut c, &image).await.unwrap_err();
    assert!(err.message().contains("an opaque directory on this filesystem") && err.message().contains("trusted.overlay.opaque"), "{}", err.message());
    assert!(status(&mut c, &image).await.is_none(), "nothing half-pulled is listed");
    // No half-unpacked layer stays (the layers below it are complete and reusable).
    let snapshots = d.data_dir().join("images/snapshots");
    assert!(entries_with_prefix(&snapshots, "tmp-").is_empty(), "{:?}", entries_with_prefix(&snapshots, ""));
    assert!(entries_with_prefix(&snapshots, "").len() < 3, "{:?}", entries_with_prefix(&snapshots, ""));
    // Images without opaque directories still pull there.
    pull(&mut c, &format!("{}/berth/busybox:latest", reg())).await.expect("busybox has no opaque directory");
}
