#!/usr/bin/env bash
# Builds the .deb and the .tar.gz (CPack, rules in installer/packaging.cmake) into
# <build>/packages/, then checks them as a user would get them: the .deb is unpacked
# with `dpkg-deb -x` into a scratch root, and the installed binaries run from there
# (LD_LIBRARY_PATH unset): cetus-cli --version, cetus-cli info on the installed model
# (or, without a bundled model, on tests/data/golden/v3-noaux), the default model
# lookup, cetus --version, and an offscreen first start of the window (which must
# open the bundled model by itself when there is one).
#
# Usage: installer/package.sh                 Release build in build-release/ (the release
#                                             preset, tests off, install prefix /usr)
#        installer/package.sh --reuse DIR     package an already configured build folder
#                                             (CI: build/ from installer/test.sh; only
#                                             cetus and cetus-cli are (re)built)
# CI=1 implies --reuse build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build=""
if [ "${1:-}" = "--reuse" ]; then
    build="${2:?--reuse needs a build folder}"
elif [ "${CI:-0}" = "1" ]; then
    build=build
fi

start=$SECONDS
if [ -n "$build" ]; then
    [ -f "$build/CMakeCache.txt" ] || { echo "package: $build is not a configured build folder" >&2; exit 1; }
    cmake -S . -B "$build" -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
else
    build=build-release
    cmake --preset release -DCETUS_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
fi
targets=(cetus-cli)
grep -q '^CETUS_QT:BOOL=ON' "$build/CMakeCache.txt" && targets+=(cetus)
cuda_plugin=0
if cmake --build "$build" --target help | grep -q '^cetus-cuda:'; then
    targets+=(cetus-cuda)
    cuda_plugin=1
fi
cmake --build "$build" --target "${targets[@]}"

rm -rf "$build/packages"
(cd "$build" && cpack --config CPackConfig.cmake)
deb="$(ls "$build"/packages/cetus_*.deb)"
tgz="$(ls "$build"/packages/cetus-*.tar.gz)"
echo "== built in $((SECONDS - start)) s:"
ls -l "$deb" "$tgz"

echo "== control"
dpkg-deb -f "$deb" Package Version Architecture Installed-Size Depends Recommends Section
echo "== contents (model files summarised)"
dpkg-deb -c "$deb" | awk '{print $6}' | grep -v '/$' | grep -v '^./usr/share/cetus/models/.*/.*/' | sed 's|^\./|/|'

scratch="$(mktemp -d "${TMPDIR:-/tmp}/cetus-package.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
scratch="$(cd "$scratch" && pwd -P)"
dest="$scratch/root"
dpkg-deb -x "$deb" "$dest"
usr="$dest/usr"
fail() { echo "package: FAILED: $*" >&2; exit 1; }

for f in bin/cetus-cli share/doc/cetus/copyright; do
    [ -f "$usr/$f" ] || fail "missing /usr/$f"
done
if [[ " ${targets[*]} " == *" cetus "* ]]; then
    for f in bin/cetus share/applications/cetus.desktop share/icons/hicolor/scalable/apps/cetus.svg \
             share/metainfo/io.cetus.Cetus.metainfo.xml; do
        [ -f "$usr/$f" ] || fail "missing /usr/$f"
    done
    if command -v desktop-file-validate >/dev/null; then
        desktop-file-validate "$usr/share/applications/cetus.desktop" | grep -v '^.*: hint:' || true
    fi
    if command -v appstreamcli >/dev/null; then
        appstreamcli validate --no-net "$usr/share/metainfo/io.cetus.Cetus.metainfo.xml" || fail "AppStream metadata"
    fi
