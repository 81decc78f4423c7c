#!/usr/bin/env python3
"""speechvault's benchmark suite: run by scripts/bench.sh, which installs what it needs.

Two modes, each writing markdown, an SVG chart and the raw figures (JSON) to bench/results/:

  compare  (default) On one installation, side by side in one run: the manual procedure
           (rclone copy + pg_dump, restic of the copy, rclone copy back + psql), a tuned copy
           (rclone, 32 transfers), restic from local disk, speechvault (full, unchanged, 1%
           changed, restores with each verification level), and the ceilings (a parallel
           reader, the disk's sequential write, the server's small-PUT rate).
  scaling  Many small objects (10k to 1M) and one large object: time and peak RSS against size.

Machines are shared and noisy: compare ratios measured in one run, and use --repeat 3 to see
the noise (the tables give the median and the range).
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SPEECHVAULT_BENCH_BIN runs another build (e.g. a copy, so that rebuilding does not change the
# binary in the middle of a run).
SV = os.environ.get("SPEECHVAULT_BENCH_BIN") or str(ROOT / "target/release/speechvault")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="speechvault-bench-", dir="/var/tmp"))
        os.chmod(self.work, 0o711)
        self.env = dict(os.environ)
        self.env["SPEECHVAULT_SANDBOX_HOME"] = str(self.work / "sandboxes")
        self.env.pop("AWS_CA_BUNDLE", None)
        self.sandboxes = []
        self.garage_pid = None
        self.server_name = "the sandbox's S3 server (speechvault sandbox, loopback)"
        if args.server == "garage":
            out = subprocess.run(
                [str(ROOT / ".ci/garage-up.sh"), str(self.work / "garage")],
                check=True, capture_output=True, text=True, env=self.env,
            ).stdout
            g = {}
            for line in out.splitlines():
                k, _, v = line.removeprefix("export ").partition("=")
                g[k] = v
            self.garage_pid = int((self.work / "garage/garage.pid").read_text())
            self.s3 = {
                "endpoint": g["SPEECHVAULT_TEST_S3_ENDPOINT"],
                "AWS_ACCESS_KEY_ID": g["SPEECHVAULT_TEST_S3_ACCESS_KEY"],
                "AWS_SECRET_ACCESS_KEY": g["SPEECHVAULT_TEST_S3_SECRET_KEY"],
                "AWS_REGION": g["SPEECHVAULT_TEST_S3_REGION"],
            }
            version = subprocess.run(["garage", "--version"], capture_output=True, text=True).stdout.split()
            self.server_name = f"Garage {version[1].removeprefix('cargo:') if len(version) > 1 else ''} (single node, sqlite metadata, loopback)"
        self.results = []

    # ---- running and measuring -------------------------------------------------------------

    def sv(self, *a, check=True, env=None):
        return subprocess.run([SV, *a], check=check, capture_output=True, text=True, env=env or self.env)

    def measure(self, name, cmd, group, repeat=0, bytes_=None, env=None, shell=False, note=""):
        """Runs cmd under /usr/bin/time: wall seconds, CPU (user+sys) and peak RSS (largest
        process of the command's tree)."""
        tfile = self.work / "time"
        argv = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(tfile)]
        argv += ["bash", "-c", cmd] if shell else cmd
        servers = self.server_pids()
        before = {pid: cpu_seconds(pid) for pid in servers}
        p = subprocess.run(argv, capture_output=True, text=True, env=env or self.env)
        after = {pid: cpu_seconds(pid) for pid in before}
        server_cpu = sum(after[pid] - t for pid, t in before.items() if t is not None and after[pid] is not None)
        if p.returncode != 0:
            log(f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
            raise SystemExit(1)
        wall, user, system, rss = tfile.read_text().split()[-4:]
        r = {
            "name": name, "group": group, "repeat": repeat, "wall": float(wall),
            "cpu": float(user) + float(system), "rss_mb": int(rss) / 1024, "bytes": bytes_, "note": note,
            "server_cpu": server_cpu,
        }
        self.results.append(r)
        log(f"  {name:<48} {r['wall']:8.1f} s  cpu {r['cpu']:7.1f} s  rss {r['rss_mb']:7.0f} MB  "
            f"server cpu {server_cpu:6.1f} s")
        return p

    def server_pids(self):
        """The S3 server processes: Garage, or the sandboxes' own servers."""
        if self.garage_pid:
            return [self.garage_pid]
        pids = []
        for name in self.sandboxes:
            try:
                pid = self.info(name)["s3"].get("pid")
            except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError):
                pid = None
            if pid:
                pids.append(int(pid))
        return pids

    # ---- installations ---------------------------------------------------------------------

    def up(self, name, *flags):
        argv = ["sandbox", "up", "--name", name, *flags]
        env = self.env
        if self.args.server == "garage":
            argv += ["--s3-endpoint", self.s3["endpoint"], "--bucket-suffix", name.replace("_", "-")]
            env = {**self.env, **{k: v for k, v in self.s3.items() if k != "endpoint"}}
        self.sv(*argv, env=env)
        self.sandboxes.append(name)

    def down(self, name):
        self.sv("sandbox", "down", name, check=False)
        if name in self.sandboxes:
            self.sandboxes.remove(name)

    def info(self, name):
        return json.loads(self.sv("sandbox", "env", name, "--json").stdout)["sandbox"]

    def env_of(self, name):
        """The sandbox's PG* and AWS_* variables, plus an rclone remote "s3" for its store."""
        env = dict(self.env)
        for line in self.sv("sandbox", "env", name).stdout.splitlines():
            k, _, v = line.removeprefix("export ").partition("=")
            env[k] = shlex.split(v)[0] if v else ""
        env.update({
            "RCLONE_CONFIG": str(self.work / "rclone.conf"),
            "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
            "RCLONE_CONFIG_S3_ENDPOINT": env["AWS_ENDPOINT_URL"],
            "RCLONE_CONFIG_S3_REGION": env["AWS_REGION"],
            "RCLONE_CONFIG_S3_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        })
        (self.work / "rclone.conf").touch()
        return env

    def cleanup(self):
        for s in list(self.sandboxes):
            self.down(s)
        if self.garage_pid:
            subprocess.run(["kill", str(self.garage_pid)], check=False)
        shutil.rmtree(self.work, ignore_errors=True)

    def config(self, name):
        path = self.work / f"{name}.toml"
        path.write_text(f'[repository]\npath = "{self.work / name}"\npassword = "bench"\n')
        path.chmod(0o600)
        return str(path)

    # ---- the comparison --------------------------------------------------------------------

    def compare(self):
        a = self.args
        log(f"== installation a: {a.scale} sandbox on {self.server_name}")
        self.up("a", "--scale", a.scale, "--seed", "1")
        src = self.info("a")
        buckets = [actual for _, actual in src["s3"]["buckets"]]
        logical = [lg for lg, _ in src["s3"]["buckets"]]
        dbs = ["stt-customization", "tts-customization", "stt-async"]
        self.up("p", "--scale", "tiny", "--components", "sttAsync")
        read = json.loads(self.sv("sandbox", "read", "a", "--json").stdout)["read"]
        data = read["bytes"]
        self.dataset = {"objects": read["objects"], "bytes": data}
        log(f"   {read['objects']} objects, {data / 1e9:.2f} GB")
        aenv = self.env_of("a")
        for r in range(a.repeat):
            log(f"== repeat {r + 1} of {a.repeat}")
            # Ceilings.
            self.measure("ceiling: parallel reader (32 GETs, discard)", [SV, "sandbox", "read", "a"], "ceiling", r, data)
            dd = self.work / "dd"
            mib = 256 if a.quick else 1024
            self.measure("ceiling: disk sequential write (dd, fdatasync)",
                         ["dd", "if=/dev/zero", f"of={dd}", "bs=16M", f"count={mib // 16}", "conv=fdatasync"],
                         "ceiling", r, mib << 20)
            dd.unlink()
            puts = 1000 if a.quick else 5000
            self.measure(f"ceiling: small PUTs ({puts} x <=8 KiB, 32 at a time)",
                         [SV, "sandbox", "add", "p", "--objects", str(puts), "--set", f"r{r}"], "ceiling", r,
                         note=f"{puts} objects")
            # The manual procedure, and restic of its copy.
            copy = self.work / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            # rclone fails on keys a filesystem cannot hold (the seed has some on purpose): the
            # manual procedure goes on without them, as it does in real life; we count the loss.
            script = "; ".join(
                [f"rclone copy -q --retries 1 s3:{b} {copy}/{b} 2>>{self.work}/rclone-errors" for b in buckets]
                + [f"pg_dump -d {d} -f {copy}/{d}.sql" for d in dbs]) + "; true"
            self.measure("manual: rclone copy + pg_dump", script, "backup", r, data, env=aenv, shell=True)
            copied = sum(1 for p in copy.rglob("*") if p.is_file() and p.suffix != ".sql")
            self.lost = self.dataset["objects"] - copied
            renv = {**self.env, "RESTIC_REPOSITORY": str(self.work / "restic"), "RESTIC_PASSWORD": "bench",
                    "RESTIC_CACHE_DIR": str(self.work / "restic-cache")}
            shutil.rmtree(self.work / "restic", ignore_errors=True)
            shutil.rmtree(self.work / "restic-cache", ignore_errors=True)
            subprocess.run(["restic", "init"], env=renv, check=True, capture_output=True)
            self.measure("restic backup of the copy, first (local disk)", ["restic", "backup", "--quiet", str(copy)],
                         "backup", r, data, env=renv)
            self.measure("restic backup of the copy, unchanged", ["restic", "backup", "--quiet", str(copy)],
                         "backup", r, data, env=renv)
            self.repo_sizes = {"restic": du(self.work / "restic"), "copy": du(copy)}
            copy32 = self.work / "copy32"
            shutil.rmtree(copy32, ignore_errors=True)
            self.measure("rclone copy, 32 transfers", "; ".join(
                f"rclone copy -q --retries 1 --transfers 32 --checkers 32 s3:{b} {copy32}/{b} 2>/dev/null"
                for b in buckets) + "; true",
                "backup", r, data, env=aenv, shell=True)
            shutil.rmtree(copy32, ignore_errors=True)
            # The manual restore into an empty installation.
            self.up(f"b{r}", "--empty")
            benv = self.env_of(f"b{r}")
            binfo = self.info(f"b{r}")
            suffix = f"-{binfo['s3']['bucket_suffix']}" if binfo["s3"].get("bucket_suffix") else ""
            script = " && ".join(
                [f"rclone copy -q --retries 1 {copy}/{actual} s3:{lg}{suffix}" for lg, actual in zip(logical, buckets)]
                + [f"psql -q -d postgres -c 'CREATE DATABASE \"{d}\"' && psql -q -v ON_ERROR_STOP=1 -d {d} "
                   f"-f {copy}/{d}.sql >/dev/null" for d in dbs])
            self.measure("manual restore: rclone copy back + psql -f", script, "restore", r, data, env=benv,
                         shell=True)
            self.down(f"b{r}")
            # speechvault.
            cfg = self.config(f"repo{r}")
            self.sv("-c", cfg, "init")
            self.measure("speechvault backup, first", [SV, "-c", cfg, "backup", "--from", "sandbox:a"], "backup", r,
                         data)
            self.measure("speechvault backup, unchanged", [SV, "-c", cfg, "backup", "--from", "sandbox:a"], "backup",
                         r, data)
            self.repo_sizes["speechvault"] = du(self.work / f"repo{r}")
            for level in ["server", "read-back", "none"]:
                t = f"t{r}{level.replace('-', '')}"
                self.up(t, "--empty")
                self.measure(f"speechvault restore, --verify={level}",
                             [SV, "-c", cfg, "restore", "--to", f"sandbox:{t}", f"--verify={level}"], "restore", r,
                             data)
                self.down(t)
            churn = json.loads(self.sv("sandbox", "churn", "a", "--percent", "1", "--seed", str(100 + r),
                                       "--json").stdout)["churn"]
            self.measure("speechvault backup, 1% changed", [SV, "-c", cfg, "backup", "--from", "sandbox:a"], "backup",
                         r, data, note=f"{churn['objects_rewritten']} objects, {churn['rows_updated']} rows changed")
            shutil.rmtree(self.work / f"repo{r}", ignore_errors=True)
            shutil.rmtree(copy, ignore_errors=True)

    # ---- scaling ---------------------------------------------------------------------------

    def scaling(self):
        a = self.args
        for n in a.sizes:
            log(f"== {n} small objects")
            self.up("s", "--scale", "tiny", "--components", "sttAsync")
            self.measure(f"add {n} objects", [SV, "sandbox", "add", "s", "--objects", str(n)], "setup", note=str(n))
            self.scale_runs(str(n), n)
        log(f"== one object of {a.large}")
        self.up("s", "--scale", "tiny", "--components", "baseModels")
        self.measure(f"add one {a.large} object", [SV, "sandbox", "add", "s", "--large", a.large], "setup")
        read = json.loads(self.sv("sandbox", "read", "s", "--json").stdout)["read"]
        self.measure("ceiling: parallel reader", [SV, "sandbox", "read", "s"], f"large {a.large}", bytes_=read["bytes"])
        self.scale_runs(f"large {a.large}", None, read["bytes"])

    def scale_runs(self, group, n, bytes_=None):
        cfg = self.config("scale-repo")
        self.sv("-c", cfg, "init")
        self.measure("backup, first", [SV, "-c", cfg, "backup", "--from", "sandbox:s"], group, bytes_=bytes_,
                     note=str(n or ""))
        self.measure("backup, unchanged", [SV, "-c", cfg, "backup", "--from", "sandbox:s"], group, bytes_=bytes_,
                     note=str(n or ""))
        self.up("t", "--empty")
        self.measure("restore, --verify=server", [SV, "-c", cfg, "restore", "--to", "sandbox:t"], group,
                     bytes_=bytes_, note=str(n or ""))
        self.down("t")
        self.down("s")
        shutil.rmtree(self.work / "scale-repo", ignore_errors=True)


def cpu_seconds(pid):
    """User + system CPU seconds of a running process (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


# ---- reporting ---------------------------------------------------------------------------------


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1048576:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions():
    def first_line(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {
        "speechvault": first_line(SV, "--version"), "restic": first_line("restic", "version"),
        "rclone": first_line("rclone", "version"), "pg_dump": first_line("pg_dump", "--version"),
    }


def summarize(results):
    """name -> {median, lo, hi, cpu, rss, bytes, note} over repeats."""
    by = {}
    for r in results:
        by.setdefault((r["group"], r["name"]), []).append(r)
    out = {}
    for (group, name), rs in by.items():
        walls = [r["wall"] for r in rs]
        out[(group, name)] = {
            "group": group, "name": name, "wall": statistics.median(walls), "lo": min(walls), "hi": max(walls),
            "cpu": statistics.median(r["cpu"] for r in rs), "rss": max(r["rss_mb"] for r in rs),
            "server_cpu": statistics.median(r.get("server_cpu") or 0 for r in rs),
            "bytes": rs[0]["bytes"], "note": rs[0]["note"], "n": len(rs),
        }
    return out


def table(rows):
    lines = ["| group | step | wall (median) | range | MB/s | CPU | S3 server CPU | peak RSS | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in rows:
        tput = f"{s['bytes'] / 1e6 / s['wall']:.0f}" if s["bytes"] and s["wall"] > 0 else ""
        rng = f"{s['lo']:.1f}–{s['hi']:.1f}" if s["n"] > 1 else ""
        lines.append(f"| {s['group']} | {s['name']} | {s['wall']:.1f} s | {rng} | {tput} | {s['cpu']:.1f} s | "
                     f"{s['server_cpu']:.1f} s | {s['rss']:.0f} MB | {s['note']} |")
    return "\n".join(lines)


def svg_bars(title, bars, unit="s"):
    """A horizontal bar chart: [(label, value)]."""
    width, left, bar_h, gap = 900, 380, 22, 8
    height = 50 + len(bars) * (bar_h + gap)
    top = max((v for _, v in bars), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="13">', f'<text x="10" y="22" font-size="15" font-weight="bold">{esc(title)}</text>']
    for i, (label, v) in enumerate(bars):
        y = 40 + i * (bar_h + gap)
        w = (width - left - 90) * v / top
        color = "#2b7bb9" if label.startswith("speechvault") else "#b0b0b0"
        out.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{esc(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{v:.1f} {unit}</text>')
    out.append("</svg>")
    return "\n".join(out)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ratio_checks(w, rss):
    """The targets of the comparison from wall times `w` (step name -> seconds) and the peak
    RSS of speechvault's runs: (measure, value, target, met or None)."""
    manual_first = w["manual: rclone copy + pg_dump"] + w["restic backup of the copy, first (local disk)"]
    manual_unchanged = w["manual: rclone copy + pg_dump"] + w["restic backup of the copy, unchanged"]
    full = w["speechvault backup, first"]
    restic_local = w["restic backup of the copy, first (local disk)"]
    manual_restore = w["manual restore: rclone copy back + psql -f"]
    reader = w["ceiling: parallel reader (32 GETs, discard)"]
    return [
        ("full backup vs manual copy + restic", manual_first / full, ">= 4x", manual_first / full >= 4),
        ("full backup vs restic from local disk (time ratio, lower is better)", full / restic_local, "<= 1.5x",
         full / restic_local <= 1.5),
        ("parallel reader alone vs restic from local disk (time ratio: the floor of the line above)",
         reader / restic_local, "", None),
        ("full backup vs rclone copy with 32 transfers", w["rclone copy, 32 transfers"] / full, "", None),
        ("unchanged backup, seconds", w["speechvault backup, unchanged"], "< 5 s",
         w["speechvault backup, unchanged"] < 5),
        ("unchanged backup / full backup", w["speechvault backup, unchanged"] / full, "<= 0.10",
         w["speechvault backup, unchanged"] / full <= 0.10),
        ("unchanged backup vs manual copy + restic unchanged", manual_unchanged / w["speechvault backup, unchanged"],
         "", None),
        ("1%-changed backup / full backup", w["speechvault backup, 1% changed"] / full, "<= 0.15",
         w["speechvault backup, 1% changed"] / full <= 0.15),
        ("restore (--verify=server) vs manual restore", manual_restore / w["speechvault restore, --verify=server"],
         ">= 2x", manual_restore / w["speechvault restore, --verify=server"] >= 2),
        ("restore (--verify=none) vs manual restore", manual_restore / w["speechvault restore, --verify=none"], "",
         None),
        ("full backup throughput / parallel reader ceiling", reader / full, "", None),
        ("peak RSS of any speechvault run, MB", rss, "<= 512", rss <= 512),
    ]


def report_compare(bench, args, stem):
    s = summarize(bench.results)
    w = {name: v["wall"] for (_, name), v in s.items()}
    manual_first = w["manual: rclone copy + pg_dump"] + w["restic backup of the copy, first (local disk)"]
    manual_unchanged = w["manual: rclone copy + pg_dump"] + w["restic backup of the copy, unchanged"]
    full = w["speechvault backup, first"]
    rss = max(v["rss"] for (_, n), v in s.items() if n.startswith("speechvault"))
    checks = ratio_checks(w, rss)
    # The same ratios within each repeat: their spread is the noise that matters.
    per_repeat = []
    for r in range(args.repeat):
        wr = {x["name"]: x["wall"] for x in bench.results if x["repeat"] == r}
        rr = max((x["rss_mb"] for x in bench.results if x["repeat"] == r and x["name"].startswith("speechvault")),
                 default=0)
        if all(name in wr for name in w):
            per_repeat.append([v for _, v, _, _ in ratio_checks(wr, rr)])
    md = header(bench, args, f"comparison, {args.scale} sandbox")
    md += (f"\nData set: {bench.dataset['objects']} objects, {bench.dataset['bytes'] / 1e9:.2f} GB, plus three "
           f"databases. Repository sizes: speechvault {bench.repo_sizes['speechvault'] / 1e9:.2f} GB, restic "
           f"{bench.repo_sizes['restic'] / 1e9:.2f} GB, the manual copy {bench.repo_sizes['copy'] / 1e9:.2f} GB. "
           f"The manual copy lost {bench.lost} objects whose keys a filesystem cannot hold (rclone reports "
           f"them and goes on); speechvault restores every one and verifies it.\n\n")
    md += ("## Ratios and targets\n\nRatios of the medians; with several repeats, the range of the same ratio "
           "within each repeat.\n\n| measure | value | range | target | met |\n|---|---:|---:|---|---|\n")
    for i, (name, v, target, ok) in enumerate(checks):
        spread = [p[i] for p in per_repeat]
        rng = f"{min(spread):.2f}–{max(spread):.2f}" if len(spread) > 1 else ""
        md += f"| {name} | {v:.2f} | {rng} | {target} | {'' if ok is None else ('yes' if ok else '**no**')} |\n"
    md += "\n## Every step\n\n" + table(s.values()) + f"\n\n![chart]({Path(stem).name}.svg)\n"
    md += SETTINGS
    bars = [
        ("manual: rclone copy + pg_dump + restic", manual_first),
        ("rclone copy, 32 transfers", w["rclone copy, 32 transfers"]),
        ("restic from local disk", w["restic backup of the copy, first (local disk)"]),
        ("speechvault backup, first", full),
        ("manual + restic, unchanged", manual_unchanged),
        ("speechvault backup, unchanged", w["speechvault backup, unchanged"]),
        ("speechvault backup, 1% changed", w["speechvault backup, 1% changed"]),
        ("manual restore: rclone + psql", w["manual restore: rclone copy back + psql -f"]),
        ("speechvault restore, verify=server", w["speechvault restore, --verify=server"]),
        ("speechvault restore, verify=read-back", w["speechvault restore, --verify=read-back"]),
        ("speechvault restore, verify=none", w["speechvault restore, --verify=none"]),
    ]
    return md, svg_bars(f"{args.scale} sandbox on {bench.server_name}: wall time, median of {args.repeat}", bars)


def report_scaling(bench, args):
    s = summarize(bench.results)
    md = header(bench, args, "scaling")
    md += "\n" + table(v for v in s.values()) + "\n"
    rows = [v for v in s.values() if v["group"] not in ("setup",) and v["note"]]
    for group in sorted({v["group"] for v in s.values() if v["group"].startswith("large")}):
        ceiling = s.get((group, "ceiling: parallel reader"))
        first = s.get((group, "backup, first"))
        if ceiling and first:
            ratio = ceiling["wall"] / first["wall"]
            md += (f"\n{group}: the first backup reads at {ratio:.0%} of the parallel reader's rate "
                   f"(target >= 70%: {'met' if ratio >= 0.7 else '**not met**'}).\n")
    md += "\n## Per object\n\n| objects | step | µs per object | peak RSS |\n|---:|---|---:|---:|\n"
    for v in rows:
        n = int(v["note"])
        md += f"| {n} | {v['name']} | {v['wall'] / n * 1e6:.0f} | {v['rss']:.0f} MB |\n"
    md += SETTINGS
    bars = [(f"{v['group']}: {v['name']}", v["rss"]) for v in s.values() if v["group"] != "setup"]
    return md, svg_bars(f"scaling on {bench.server_name}: peak RSS", bars, unit="MB")


def header(bench, args, what):
    v = versions()
    return (f"# speechvault benchmark: {what}\n\n"
            f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- Machine: {machine()}\n- S3 server: {bench.server_name}\n"
            f"- Repeats: {args.repeat} (median, and the range when more than one)\n"
            f"- Versions: {v['speechvault']}; {v['restic']}; {v['rclone']}; {v['pg_dump']}\n"
            f"- Command: `scripts/bench.sh {' '.join(sys.argv[1:])}`\n")


SETTINGS = """
## Settings

- speechvault: defaults (local repository; a backup reads 64 objects ahead per bucket, no
  `--max-requests`, `--pg-connections` 4, no `--limit-rate`; `extra_verify` on; a restore sends
  64 objects at a time with up to 4 parts of a large object each, `--verify=server` unless
  named).
- Manual procedure: `rclone copy` with its defaults (4 transfers, 8 checkers) per bucket, except
  `--retries 1` (its default 3 repeats the whole copy when a key cannot be written to disk, which
  would only slow the alternative down), then
  `pg_dump` (plain SQL) per database; restic with its defaults (compression auto) on that copy.
- Tuned copy: `rclone copy --transfers 32 --checkers 32 --retries 1`, buckets only.
- Manual restore: `rclone copy` (defaults) into empty buckets, `psql -f` of each dump.
- Ceilings: the parallel reader is `speechvault sandbox read` (32 whole-object GETs at a time,
  bytes discarded); the disk is `dd bs=16M conv=fdatasync`; small PUTs are `speechvault sandbox
  add` (objects up to 8 KiB, 32 PUTs at a time).
- CPU is user + system time of the measured command and its children; S3 server CPU is the
  server process's (Garage, or the sandboxes' own servers) during the same step. Both share the
  machine's cores: a step the server spends more CPU on leaves less for the client.
"""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=["compare", "scaling"], default="compare")
    p.add_argument("--server", choices=["sandbox", "garage"], default="sandbox")
    p.add_argument("--quick", action="store_true", help="small scale, one repeat: for use while developing")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--scale", default=None, help="sandbox scale for compare (default medium; quick: small)")
    p.add_argument("--sizes", default=None, help="object counts for scaling (default 10000,100000,1000000; none: only the large object)")
    p.add_argument("--large", default=None, help="size of the large object for scaling (default 5GiB)")
    p.add_argument("--out", default=str(ROOT / "bench/results"))
    args = p.parse_args()
    args.scale = args.scale or ("small" if args.quick else "medium")
    sizes = args.sizes or ("10000,30000" if args.quick else "10000,100000,1000000")
    args.sizes = [] if sizes == "none" else [int(x) for x in sizes.split(",")]
    args.large = args.large or ("512MiB" if args.quick else "5GiB")
    if args.quick:
        args.repeat = 1
    bench = Bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.time()
        try:
            if args.mode == "compare":
                bench.compare()
            else:
                bench.scaling()
        except BaseException:
            # Keep what was measured before the failure.
            partial = out / "partial.json"
            partial.write_text(json.dumps(bench.results, indent=1))
            log(f"== failed; what was measured is in {partial}")
            raise
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        tag = f"{'quick-' if args.quick else ''}{args.mode}-{args.server}"
        stem = out / f"{stamp}-{tag}"
        md, svg = report_compare(bench, args, stem) if args.mode == "compare" else report_scaling(bench, args)
        if args.mode == "scaling":
            md += f"\n![chart]({stem.name}.svg)\n"
        md += f"\nWhole run: {time.time() - started:.0f} s.\n"
        stem.with_suffix(".md").write_text(md)
        stem.with_suffix(".svg").write_text(svg)
        stem.with_suffix(".json").write_text(json.dumps(bench.results, indent=1))
        print(md)
        log(f"== written: {stem}.md, .svg, .json")
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
