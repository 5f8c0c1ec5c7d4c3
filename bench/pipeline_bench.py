#!/usr/bin/env python3
"""Pipeline engine benchmark: 1,000 trivial jobs in a DAG, side by side in one run.

- Maestro cold (empty cache) vs `make -j2` on the same graph (Makefile)
- Maestro fully cached vs `turbo run build` fully cached on the same graph (npm workspaces)

Usage: bench/run [--jobs 1000] [--repeat 7]   (see bench/README.md)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def deps(i):
    """Hubs every 10 jobs form a chain; the 9 jobs after a hub fan out from it; every
    third job also needs its predecessor (a second chain through the fan-out)."""
    if i == 0:
        return []
    if i % 10 == 0:
        return [i - 10]
    d = [i - i % 10]
    if i % 3 == 0 and (i - 1) % 10 != 0:
        d.append(i - 1)
    return d


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def generate(root, n):
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    lines = ["version: 1", "name: bench", "jobs:"]
    make = [".PHONY: all", "all: " + " ".join("pkgs/p%d/out.txt" % i for i in range(n)), ""]
    for i in range(n):
        write(os.path.join(root, "pkgs/p%d/src.txt" % i), "%d\n" % i)
        lines += [
            "  p%d:" % i,
            "    run: cat pkgs/p%d/src.txt > pkgs/p%d/out.txt" % (i, i),
            "    inputs: [pkgs/p%d/src.txt]" % i,
            "    outputs: [pkgs/p%d/out.txt]" % i,
        ]
        if deps(i):
            lines.append("    needs: [%s]" % ", ".join("p%d" % d for d in deps(i)))
        prereq = ["pkgs/p%d/src.txt" % i] + ["pkgs/p%d/out.txt" % d for d in deps(i)]
        make += ["pkgs/p%d/out.txt: %s" % (i, " ".join(prereq)),
                 "\tcat pkgs/p%d/src.txt > pkgs/p%d/out.txt" % (i, i), ""]
        pkg = {"name": "p%d" % i, "version": "1.0.0", "private": True,
               "scripts": {"build": "cat src.txt > out.txt"},
               "dependencies": {"p%d" % d: "1.0.0" for d in deps(i)}}
        write(os.path.join(root, "pkgs/p%d/package.json" % i), json.dumps(pkg, indent=1))
    write(os.path.join(root, "maestro.yaml"), "\n".join(lines) + "\n")
    write(os.path.join(root, "Makefile"), "\n".join(make))
    npm_version = subprocess.run(["npm", "--version"], capture_output=True, text=True).stdout.strip()
    write(os.path.join(root, "package.json"), json.dumps({
        "name": "bench", "private": True, "workspaces": ["pkgs/*"],
        "packageManager": "npm@%s" % (npm_version or "10.0.0")}, indent=1))
    write(os.path.join(root, "turbo.json"), json.dumps({
        "tasks": {"build": {"dependsOn": ["^build"], "inputs": ["src.txt"], "outputs": ["out.txt"]}}},
        indent=1))
    write(os.path.join(root, ".gitignore"), ".maestro/\n.turbo/\nnode_modules/\npkgs/*/out.txt\n")


def clean_outputs(root, n):
    for i in range(n):
        p = os.path.join(root, "pkgs/p%d/out.txt" % i)
        if os.path.exists(p):
            os.remove(p)


def timed(cmd, cwd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), proc.stderr.decode()[-2000:]))
    return elapsed


def median_of(repeat, prepare, cmd, cwd, env=None):
    times = []
    for _ in range(repeat):
        prepare()
        times.append(timed(cmd, cwd, env))
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--maestro", required=True)
    ap.add_argument("--turbo", required=True)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    args = ap.parse_args()
    n, r = args.jobs, args.repeat
    root = os.path.join(args.work, "repo")
    generate(root, n)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"], cwd=root, check=True)
    env = dict(os.environ, CI="true", NO_COLOR="1", TURBO_TELEMETRY_DISABLED="1", DO_NOT_TRACK="1",
               TURBO_NO_UPDATE_NOTIFIER="1")
    maestro = [args.maestro, "run", "--log-format", "plain", "-j", "2"]

    # Cold = an empty, never-used home (store and cache), as on a fresh clone. Old homes
    # are deleted after measuring, so no run starts right after deleting thousands of
    # files (which slows file creation on ext4 and would measure the file system).
    homes = os.path.join(args.work, "homes")
    shutil.rmtree(homes, ignore_errors=True)
    cold_runs = []

    def cold_maestro():
        clean_outputs(root, n)
        home = os.path.join(homes, str(len(cold_runs)))
        cold_runs.append(home)
        cmd_cold[-1] = home

    cmd_cold = maestro + ["--home", ""]
    make_med, make_min = median_of(r, lambda: clean_outputs(root, n), ["make", "-j2", "-s"], root, env)
    cold_med, cold_min = median_of(r, cold_maestro, cmd_cold, root, env)
    shutil.rmtree(homes, ignore_errors=True)
    shutil.rmtree(os.path.join(root, ".maestro"), ignore_errors=True)
    # Fully cached: outputs present, every job a hit.
    timed(maestro, root, env)
    cached_med, cached_min = median_of(r, lambda: None, maestro, root, env)
    # Fully cached after the outputs were deleted: every output restored from the cache.
    restore_med, _ = median_of(r, lambda: clean_outputs(root, n), maestro, root, env)

    turbo = [args.turbo, "run", "build", "--concurrency=2"]
    shutil.rmtree(os.path.join(root, ".turbo"), ignore_errors=True)
    clean_outputs(root, n)
    turbo_cold = timed(turbo, root, env)  # populates turbo's cache (each task runs through npm)
    turbo_med, turbo_min = median_of(r, lambda: None, turbo, root, env)
    turbo_restore_med, _ = median_of(r, lambda: clean_outputs(root, n), turbo, root, env)

    ms = lambda s: "%.0f ms" % (s * 1000)
    print()
    print("pipeline benchmark: %d jobs in a DAG, 2 parallel, median of %d runs" % (n, r))
    print()
    print("| scenario | Maestro | reference | ratio (Maestro / reference) | target |")
    print("|---|---:|---:|---:|---|")
    print("| cold, empty cache vs `make -j2` | %s | %s | %.2f× | ≤ 1.3× |" % (ms(cold_med), ms(make_med), cold_med / make_med))
    print("| fully cached vs `turbo run` fully cached | %s | %s | %.2f× (%.1f× faster) | ≤ 150 ms and ≥ 1.5× faster |" % (
        ms(cached_med), ms(turbo_med), cached_med / turbo_med, turbo_med / cached_med))
    print("| fully cached, outputs deleted (all restored) vs turbo | %s | %s | %.2f× (%.1f× faster) | |" % (
        ms(restore_med), ms(turbo_restore_med), restore_med / turbo_restore_med, turbo_restore_med / restore_med))
    print()
    print("best runs: make %s, Maestro cold %s, Maestro cached %s, turbo cached %s; turbo's own cold run took %.1f s"
          % (ms(make_min), ms(cold_min), ms(cached_min), ms(turbo_min), turbo_cold))
    ok_cold = cold_med <= 1.3 * make_med
    ok_cached = cached_med <= 0.150 and turbo_med / cached_med >= 1.5
    print("targets: cold %s, cached %s" % ("met" if ok_cold else "MISSED", "met" if ok_cached else "MISSED"))


if __name__ == "__main__":
    main()
