"""Release notes for 10,000 commits: Maestro vs git-cliff, side by side.

Generates bench/work/release-repo with `git fast-import` (a v1.0.0 tag, then N commits:
feat/fix/perf with scopes, docs/chore/refactor, a breaking change every 500, a
non-conventional message every 37, and a PR merged with a merge commit every 50), installs
git-cliff into bench/work/cliff-venv from PyPI, and times both computing the next version and
the notes of everything since v1.0.0 (median of --repeat runs, after one warm-up each).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
CLIFF_VERSION = "2.14.2"

TYPES = ["feat", "fix", "perf", "docs", "chore", "refactor", "fix", "feat"]
SCOPES = ["api", "console", "store", "engine", None]


def message(i: int) -> str:
    if i % 37 == 0:
        return f"update things {i}"
    kind = TYPES[i % len(TYPES)]
    scope = SCOPES[i % len(SCOPES)]
    head = kind + (f"({scope})" if scope else "")
    if i % 500 == 0:
        return f"{head}!: change {i} breaks the old way\n\nBREAKING CHANGE: the old way {i} is gone"
    suffix = f" (#{i})" if i % 7 == 0 else ""
    return f"{head}: change number {i}{suffix}"


def generate(repo: Path, n: int) -> None:
    marker = repo / ".generated"
    if marker.exists() and marker.read_text() == str(n):
        return
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    lines = []
    t = 1_780_000_000

    def commit(mark, msg, parent, merge=None, ref="refs/heads/main"):
        data = msg.encode()
        out = [f"commit {ref}", f"mark :{mark}",
               f"author Dev {mark % 13} <dev{mark % 13}@example.com> {t + mark} +0000",
               f"committer Dev <dev@example.com> {t + mark} +0000",
               f"data {len(data)}"]
        lines.append("\n".join(out).encode() + b"\n" + data + b"\n")
        if parent:
            lines.append(f"from :{parent}\n".encode())
        if merge:
            lines.append(f"merge :{merge}\n".encode())
        lines.append(f"M 644 inline f{mark % 100}.txt\ndata {len(str(mark))}\n{mark}\n".encode())

    commit(1, "chore: initial", None)
    lines.append(b"reset refs/tags/v1.0.0\nfrom :1\n\n")
    mark, parent = 1, 1
    for i in range(1, n + 1):
        mark += 1
        if i % 50 == 0:
            # a side commit on a branch, merged as a PR
            side = mark
            commit(side, message(i), parent, ref="refs/heads/side")
            mark += 1
            commit(mark, f"Merge pull request #{10_000 + i} from acme/side-{i}", parent, merge=side)
        else:
            commit(mark, message(i), parent)
        parent = mark
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=b"".join(lines), check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
    marker.write_text(str(n))


def cliff() -> Path:
    venv = WORK / "cliff-venv"
    exe = venv / "bin" / "git-cliff"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"git-cliff=={CLIFF_VERSION}"], check=True)
    return exe


def timed(cmd, cwd, repeat):
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        runs.append(time.perf_counter() - t)
        if r.returncode not in (0,):
            sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return statistics.median(runs), r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    repo = WORK / "release-repo"
    generate(repo, a.commits)
    maestro = Path(os.environ.get("MAESTRO_BIN", ROOT / "target" / "release" / "maestro"))
    git_cliff = cliff()
    m, out = timed([str(maestro), "release", "plan", "--json"], repo, a.repeat)
    import json
    plan = json.loads(out)
    # Everything `release cut` computes before it sends the release to the conductor: the
    # plan, plus the paths changed since the last tag (for the migration gate).
    k, kout = timed([str(maestro), "release", "cut", "--dry-run", "--service", "bench",
                     "--artifact", "bench.tar.gz", "--reason", "bench"], repo, a.repeat)
    cut = json.loads(kout)
    c, cout = timed([str(git_cliff), "--unreleased", "--bump"], repo, a.repeat)
    cliff_version = next((l for l in cout.decode().splitlines() if l.startswith("## ")), "?")
    print(f"commits since v1.0.0: {plan['notes']['commits']} ({plan['notes']['skipped']['merges']} merges)")
    print(f"{'':34} {'Maestro':>10} {'git-cliff':>10} {'ratio':>7}")
    print(f"{'next version + notes (median, s)':34} {m:10.3f} {c:10.3f} {m / c:7.2f}")
    print(f"{'release cut, local part (median, s)':34} {k:10.3f} {c:10.3f} {k / c:7.2f}")
    print(f"release cut: {cut['version']}, {len(cut['changed_paths'])} changed paths")
    print(f"versions: Maestro {plan['version']}, git-cliff {cliff_version}")
    print(f"Maestro notes: {sum(len(s['entries']) for s in plan['notes']['sections'])} entries, "
          f"{len(plan['notes']['breaking'])} breaking, {len(plan['markdown'])} bytes of Markdown")


if __name__ == "__main__":
    main()
