#!/usr/bin/env bash
# The one command that runs anykv's whole test suite on a fresh machine.
# It installs what the tests need when missing (redis-server and redis-tools
# are the reference implementation and the CLI used by the tests; chromium
# and chromium-driver the browser the dashboard is tested in), then
# checks formatting and lints, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_pkgs+=(redis-tools)
# The dashboard's test drives a headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing ${need_pkgs[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y "${need_pkgs[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need_pkgs[@]}" >/dev/null; }
fi
redis-server --version

# A one-shot run gains nothing from incremental caches, which cost about
# 2 GB of disk on a clean build; say how much disk there is, since a full
# disk shows up as a linker crash (SIGBUS) rather than a clear message.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h "${CARGO_TARGET_DIR:-target}/.." 2>/dev/null | tail -1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
