#!/usr/bin/env python3
"""Two builds of speechvault side by side on one installation: is a change slower?

  bench/ab.py OLD_BINARY NEW_BINARY [--scale medium] [--repeat 3]

Starts one sandbox (with NEW_BINARY), then alternates full backups (a fresh local repository
each time, `backup --full`) with the two builds, `--repeat` rounds, so both see the same
machine load; prints the wall time and peak RSS of each run, the medians and the ratio
NEW / OLD. Machines are shared and noisy: read the ratio, not the seconds.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_timed(argv, env, tfile):
    p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(tfile), *argv], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{argv[0]} {' '.join(argv[1:3])} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    wall, rss = tfile.read_text().split()[-2:]
    return float(wall), int(rss) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="speechvault-ab-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    env = dict(os.environ, SPEECHVAULT_SANDBOX_HOME=str(work / "sandboxes"))
    try:
        subprocess.run([args.new, "sandbox", "up", "--name", "ab", "--scale", args.scale], check=True, env=env,
                       capture_output=True)
        results = {"old": [], "new": []}
        for r in range(args.repeat):
            for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
                repo = work / f"repo-{which}-{r}"
                cfg = work / f"{which}-{r}.toml"
                cfg.write_text(f'[repository]\npath = "{repo}"\npassword = "ab"\n')
                cfg.chmod(0o600)
                binary = getattr(args, which)
                e = dict(env, SPEECHVAULT_CONFIG=str(cfg))
                subprocess.run([binary, "init"], check=True, env=e, capture_output=True)
                wall, rss = run_timed([binary, "backup", "--from", "sandbox:ab", "--full"], e, work / "time")
                results[which].append((wall, rss))
                print(f"  round {r + 1} {which}: {wall:6.1f} s  {rss:6.0f} MB", file=sys.stderr, flush=True)
                shutil.rmtree(repo, ignore_errors=True)
        med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
        rss = {k: max(m for _, m in v) for k, v in results.items()}
        print(f"scale {args.scale}, {args.repeat} rounds, full backups into a local repository")
        print(f"old {args.old}: median {med['old']:.1f} s, peak {rss['old']:.0f} MB")
        print(f"new {args.new}: median {med['new']:.1f} s, peak {rss['new']:.0f} MB")
        print(f"new / old: {med['new'] / med['old']:.3f} (wall), {rss['new'] / rss['old']:.3f} (peak RSS)")
    finally:
        subprocess.run([args.new, "sandbox", "down", "ab"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
