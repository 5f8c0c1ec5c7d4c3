#!/usr/bin/env python3
"""Supply-chain benchmark: SBOM, SCA and secret scanning, Maestro side by side with the
reference tools that install from the package registries (see bench/README.md)."""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "work")
DATA = os.path.join(HERE, "data")


def timed(cmd, cwd=None, env=None, ok=(0,)):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode not in ok:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return dt


def median(cmd, repeat, **kw):
    timed(cmd, **kw)  # warm-up: page cache, downloads of the reference tools
    return statistics.median(timed(cmd, **kw) for _ in range(repeat))


def components(path):
    with open(path) as f:
        return len(json.load(f).get("components", []))


def tree_bytes(root):
    n = 0
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                n += os.path.getsize(p)
    return n


def osv_db(path, n, names):
    """A synthetic OSV directory: n advisories, a quarter of them about packages that are
    in the benchmark lockfiles, the rest about other names, with SemVer ranges."""
    if os.path.isdir(path) and len(os.listdir(path)) >= 3:
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(7)
    for eco in ("npm", "crates.io", "PyPI"):
        os.makedirs(os.path.join(path, eco))
    for i in range(n):
        eco, pool = rng.choice(names)
        name = rng.choice(pool) if rng.random() < 0.25 else f"pkg-{i}-{rng.randrange(10**6)}"
        fixed = f"{rng.randrange(1, 30)}.{rng.randrange(20)}.{rng.randrange(20)}"
        adv = {
            "schema_version": "1.6.0",
            "id": f"BENCH-{i:06d}",
            "modified": "2026-11-01T00:00:00Z",
            "published": "2026-10-01T00:00:00Z",
            "summary": "synthetic advisory",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{
                "package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "SEMVER" if eco != "PyPI" else "ECOSYSTEM",
                            "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            }],
        }
        with open(os.path.join(path, eco, f"BENCH-{i:06d}.json"), "w") as f:
            json.dump(adv, f)


def secrets_corpus(src, dst, limit):
    """The first crates of the cargo registry sources (sorted), up to `limit` bytes;
    crates over 4 MiB (vendored C libraries) are left out so the mix stays source code."""
    if os.path.isdir(dst):
        return
    os.makedirs(dst)
    total = 0
    for name in sorted(os.listdir(src)):
        s = os.path.join(src, name)
        if not os.path.isdir(s):
            continue
        size = tree_bytes(s)
        if size > 4 << 20:
            continue
        shutil.copytree(s, os.path.join(dst, name), symlinks=True)
        total += size
        if total >= limit:
            break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maestro", required=True)
    ap.add_argument("--cargo-cyclonedx", required=True)
    ap.add_argument("--cyclonedx-npm", required=True)
    ap.add_argument("--detect-secrets", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--advisories", type=int, default=20000)
    ap.add_argument("--corpus-mib", type=int, default=16)
    a = ap.parse_args()
    m = a.maestro
    rows = []

    # SBOM
    cargo_dir = os.path.join(DATA, "cargo-service")
    npm_dir = os.path.join(WORK, "npm-web")
    shutil.rmtree(npm_dir, ignore_errors=True)
    shutil.copytree(os.path.join(DATA, "npm-web"), npm_dir)
    out = os.path.join(WORK, "out")
    os.makedirs(out, exist_ok=True)
    for label, lock, ref_cmd, ref_out, ref_name, cwd in [
        ("SBOM Cargo.lock", os.path.join(cargo_dir, "Cargo.lock"),
         [a.cargo_cyclonedx, "cyclonedx", "--manifest-path", os.path.join(cargo_dir, "Cargo.toml"), "--format", "json"],
         os.path.join(cargo_dir, "bench-service.cdx.json"), "cargo-cyclonedx 0.5.9", None),
        ("SBOM package-lock.json", os.path.join(npm_dir, "package-lock.json"),
         [a.cyclonedx_npm, "--package-lock-only", "--ignore-npm-errors", "--output-file", os.path.join(out, "npm-ref.cdx.json")],
         os.path.join(out, "npm-ref.cdx.json"), "cyclonedx-npm 6.0.1", npm_dir),
    ]:
        mine_out = os.path.join(out, "maestro.cdx.json")
        t_m = median([m, "sbom", lock, "-o", mine_out], a.repeat)
        n_m = components(mine_out)
        t_r = median(ref_cmd, a.repeat, cwd=cwd)
        n_r = components(ref_out)
        if ref_out.startswith(cargo_dir):
            os.remove(ref_out)
        rows.append((label, f"{t_m*1000:.0f} ms ({n_m} components, {n_m/t_m:,.0f}/s)",
                     f"{t_r*1000:.0f} ms ({n_r} components) {ref_name}", f"{t_r/t_m:.0f}× faster"))

    # SCA: both lockfiles against a synthetic OSV directory
    def names(lock_json):
        with open(lock_json) as f:
            d = json.load(f)
        return sorted({k.split("node_modules/")[-1] for k in d["packages"] if k})

    def crate_names(lock):
        return sorted({l.split('"')[1] for l in open(lock) if l.startswith("name = ")})

    db = os.path.join(WORK, f"osv-{a.advisories}")
    osv_db(db, a.advisories, [("npm", names(os.path.join(npm_dir, "package-lock.json"))),
                              ("crates.io", crate_names(os.path.join(cargo_dir, "Cargo.lock")))])
    pkgs = components_count = 0
    for lock in (os.path.join(cargo_dir, "Cargo.lock"), os.path.join(npm_dir, "package-lock.json")):
        subprocess.run([m, "sbom", lock, "-o", os.path.join(out, "n.json")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pkgs += components(os.path.join(out, "n.json"))
    t_sca = median([m, "sca", os.path.join(cargo_dir, "Cargo.lock"), os.path.join(npm_dir, "package-lock.json"),
                    "--db", db, "--fail-on", "none", "--max-db-age", "99999d"], a.repeat, ok=(0, 1))
    rows.append((f"SCA {pkgs} packages × {a.advisories:,} advisories", f"{t_sca*1000:.0f} ms ({pkgs/t_sca:,.0f} packages/s, "
                 f"{a.advisories/t_sca:,.0f} advisories/s loaded)", "no OSV scanner installs from the registries here", "—"))

    # Secrets: one core, default rules
    registry = os.path.expanduser("~/.cargo/registry/src")
    src = os.path.join(registry, sorted(os.listdir(registry))[0])
    corpus = os.path.join(WORK, f"secrets-corpus-{a.corpus_mib}")
    secrets_corpus(src, corpus, a.corpus_mib << 20)
    size = tree_bytes(corpus)
    t_ms = median([m, "secrets", corpus, "--threads", "1", "--no-ignore"], a.repeat, ok=(0, 1))
    t_ds = median([a.detect_secrets, "scan", "--all-files", corpus], 1)
    rows.append((f"secrets, {size/1e6:.1f} MB corpus, 1 thread", f"{t_ms*1000:.0f} ms ({size/1e6/t_ms:.0f} MB/s)",
                 f"{t_ds*1000:.0f} ms ({size/1e6/t_ds:.1f} MB/s) detect-secrets 1.5.0", f"{t_ds/t_ms:.0f}× faster"))
    all_bytes = tree_bytes(registry)
    t_all = median([m, "secrets", registry, "--threads", "1", "--no-ignore"], 1, ok=(0, 1))
    rows.append((f"secrets, whole cargo registry ({all_bytes/1e6:.0f} MB), 1 thread",
                 f"{t_all:.2f} s ({all_bytes/1e6/t_all:.0f} MB/s)", "—", "target ≥ 100 MB/s"))

    w = [max(len(r[i]) for r in rows + [("scenario", "Maestro", "reference", "ratio")]) for i in range(4)]
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(("scenario", "Maestro", "reference", "ratio"))))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
