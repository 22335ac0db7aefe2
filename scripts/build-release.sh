#!/bin/sh
# The release build the image runs (Dockerfile's build stage), and what a
# person runs to get the same binary: Cargo.lock honoured (--locked), the
# one `anykv` binary, copied to dist/anykv.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked --bin anykv
mkdir -p dist
cp target/release/anykv dist/anykv
./dist/anykv --version
