#!/usr/bin/env bash
# The browser engines the web app's browser flows run in besides Chromium
# (browser-client/test/browser/engines.test.ts), checked and, where it can be, installed:
#
#   firefox-esr        Firefox ESR (153 here), driven over WebDriver BiDi by puppeteer-core
#   webkit2gtk-driver  WebKitWebDriver, which drives WebKitGTK's MiniBrowser (libwebkit2gtk-4.1-0)
#   xvfb               the X display MiniBrowser needs (it has no headless mode)
#
# puppeteer-core itself is an npm devDependency of browser-client (package-lock.json), so
# `npm ci` installs it; no browser is ever downloaded. Chromium is scripts/prereqs.sh's.
#
# As root (with apt-get) the missing packages are installed; otherwise the script prints
# the one `sudo apt-get install …` line and exits 1. Nothing is done when all are there.
# scripts/prereqs.sh test runs it.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

MINIBROWSER=/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser
packages=()
have firefox-esr || packages+=(firefox-esr)
have WebKitWebDriver || packages+=(webkit2gtk-driver)
# The MiniBrowser WebKitWebDriver starts (webkit2gtk-driver depends on its package).
[ -x "$MINIBROWSER" ] || packages+=(libwebkit2gtk-4.1-0)
have Xvfb || packages+=(xvfb)

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && have apt-get; then
  echo "==> installing ${packages[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
elif have apt-get; then
  echo "missing Debian packages for the browser flows: ${packages[*]}. Install them with:" >&2
  echo "  sudo apt-get install ${packages[*]}" >&2
  exit 1
else
  echo "missing: ${packages[*]} (Debian package names; install their equivalents)" >&2
  exit 1
fi
