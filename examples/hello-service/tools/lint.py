"""A small, real linter for the example: syntax, style and a few bug patterns.

Checks: the file parses; lines at most 100 characters; no tabs or trailing whitespace;
no bare `except:`; no unused imports; no mutable default arguments. Prints
`path:line:col: CODE message` and exits 1 when anything is found.
"""

import ast
import os
import sys

MAX_LINE = 100


def python_files(paths):
    for root in paths:
        if os.path.isfile(root):
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)


def used_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            base = node
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
    return names


def check(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for no, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            problems.append((no, MAX_LINE + 1, "E501", "line longer than %d characters" % MAX_LINE))
        if "\t" in line:
            problems.append((no, line.index("\t") + 1, "W191", "tab character"))
        if line != line.rstrip():
            problems.append((no, len(line.rstrip()) + 1, "W291", "trailing whitespace"))
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as err:
        return problems + [(err.lineno or 1, err.offset or 1, "E999", "syntax error: %s" % err.msg)]
    used = used_names(tree)
    exported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__all__":
                    exported.update(getattr(e, "value", "") for e in node.value.elts)
    is_init = os.path.basename(path) == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            problems.append((node.lineno, node.col_offset + 1, "E722", "bare `except:`"))
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not is_init:
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name not in used and name not in exported:
                    message = "`%s` imported but unused" % name
                    problems.append((node.lineno, node.col_offset + 1, "F401", message))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in node.args.defaults + node.args.kw_defaults:
                if isinstance(default, (ast.List, ast.Dict, ast.Set)):
                    where = (default.lineno, default.col_offset + 1)
                    problems.append(where + ("B006", "mutable default argument"))
    return sorted(problems)


def main(argv):
    paths = argv or ["."]
    count = 0
    files = 0
    for path in python_files(paths):
        files += 1
        for line, col, code, message in check(path):
            print("%s:%d:%d: %s %s" % (path, line, col, code, message))
            count += 1
    print("lint: %d file(s), %d problem(s)" % (files, count))
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
