"""Every small example in a docstring is a test: each module's examples run here.

Modules are imported under their installed names (`paperchat.rag.text`), the names the code imports
them by. pytest's own --doctest-modules would import rag/text.py a second time as `rag.text`, a copy
whose classes are not the package's classes.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("paperchat.rag", "paperchat.ingest", "paperchat.ui", "paperchat.eval")


def modules() -> list[str]:
    """The packages and every module below them; `__main__` modules are left out (importing one runs it)."""
    names = []
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(path, package + ".")
                  if not info.name.endswith(".__main__")]
    # the fake OpenAI server's own example (tests/ is on sys.path, as for every test module)
    return names + ["llm_server"]


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(importlib.import_module(name)):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
