#!/usr/bin/env bash
# The desktop face in Chromium: a real relay and the real `desktop-node run --face` on
# loopback, an install request from a browser-role client, and Chromium (Debian's
# /usr/bin/chromium through playwright-core) opening the face's URL and clicking
# Approve. Screenshots land in target/face-artifacts/ (or $AISA_FACE_ARTIFACTS):
# face-1-request.png, face-2-approved.png, face-3-pairing.png (face-failure.png when a
# step fails). Runs Chromium headed under Xvfb when there is no display and xvfb-run
# exists, headless otherwise. About 30 s warm.
#
# Needs: chromium, node, browser-client/node_modules (npm ci), and xvfb for the
# headed run (scripts/prereqs.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

export AISA_FACE_ARTIFACTS="${AISA_FACE_ARTIFACTS:-$PWD/target/face-artifacts}"
mkdir -p "$AISA_FACE_ARTIFACTS"
rm -f "$AISA_FACE_ARTIFACTS"/face-*.png

if [ ! -d browser-client/node_modules/playwright-core ]; then
  (cd browser-client && npm ci --no-audit --no-fund)
fi

run=(cargo test --locked --workspace --test face -- --ignored --exact
  chromium_clicks_approve_and_keeps_screenshots --nocapture)
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  # Build first, so Xvfb only runs around the test itself.
  cargo test --locked --workspace --test face --no-run
  xvfb-run -a -s "-screen 0 1280x1024x24" "${run[@]}"
else
  "${run[@]}"
fi
ls -l "$AISA_FACE_ARTIFACTS"
