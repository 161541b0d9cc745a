#!/usr/bin/env bash
# Installs the real VS Code workbench that tests/test_vscode_workbench.py drives: code-server
# (VS Code 1.100.3 for the browser) and playwright-core into editors/vscode/e2e/node_modules,
# without downloading anything but npm packages. Needs Debian's chromium, ripgrep and
# libkrb5-dev (`apt-get install -y chromium ripgrep libkrb5-dev`) and Node 20 (code-server 4.100
# is the newest line that runs on it). A second run with the same package-lock.json does nothing.
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.kvsplice-e2e-installed
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    echo "e2e install: up to date ($PWD/node_modules)"
    exit 0
fi

missing=()
for tool in chromium rg krb5-config; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "e2e install: missing ${missing[*]}; run: apt-get install -y chromium ripgrep libkrb5-dev" >&2
    exit 1
fi

# Native modules build against the local Node headers instead of downloading them; node-pty's
# build runs `npx node-gyp`, which must not stop to ask; code-server's postinstall refuses to run
# as root without unsafe-perm.
export npm_config_nodedir=/usr npm_config_yes=true npm_config_unsafe_perm=true

# 1. The packages without their install scripts, to read what code-server's VS Code will fetch.
npm ci --ignore-scripts --no-audit --no-fund

# 2. @vscode/ripgrep's postinstall downloads rg from GitHub unless its download cache already
#    holds the archive (lib/download.js: $TMPDIR/vscode-ripgrep-cache-<package version>/
#    ripgrep-<VERSION from lib/postinstall.js>-<target>.tar.gz, with rg at its top). Put
#    Debian's rg there under that name.
rg_package=$(node -p "require('./node_modules/code-server/lib/vscode/npm-shrinkwrap.json')
    .packages['node_modules/@vscode/ripgrep'].version")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent "@vscode/ripgrep@$rg_package" >/dev/null && tar xzf ./*.tgz package/lib/postinstall.js)
rg_version=$(sed -n "s/^const VERSION = '\(.*\)';/\1/p" "$scratch/package/lib/postinstall.js")
case "$(uname -m)" in
    x86_64) target=x86_64-unknown-linux-musl ;;
    aarch64) target=aarch64-unknown-linux-musl ;;
    *) echo "e2e install: no ripgrep target for $(uname -m)" >&2; exit 1 ;;
esac
cache="${TMPDIR:-/tmp}/vscode-ripgrep-cache-$rg_package"
mkdir -p "$cache" "$scratch/rg"
cp "$(command -v rg)" "$scratch/rg/rg"
tar czf "$cache/ripgrep-$rg_version-$target.tar.gz" -C "$scratch/rg" rg

# 3. The install scripts: code-server's postinstall runs `npm install` in its bundled VS Code,
#    whose native modules build from source (their prebuilt downloads fail offline). npm 11 runs
#    a dependency's install scripts only where allowScripts (package.json) or allow-scripts
#    (.npmrc) names it; that nested install reads the .npmrc beside VS Code's package.json.
echo "allow-scripts=@parcel/watcher,@vscode/deviceid,@vscode/ripgrep,@vscode/spdlog,kerberos,native-watchdog,node-pty" \
    > node_modules/code-server/lib/vscode/.npmrc
npm rebuild code-server argon2

test -x node_modules/code-server/lib/vscode/node_modules/@vscode/ripgrep/bin/rg
test -f node_modules/code-server/lib/vscode/node_modules/node-pty/build/Release/pty.node
echo "$want" > "$stamp"
