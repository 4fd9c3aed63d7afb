#!/usr/bin/env bash
# Installs the desktop node's Windows installer (scripts/package-windows.sh) under Wine,
# silently, in a fresh Wine prefix, then checks what it did and uninstalls it:
#
#   scripts/package-windows-test.sh target/packages/aisa-node-<version>-x86_64-windows-setup.exe
#
#   1. `setup.exe /S` (no administrator: the installer asks for none): desktop-node.exe
#      and README.txt in %LOCALAPPDATA%\Programs\AI SuperApp, the Start-menu folder with
#      the node's shortcut, the Run value (autostart) and the Apps & features entry in
#      HKCU with this version; the node's AppUserModelID AISuperApp.DesktopNode
#      registered with the display name "AI SuperApp" (written only once the shortcut
#      took the id through the shell's IPropertyStore: so the installer's COM calls ran
#      through; Wine 8 answers S_OK there but does not store the property in the .lnk,
#      so the .lnk itself cannot be checked here); the installed exe runs under Wine
#      (`desktop-node.exe version`) and carries the JavaScript runtime.
#   2. Installing again with /NOAUTOSTART (an upgrade in place) removes the Run value and
#      keeps the rest.
#   3. `uninstall.exe /S`: the folder, the shortcuts, the Run value, the AppUserModelID's
#      registration and the Apps & features entry are gone.
#
# --placeholder SETUP.exe: the same for `scripts/package-windows.sh --placeholder`'s
# installer, without running the installed "exe" (a stand-in file): the installer's own
# work in a minute, without the cross build.
# Wine 8 lacks ProcessPrng (see scripts/wine-test.sh): the shim DLL that script builds is
# put beside the installed exe to run it, and taken away before uninstalling.
# Needs wine and gcc-mingw-w64-x86-64 (installed by scripts/wine-test.sh, which runs first
# in scripts/test-full.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PLACEHOLDER=
if [ "${1:-}" = --placeholder ]; then PLACEHOLDER=1; shift; fi
INSTALLER=$(realpath "${1:?usage: $0 [--placeholder] SETUP.exe}")
version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
shim=target/windows/shim/bcryptprimitives.dll
[ -n "$PLACEHOLDER" ] || [ -f "$shim" ] || { echo "no $shim: run scripts/wine-test.sh first (it builds the shim)" >&2; exit 1; }

fail() { echo "package-windows-test: $*" >&2; exit 1; }
export WINEDEBUG=-all
export WINEPREFIX
WINEPREFIX=$(mktemp -d "$PWD/target/windows/installer-prefix.XXXXXX")
trap 'wineserver -k >/dev/null 2>&1 || true; rm -rf "$WINEPREFIX"' EXIT
export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree,mshtml="
wineboot -i >/dev/null 2>&1 || true
wineserver -w

# Windows' own names for the user's folders, as Linux paths.
winpath() { winepath -u "$(wine cmd /c echo "$1" 2>/dev/null | tr -d '\r')" 2>/dev/null; }
local_app_data=$(winpath '%LOCALAPPDATA%')
start_menu=$(winpath '%APPDATA%')/Microsoft/Windows/Start\ Menu/Programs
[ -d "$local_app_data" ] || fail "cannot find %LOCALAPPDATA% in the Wine prefix"
dir=$local_app_data/Programs/AI\ SuperApp
run_key='HKCU\Software\Microsoft\Windows\CurrentVersion\Run'
uninstall_key='HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\AISuperAppDesktopNode'
app_id_key='HKCU\Software\Classes\AppUserModelId\AISuperApp.DesktopNode'
reg_value() { wine reg query "$1" /v "$2" 2>/dev/null | tr -d '\r' | awk -v v="$2" '$1 == v { $1 = ""; $2 = ""; sub(/^  /, ""); print }'; }

echo "==> setup.exe /S"
wine "$INSTALLER" /S
wineserver -w
[ -f "$dir/desktop-node.exe" ] || fail "no desktop-node.exe in $dir"
[ -f "$dir/README.txt" ] && [ -f "$dir/uninstall.exe" ] || fail "README.txt or uninstall.exe missing in $dir"
[ -f "$start_menu/AI SuperApp/AI SuperApp desktop node.lnk" ] || fail "no Start-menu shortcut"
[ -f "$start_menu/AI SuperApp/Uninstall AI SuperApp desktop node.lnk" ] || fail "no uninstall shortcut"
autostart=$(reg_value "$run_key" AISuperAppDesktopNode)
echo "   Run value: $autostart"
case $autostart in
  '"C:\users\'*'\AppData\Local\Programs\AI SuperApp\desktop-node.exe" run --face') ;;
  *) fail "the Run value is not the installed node: '$autostart'" ;;
esac
[ "$(reg_value "$uninstall_key" DisplayVersion)" = "$version" ] || fail "Apps & features does not list $version"
reg_value "$uninstall_key" UninstallString | grep -q 'uninstall.exe' || fail "no UninstallString"
app_name=$(reg_value "$app_id_key" DisplayName || true)
echo "   AppUserModelID AISuperApp.DesktopNode: DisplayName '$app_name'"
[ "$app_name" = "AI SuperApp" ] || fail "the AppUserModelID is not registered (the shortcut did not take it?)"
if [ -z "$PLACEHOLDER" ]; then
  scripts/package-check-runtime.py "$dir/desktop-node.exe"
  cp "$shim" "$dir/"
  (cd "$dir" && wine ./desktop-node.exe version) | tr -d '\r' | tee "$WINEPREFIX/version.txt"
  grep -qx "desktop-node $version" "$WINEPREFIX/version.txt" || fail "the installed exe does not run"
  grep -qx "platform x86_64-windows" "$WINEPREFIX/version.txt" || fail "the installed exe is not x86_64-windows"
  rm "$dir/bcryptprimitives.dll"
fi

echo "==> setup.exe /S /NOAUTOSTART (installed again, without autostart)"
wine "$INSTALLER" /S /NOAUTOSTART
wineserver -w
[ -z "$(reg_value "$run_key" AISuperAppDesktopNode)" ] || fail "/NOAUTOSTART left the Run value"
[ -f "$dir/desktop-node.exe" ] || fail "the second install lost desktop-node.exe"

echo "==> uninstall.exe /S"
wine "$dir/uninstall.exe" /S
wineserver -w
[ ! -e "$dir" ] || fail "$dir is still there: $(ls -A "$dir")"
[ ! -e "$start_menu/AI SuperApp" ] || fail "the Start-menu folder is still there"
if wine reg query "$uninstall_key" >/dev/null 2>&1; then fail "the Apps & features entry is still there"; fi
if wine reg query "$app_id_key" >/dev/null 2>&1; then fail "the AppUserModelID's registration is still there"; fi
echo "package-windows-test: passed (installed per user with autostart, again without, uninstalled)"