fi
for b in "$usr"/bin/*; do
    if readelf -d "$b" | grep -qE 'RPATH|RUNPATH'; then fail "$b has an RPATH"; fi
done

# Run from the scratch root only: no LD_LIBRARY_PATH, cwd outside the source tree.
run() { (cd "$scratch" && env -u LD_LIBRARY_PATH -u CETUS_MODELS_DIR "$@"); }
echo "== installed cetus-cli --version"
run "$usr/bin/cetus-cli" --version

if [ "$cuda_plugin" = 1 ]; then
    echo "== installed CUDA plug-in: found and loaded by the installed cetus-cli"
    [ -f "$usr/lib/cetus/libcetus-cuda.so" ] || fail "missing /usr/lib/cetus/libcetus-cuda.so"
    run "$usr/bin/cetus-cli" info --device auto --model "$root/tests/data/golden/v3-noaux" >/dev/null 2>"$scratch/cuda.log" \
        || { cat "$scratch/cuda.log"; fail "cetus-cli info --device auto"; }
    grep -E "CUDA plug-in|device auto|backend" "$scratch/cuda.log" | cut -c1-200
    # The installed copy was loaded, and answered with a device or the reason there is none.
    grep -qF "CUDA plug-in: $usr/bin/../lib/cetus/libcetus-cuda.so" "$scratch/cuda.log" \
        || fail "the installed plug-in was not the one loaded"
fi

model=""
if [ -d "$usr/share/cetus/models" ]; then
    model="$(find "$usr/share/cetus/models" -mindepth 2 -maxdepth 2 -name config.json -printf '%h\n' | sort | head -n 1)"
fi
if [ -n "$model" ]; then
    echo "== installed cetus-cli info --model ${model#"$dest"}"
    run "$usr/bin/cetus-cli" info --model "$model"
    [ ! -d "$model/recipe" ] || fail "the model's recipe/ was packaged"
    size_mb="$(du -sm "$usr/share/cetus/models" | cut -f1)"
    echo "   installed model(s): ${size_mb} MiB"
    [ "$size_mb" -le 100 ] || echo "package: WARNING: the bundled model(s) take ${size_mb} MiB (training leftovers?)" >&2
    echo "== installed cetus-cli info (default model lookup)"
    run "$usr/bin/cetus-cli" info >"$scratch/lookup.out" 2>"$scratch/lookup.log"
    head -n 1 "$scratch/lookup.out"
    grep -F "using the bundled model $model" "$scratch/lookup.log" || { cat "$scratch/lookup.log"; fail "the default lookup did not find $model"; }
else
    echo "== no bundled model in the package (resources/models/*/config.json is missing):"
    echo "== installed cetus-cli info --model tests/data/golden/v3-noaux instead"
    run "$usr/bin/cetus-cli" info --model "$root/tests/data/golden/v3-noaux"
fi

if [ -x "$usr/bin/cetus" ]; then
    echo "== installed cetus --version"
    run env QT_QPA_PLATFORM=offscreen "$usr/bin/cetus" --version
    echo "== installed cetus: offscreen start in a fresh home (first start)"
    home="$scratch/home"
    mkdir -p "$home"
    want="Cetus .* starting"
    [ -n "$model" ] && want="\\] loaded $(basename "$model"):"
    (cd "$scratch" && exec env -u LD_LIBRARY_PATH -u CETUS_MODELS_DIR HOME="$home" XDG_CONFIG_HOME="$home/.config" \
        XDG_DATA_HOME="$home/.local/share" XDG_RUNTIME_DIR="$scratch" QT_QPA_PLATFORM=offscreen \
        "$usr/bin/cetus") >"$scratch/gui.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 60); do
        sleep 0.5
        grep -qE "$want" "$scratch/gui.log" && break
        kill -0 "$pid" 2>/dev/null || break
    done
    sleep 1
    alive=0
    kill -0 "$pid" 2>/dev/null && alive=1 && kill "$pid"
    wait "$pid" 2>/dev/null || true
    grep -iE "starting|bundled model|loading model|loaded|error|critical" "$scratch/gui.log" | cut -c1-200 || true
    [ "$alive" -eq 1 ] || { cat "$scratch/gui.log"; fail "cetus exited by itself"; }
    grep -qE "$want" "$scratch/gui.log" || { cat "$scratch/gui.log"; fail "no \"$want\" in the log of cetus within 30 s"; }
fi

echo "== .tar.gz: unpacked elsewhere, cetus-cli runs from it"
mkdir -p "$scratch/tgz"
tar -xzf "$tgz" -C "$scratch/tgz"
top="$(ls -d "$scratch"/tgz/*/)"
diff <(cd "$top" && find . -type f | sort) <(cd "$usr" && find . -type f | sort) \
    || fail "the .tar.gz and the .deb hold different files"
run "$top/bin/cetus-cli" --version
echo "package: OK in $((SECONDS - start)) s: $deb $tgz"
