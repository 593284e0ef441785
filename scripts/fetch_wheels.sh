#!/usr/bin/env bash
# Prepare, on a machine with network, the wheels an offline GPU machine needs to run icrl-bench:
#
#     bash scripts/fetch_wheels.sh DIR [--python-version 3.12] [--missing-on FILE]
#
# DIR gets one wheel per package of icrl-bench's runtime closure (the versions installed in this
# checkout's .venv, for the target Python), never torch or its CUDA packages: the GPU machine keeps the torch it has. `--missing-on FILE` (a `pip list` or
# `pip freeze` of the target machine, or bare names one per line) leaves out what it already has,
# to keep DIR small; numpy is fetched unless the target's is known to be inside icrl-bench's pin. scripts/gpu_reproduce.sh
# --wheels DIR installs from it with pip's --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash scripts/fetch_wheels.sh DIR [--python-version 3.12] [--missing-on FILE]" >&2; exit 2; }
out="$1"; shift
pyver=3.12
missing_on=""
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) pyver="$2"; shift 2 ;;
        --missing-on) missing_on="$2"; shift 2 ;;
        *) echo "error: unknown option $1 (options: --python-version X.Y, --missing-on FILE)" >&2; exit 2 ;;
    esac
done
bash scripts/setup.sh
mkdir -p "$out"
# The runtime closure of icrl-bench (no extras), as installed here: name==version per line.
.venv/bin/python - "$missing_on" > "$out/requirements.txt" <<'EOF'
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

SKIP = re.compile(r"^(torch|triton|nvidia-.*|icrl-bench)$")
have = {}
if sys.argv[1]:
    for line in open(sys.argv[1]):
        parts = re.split(r"==|\s+", line.strip())
        if parts[0] and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", parts[0]):
            version = parts[1] if len(parts) >= 2 and parts[1][:1].isdigit() else None  # a bare name: version unknown
            have[re.sub(r"[-_.]+", "-", parts[0]).lower()] = version
seen, todo = {}, ["icrl-bench"]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    dist = metadata.distribution(name)
    seen[name] = dist.version
    if SKIP.match(name) and name != "icrl-bench":
        continue  # torch's own needs come with the target's torch
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
pins = {"numpy": Requirement(next(r for r in metadata.requires("icrl-bench") if r.startswith("numpy")))}
for name, version in sorted(seen.items()):
    if SKIP.match(name):
        continue
    if name in have and (name not in pins or (have[name] is not None and pins[name].specifier.contains(have[name]))):
        continue
    print(f"{name}=={version}")
EOF
platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
platforms+=(--platform any)
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$out" -r "$out/requirements.txt"
echo "wheels for Python $pyver in $out: $(ls "$out"/*.whl | wc -l) files, $(du -sh "$out" | cut -f1)"
