#!/usr/bin/env bash
# The benchmark suite: installs what it needs (rclone, restic, Garage when asked), builds the
# release binary, then runs bench/run.py, which writes markdown, an SVG chart and the raw
# figures to bench/results/.
#
#   scripts/bench.sh --quick                    # small sandbox, one run: while developing
#   scripts/bench.sh                            # medium sandbox on the sandbox's S3 server
#   scripts/bench.sh --server garage --repeat 3 # medium sandbox on Garage, three runs (noise)
#   scripts/bench.sh scaling                    # 10k, 100k and 1M small objects; one 5 GiB object
#
# `scripts/bench.sh --help` lists every option. Machines are shared and noisy: read the ratios
# measured within one run, not absolute seconds across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then exec python3 bench/run.py --help; fi
if [[ " $* " == *" garage "* || " $* " == *"--server=garage"* ]]; then scripts/setup.sh --garage; else scripts/setup.sh; fi
export PATH="/opt/garage/bin:$PATH"
for tool in rclone restic; do
  command -v $tool >/dev/null 2>&1 || { echo "== installing $tool (apt)"; apt-get install -y -qq $tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }; }
done
cargo build --release --quiet
exec python3 bench/run.py "$@"
