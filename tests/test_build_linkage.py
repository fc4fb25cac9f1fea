"""The extension uses the process's C++ runtime (GPU check, session 26).

On the GPU machine's image the compiler linked libstdc++ statically into
gan_ext._C: its own std::locale and iostream state mixed with the process's,
and every error message that formats a number (``p must be in [0, 1], got
-0.1``) segfaulted. setup.py now links the runtime torch has loaded when the
compiler would copy it in; these tests hold the built extension and that rule.
"""
import ast
import os
import stat
import subprocess
import sys

import pytest

from gan_ext import _backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF/Linux only")


def _runtime_libstdcxx():
    """setup.py's _runtime_libstdcxx, without running setup()."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_runtime_libstdcxx")
    ns = {"os": os, "sys": sys}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "setup.py", "exec"), ns)
    return ns["_runtime_libstdcxx"]


def _fake_compiler(tmp_path, libstdcxx_so: str, specs: str) -> str:
    path = tmp_path / "fake-c++"
    path.write_text("#!/bin/sh\n"
                    f'case "$1" in -print-file-name=*) echo "{libstdcxx_so}";; '
                    f'-dumpspecs) echo "{specs}";; esac\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@linux
def test_static_runtime_toolchain_links_the_loaded_libstdcxx(tmp_path, monkeypatch):
    fn = _runtime_libstdcxx()
    # gcc prints the bare name when it has no such file: it would link libstdc++.a.
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path, "libstdc++.so", ""))
    args = fn()
    assert len(args) == 1 and os.path.isabs(args[0]) and "/libstdc++.so" in args[0]
    assert os.path.exists(args[0])
    # Specs that force -static-libstdc++ get the same remedy.
    real = tmp_path / "libstdc++.so"
    real.write_text("")
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path, str(real), "%{static-libstdc++:x}"))
    assert fn() == args


@linux
def test_usual_toolchain_adds_nothing(tmp_path, monkeypatch):
    real = tmp_path / "libstdc++.so"
    real.write_text("")
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path, str(real), "*cc1plus:\n"))
    assert _runtime_libstdcxx()() == []
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert _runtime_libstdcxx()() == []


@linux
@pytest.mark.skipif(not _backend.extension_loaded, reason="gan_ext._C not built")
def test_built_extension_uses_the_shared_runtime():
    import gan_ext._C as ext

    readelf = subprocess.run(["readelf", "-W", "-d", "--dyn-syms", ext.__file__], capture_output=True,
                             text=True)
    if readelf.returncode != 0:
        pytest.skip(f"readelf unavailable: {readelf.stderr.strip()[:100]}")
    needed = [l for l in readelf.stdout.splitlines() if "(NEEDED)" in l]
    assert any("libstdc++.so" in l for l in needed), needed
    # A statically linked runtime exports its locale machinery.
    defined = [l for l in readelf.stdout.splitlines()
               if "_ZNSt6locale13_S_initializeEv" in l and " UND " not in l]
    assert not defined, defined
