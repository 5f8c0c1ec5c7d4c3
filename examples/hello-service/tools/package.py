"""Build a reproducible source tarball of the service: sorted entries, fixed mtime,
owner and mode, so two builds of the same sources have the same digest."""

import gzip
import io
import os
import sys
import tarfile

EPOCH = 315532800  # 1980-01-01, as reproducible-builds tools use


def main(out):
    files = []
    for dirpath, dirnames, filenames in os.walk("app"):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        files.extend(os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".py"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(name="hello-service/" + path)
            with open(path, "rb") as f:
                data = f.read()
            info.size = len(data)
            info.mtime = EPOCH
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=EPOCH) as gz:
            gz.write(buf.getvalue())
    print("packaged %d files into %s" % (len(files), out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dist/hello-service.tar.gz")
