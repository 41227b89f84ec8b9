//! The first-party packages compiled into `warden` are exactly what their sources build:
//! the shared setup rebuilds each component from `skills/` with `warden skill build`, this
//! test repacks it with `warden skill pack`, and the committed package must hold the same
//! manifest, README and component bytes, under a signature by the compiled-in release key.
//! A source change without a re-release fails here, naming the package and the fix.

use crate::support::{cli_ok_text, component, repo_root, scratch, warden_bin};
use std::process::Command;
use warden::first_party;
use warden_registry::sign::sha256_hex;
use warden_registry::{Limits, Package, Signer};

#[test]
fn embedded_packages_match_a_rebuild_from_source() {
    assert_eq!(first_party::PACKAGES.len(), 2);
    for embedded in first_party::PACKAGES {
        let name = embedded.name;
        let path = repo_root().join(format!("skills/packages/{name}.wsk"));
        let committed_bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            committed_bytes,
            embedded.bytes,
            "the binary embeds {}",
            path.display()
        );
        let committed = embedded.verify().unwrap_or_else(|e| panic!("{e}"));

        let out = scratch().join(format!("{name}-repacked.wsk"));
        cli_ok_text(
            Command::new(warden_bin())
                .args(["skill", "pack"])
                .arg(repo_root().join("skills").join(name))
                .arg("--component")
                .arg(component(name))
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap(),
        );
        let rebuilt = Package::read(&std::fs::read(&out).unwrap(), &Limits::default()).unwrap();
        let stale = format!(
            "skills/packages/{name}.wsk does not match what skills/{name} builds: \
             re-release it with `bash skills/packages/release.sh KEY` (docs/first-party-skills.md)"
        );
        assert_eq!(
            sha256_hex(&rebuilt.component),
            sha256_hex(&committed.component),
            "{stale}: the component differs"
        );
        assert_eq!(
            rebuilt.readme, committed.readme,
            "{stale}: README.md differs"
        );
        assert_eq!(
            String::from_utf8_lossy(&rebuilt.manifest_bytes),
            String::from_utf8_lossy(&committed.manifest_bytes),
            "{stale}: skill.toml differs"
        );
        assert!(rebuilt.signature.is_none());
        // The committed signature covers the rebuilt manifest: the one signature covers it all.
        let signer = committed
            .signature
            .as_ref()
            .unwrap()
            .verify(&rebuilt.manifest_bytes)
            .unwrap();
        let release = first_party::release_key().unwrap();
        assert!(
            matches!(&signer, Signer::Key(k) if *k == release),
            "signed by {signer}, not the release key"
        );
    }
}
