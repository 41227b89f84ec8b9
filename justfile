# Developer shortcuts. `just ci` is exactly what CI runs.

# fmt check, clippy -D warnings, all tests (installs the offline wasm toolchain if needed)
ci:
    bash tests/run.sh

# all tests only
test:
    cargo test --workspace

# build a skill crate into a component (e.g. `just skill examples/hello`)
skill path:
    cargo run -p warden -- skill build {{path}}

# runtime benchmark (criterion + percentile pass; figures go to docs/benchmarks.md)
bench:
    cargo bench -p warden --bench runtime

# rebuild and sign the first-party packages embedded in the binary (docs/first-party-skills.md)
release-skills key:
    bash skills/packages/release.sh {{key}}
