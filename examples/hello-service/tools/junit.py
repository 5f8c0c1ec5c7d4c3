"""Run unittest modules and write a JUnit XML report.

Usage: python3 tools/junit.py TEST_DIR --out REPORT.xml

Honours MAESTRO_SHARD_INDEX / MAESTRO_SHARD_COUNT (1-based): shard i of n runs every
n-th test module, so `shard: n` in maestro.yaml splits the suite.
"""

import argparse
import os
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []
        self._start = 0.0

    def startTest(self, test):  # noqa: N802
        self._start = time.monotonic()
        super().startTest(test)

    def _record(self, test, status, detail=None):
        self.records.append((test, status, detail, time.monotonic() - self._start))

    def addSuccess(self, test):  # noqa: N802
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):  # noqa: N802
        super().addFailure(test, err)
        self._record(test, "failure", err)

    def addError(self, test, err):  # noqa: N802
        super().addError(test, err)
        self._record(test, "error", err)

    def addSkip(self, test, reason):  # noqa: N802
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addSubTest(self, test, subtest, err):  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "failure" if issubclass(err[0], test.failureException) else "error"
            self._record(subtest, kind, err)


def shard(tests):
    index = int(os.environ.get("MAESTRO_SHARD_INDEX", "1"))
    count = int(os.environ.get("MAESTRO_SHARD_COUNT", "1"))
    return [t for i, t in enumerate(tests) if i % count == index - 1]


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tests")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    loader = unittest.TestLoader()
    discovered = loader.discover(args.tests, top_level_dir=".")
    modules = {}
    for test in flatten(discovered):
        modules.setdefault(type(test).__module__, []).append(test)
    selected = shard(sorted(modules))
    suite = unittest.TestSuite(t for m in selected for t in modules[m])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Recorder)
    result = runner.run(suite)

    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=args.tests, tests=str(len(result.records)))
    for test, status, detail, seconds in result.records:
        test_id = test.id()
        classname, _, name = test_id.rpartition(".")
        case = ET.SubElement(ts, "testcase", classname=classname, name=name, time="%.3f" % seconds)
        if status in ("failure", "error"):
            message = str(detail[1]).splitlines()[0] if str(detail[1]) else detail[0].__name__
            el = ET.SubElement(case, status, message=message, type=detail[0].__name__)
            el.text = result._exc_info_to_string(detail, test)
        elif status == "skipped":
            ET.SubElement(case, "skipped", message=str(detail))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    ET.ElementTree(root).write(args.out, encoding="utf-8", xml_declaration=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
