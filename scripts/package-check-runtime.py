#!/usr/bin/env python3
"""Checks that a desktop-node binary carries the JavaScript runtime built in.

    scripts/package-check-runtime.py BINARY [RUNTIME_WASM]

desktop-node/build.rs embeds the QuickJS runtime module (scripts/build-guests.sh builds it
to target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm) byte for byte, so
the binary must contain that module's bytes. The packaging scripts call this before they
package a binary, and the package tests again on the installed file: a node installed
from a package must run JavaScript mini-apps with nothing beside it. Exits 1, saying
why, when the runtime is missing or is not the one built from this source.
"""

import sys
from pathlib import Path

DEFAULT = "target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm"


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    binary = Path(sys.argv[1])
    runtime = Path(sys.argv[2] if len(sys.argv) == 3 else DEFAULT)
    if not runtime.is_file():
        print(f"{runtime}: no JS runtime to look for (run scripts/build-guests.sh)", file=sys.stderr)
        return 1
    module = runtime.read_bytes()
    if module[:4] != b"\0asm":
        print(f"{runtime}: not a wasm module", file=sys.stderr)
        return 1
    if binary.read_bytes().find(module) < 0:
        print(
            f"{binary}: the JavaScript runtime ({runtime}, {len(module)} bytes) is not built in: "
            "run scripts/build-guests.sh, then build the node again",
            file=sys.stderr,
        )
        return 1
    print(f"{binary}: JavaScript runtime built in ({len(module)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
