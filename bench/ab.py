#!/usr/bin/env python3
"""Two builds of speechvault side by side on one installation: is a change slower?

  bench/ab.py OLD_BINARY NEW_BINARY [--scale medium] [--repeat 3] [--restore]

Starts one sandbox (with NEW_BINARY), then alternates runs of the two builds, `--repeat`
rounds, the order swapped every round, so both see the same machine load; prints the wall
time, CPU time (user + system) and peak RSS of each run, the medians and the ratio NEW / OLD.
Machines are shared and noisy: read the ratio, not the seconds; when other work takes the cores,
the CPU time moves much less than the wall time.

  backup   (default) A full backup (`backup --full`) into a fresh local repository each time.
  restore  (--restore) NEW_BINARY backs the sandbox up once, untimed; each run restores that
           backup (`restore latest`) into a fresh empty installation (`sandbox up --empty`,
           made by NEW_BINARY before the run and taken down after it), so every restore starts
           from the same state.
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
    """Runs argv under /usr/bin/time: wall seconds, CPU seconds (user + system), peak RSS in MB."""
    p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(tfile), *argv], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        sys.exit(f"{argv[0]} {' '.join(argv[1:3])} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    wall, user, system, rss = tfile.read_text().split()[-4:]
    return float(wall), float(user) + float(system), int(rss) / 1024


def repository(work, name, env):
    """A config naming a local repository work/repo-NAME; returns the environment that uses it."""
    cfg = work / f"{name}.toml"
    cfg.write_text(f'[repository]\npath = "{work / f"repo-{name}"}"\npassword = "ab"\n')
    cfg.chmod(0o600)
    return dict(env, SPEECHVAULT_CONFIG=str(cfg))


def backup_run(binary, name, work, env):
    """A full backup of sandbox ab into a new repository, which is deleted afterwards."""
    e = repository(work, name, env)
    subprocess.run([binary, "init"], check=True, env=e, capture_output=True)
    try:
        return run_timed([binary, "backup", "--from", "sandbox:ab", "--full"], e, work / "time")
    finally:
        shutil.rmtree(work / f"repo-{name}", ignore_errors=True)


def restore_run(binary, sandbox_binary, e, work, env):
    """A restore of the latest backup in e's repository into a new empty sandbox ab-empty, made
    and taken down by sandbox_binary (the same build for both sides)."""
    subprocess.run([sandbox_binary, "sandbox", "up", "--name", "ab-empty", "--empty"], check=True, env=env,
                   capture_output=True)
    try:
        return run_timed([binary, "restore", "latest", "--to", "sandbox:ab-empty"], e, work / "time")
    finally:
        subprocess.run([sandbox_binary, "sandbox", "down", "ab-empty"], env=env, capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--restore", action="store_true",
                    help="time restores of one backup (made by NEW) into an empty installation instead of backups")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="speechvault-ab-", dir="/var/tmp"))
    os.chmod(work, 0o711)
    env = dict(os.environ, SPEECHVAULT_SANDBOX_HOME=str(work / "sandboxes"))
    try:
        subprocess.run([args.new, "sandbox", "up", "--name", "ab", "--scale", args.scale], check=True, env=env,
                       capture_output=True)
        if args.restore:
            e = repository(work, "restore", env)
            subprocess.run([args.new, "init"], check=True, env=e, capture_output=True)
            subprocess.run([args.new, "backup", "--from", "sandbox:ab", "--full"], check=True, env=e,
                           capture_output=True)
            what = "restores of one full backup (made by new) into an empty installation"

            def run(which, r):
                return restore_run(getattr(args, which), args.new, e, work, env)
        else:
            what = "full backups into a local repository"

            def run(which, r):
                return backup_run(getattr(args, which), f"{which}-{r}", work, env)
        results = {"old": [], "new": []}
        for r in range(args.repeat):
            for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
                wall, cpu, rss = run(which, r)
                results[which].append((wall, cpu, rss))
                print(f"  round {r + 1} {which}: {wall:6.1f} s  {cpu:6.1f} s CPU  {rss:6.0f} MB", file=sys.stderr,
                      flush=True)
        med = {k: statistics.median(w for w, _, _ in v) for k, v in results.items()}
        cpu = {k: statistics.median(c for _, c, _ in v) for k, v in results.items()}
        rss = {k: max(m for _, _, m in v) for k, v in results.items()}
        print(f"scale {args.scale}, {args.repeat} rounds, {what}")
        print(f"old {args.old}: median {med['old']:.1f} s, {cpu['old']:.1f} s CPU, peak {rss['old']:.0f} MB")
        print(f"new {args.new}: median {med['new']:.1f} s, {cpu['new']:.1f} s CPU, peak {rss['new']:.0f} MB")
        print(f"new / old: {med['new'] / med['old']:.3f} (wall), {cpu['new'] / cpu['old']:.3f} (CPU), "
              f"{rss['new'] / rss['old']:.3f} (peak RSS)")
    finally:
        subprocess.run([args.new, "sandbox", "down", "ab-empty"], env=env, capture_output=True)
        subprocess.run([args.new, "sandbox", "down", "ab"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
