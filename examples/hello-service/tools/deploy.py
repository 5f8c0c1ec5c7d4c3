"""Deploy the release tarball to a local environment directory: unpack it into a new
release directory and switch the `current` symlink atomically, keeping earlier releases
for rollback. Maestro has already verified the tarball's signature, provenance and SBOM
before this runs (`deploys:` in maestro.yaml)."""

import hashlib
import os
import sys
import tarfile


def main(tarball, env_dir):
    digest = hashlib.sha256(open(tarball, "rb").read()).hexdigest()
    release = os.path.join(env_dir, "releases", digest[:12])
    if not os.path.isdir(release):
        tmp = release + ".tmp"
        os.makedirs(tmp, exist_ok=True)
        with tarfile.open(tarball) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse unsafe members
                tar.extractall(tmp, filter="data")
            else:
                for m in tar.getmembers():
                    if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                        sys.exit(f"refusing tar member {m.name!r}")
                tar.extractall(tmp)
        os.replace(tmp, release)
    link = os.path.join(env_dir, "current")
    tmp_link = link + ".tmp"
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.relpath(release, env_dir), tmp_link)
    os.replace(tmp_link, link)
    print(f"deployed sha256:{digest} to {link} -> {os.readlink(link)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
