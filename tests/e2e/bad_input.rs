//! Bad inputs to the loader: each gets a clear error and nothing is cached.

use crate::support::{runtime, wasm};
use warden::runtime::{ContractError, LoadError, Runtime, RuntimeConfig, SkillSettings};

async fn refuse(bytes: &[u8]) -> LoadError {
    let digest = blake3::hash(bytes).to_hex().to_string();
    let err = runtime()
        .load("bad", bytes, SkillSettings::default())
        .await
        .expect_err("must be refused");
    assert!(
        !runtime().cache().unwrap().contains(&digest),
        "a refused input must not be cached ({err})"
    );
    err
}

#[tokio::test]
async fn garbage_bytes() {
    for bytes in [
        &b""[..],
        b"\0asm",
        b"hello world, not wasm at all",
        &[0xffu8; 64],
    ] {
        assert!(matches!(refuse(bytes).await, LoadError::NotWasm));
    }
    let mut truncated = wasm("hello");
    truncated.truncate(truncated.len() / 2);
    let err = refuse(&truncated).await;
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}

#[tokio::test]
async fn core_module_is_not_a_component() {
    let module = wat::parse_str("(module (func (export \"run\")))").unwrap();
    let err = refuse(&module).await;
    assert!(matches!(err, LoadError::CoreModule));
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[tokio::test]
async fn component_of_another_world() {
    // No exports at all.
    let empty = wat::parse_str("(component)").unwrap();
    let err = refuse(&empty).await;
    assert!(matches!(err, LoadError::Contract(_)), "{err}");
    assert!(err.to_string().contains("warden:skill@0.1.0"), "{err}");

    // Imports something the host does not provide.
    let foreign = wat::parse_str(
        r#"(component
             (import "acme:evil/backdoor@1.0.0" (instance (export "open" (func))))
           )"#,
    )
    .unwrap();
    let err = refuse(&foreign).await;
    assert!(matches!(err, LoadError::Contract(_)), "{err}");
    assert!(err.to_string().contains("acme:evil/backdoor"), "{err}");
}

#[tokio::test]
async fn skill_with_an_invalid_schema() {
    let err = refuse(&wasm("bad-schema")).await;
    match &err {
        LoadError::Tools(ContractError::BadSchema { tool, which, why }) => {
            assert_eq!(tool, "broken");
            assert_eq!(*which, "input");
            assert!(why.contains("not valid JSON"), "{why}");
        }
        other => panic!("expected a schema error, got {other}"),
    }
}

#[tokio::test]
async fn good_components_are_cached_and_a_tampered_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let bytes = wasm("hello");
    let digest = blake3::hash(&bytes).to_hex().to_string();
    let cache = rt.cache().unwrap();
    assert!(!cache.contains(&digest));
    rt.load("hello", &bytes, SkillSettings::default())
        .await
        .unwrap();
    assert!(cache.contains(&digest));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.path().join("cache.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let d = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(d.permissions().mode() & 0o777, 0o700);
    }

    // Flip one byte of the cached artifact: its MAC no longer matches, so the host
    // refuses to map it and compiles from source again.
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let original = std::fs::read(&artifact).unwrap();
    let mut tampered = original.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    std::fs::write(&artifact, &tampered).unwrap();
    let skill = rt
        .load("hello", &bytes, SkillSettings::default())
        .await
        .unwrap();
    assert_eq!(skill.tools().len(), 1);
    assert_eq!(std::fs::read(&artifact).unwrap().len(), original.len());
    assert_ne!(
        std::fs::read(&artifact).unwrap(),
        tampered,
        "artifact rewritten"
    );

    // An artifact written by someone else (another key) is never loaded either.
    let other = tempfile::tempdir().unwrap();
    let rt2 = Runtime::new(RuntimeConfig {
        cache_dir: Some(other.path().to_owned()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "cache.key" {
            std::fs::copy(&p, other.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    assert!(rt2.cache().unwrap().load(rt2.engine(), &digest).is_none());
}

#[tokio::test]
async fn settings_beyond_the_runtime_are_refused() {
    let mut settings = SkillSettings::default();
    settings.limits.memory_bytes = usize::MAX;
    let err = runtime()
        .load("hello", &wasm("hello"), settings)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Settings(_)), "{err}");
}
