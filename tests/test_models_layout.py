"""The layout of gan_ext.nn and gan_ext.models (issue 14): the model files
import only public names and the old import paths still give the same
objects. The package-wide rules (no import cycle, the core imports nothing
from the application, no file past about 450 lines) are in test_structure.py."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import gan_ext

PACKAGE = Path(gan_ext.__file__).parent


def imports(source: str, module: str):
    """(imported module, [names]) for every import in ``source``, the source
    of the module named ``module`` (relative imports resolved against it)."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            yield base, [alias.name for alias in node.names]


def module_files(subpackage: str):
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        name = f"gan_ext.{subpackage}.{path.stem}"
        if path.stem == "__init__":
            name = f"gan_ext.{subpackage}.__init__"
        yield path, name


def test_imports_helper_resolves_relative_imports():
    src = ("from .. import ops\nfrom ..models import GAN\nfrom .norm_act import X\n"
           "import gan_ext.train.loop\nfrom . import layers\n")
    got = list(imports(src, "gan_ext.nn.fuse"))
    assert got == [("gan_ext", ["ops"]), ("gan_ext.models", ["GAN"]),
                   ("gan_ext.nn.norm_act", ["X"]), ("gan_ext.train.loop", []),
                   ("gan_ext.nn", ["layers"])]


@pytest.mark.parametrize("path,module", list(module_files("models")) + list(module_files("nn")),
                         ids=lambda v: getattr(v, "name", v))
def test_no_private_names_imported_across_modules(path, module):
    """A private helper one module needs from another becomes a public name
    of a shared module (models/_checks.py, networks.py, nn/_activation.py)."""
    private = [(target, n) for target, names in imports(path.read_text(), module)
               if target.startswith("gan_ext") for n in names if n.startswith("_")]
    assert private == []


@pytest.mark.parametrize("family", ["cyclegan", "pix2pix"])
def test_translation_families_do_not_import_each_other(family):
    other = {"cyclegan": "pix2pix", "pix2pix": "cyclegan"}[family]
    targets = [t for t, _ in imports((PACKAGE / "models" / f"{family}.py").read_text(),
                                     f"gan_ext.models.{family}")]
    assert f"gan_ext.models.{other}" not in targets


@pytest.mark.parametrize("old,name,new", [
    ("gan_ext.nn.layers", "BatchNormAct2d", "gan_ext.nn.norm_act"),
    ("gan_ext.nn.layers", "InstanceNormAct2d", "gan_ext.nn.norm_act"),
    ("gan_ext.nn.layers", "Conv2dNormAct", "gan_ext.nn.conv_norm_act"),
    ("gan_ext.nn.layers", "ConvTranspose2dNormAct", "gan_ext.nn.conv_norm_act"),
    ("gan_ext.nn.layers", "ActDropout", "gan_ext.nn.act_dropout"),
    ("gan_ext.models.cyclegan", "ResnetBlock", "gan_ext.models.networks"),
    ("gan_ext.models.cyclegan", "ResnetGenerator", "gan_ext.models.networks"),
    ("gan_ext.models.cyclegan", "NLayerDiscriminator", "gan_ext.models.networks"),
    ("gan_ext.models.cyclegan", "ImagePool", "gan_ext.models.image_pool"),
    ("gan_ext.models.cyclegan", "LinearDecay", "gan_ext.models.schedule"),
    ("gan_ext.models.cyclegan", "load_official_state_dict", "gan_ext.models.official"),
    ("gan_ext.models.pix2pix", "UnetSkipConnectionBlock", "gan_ext.models.networks"),
    ("gan_ext.models.pix2pix", "UnetGenerator", "gan_ext.models.networks"),
    ("gan_ext.models.pix2pix", "NLayerDiscriminator", "gan_ext.models.networks"),
    ("gan_ext.models", "ImagePool", "gan_ext.models.image_pool"),
    ("gan_ext.models", "UnetGenerator", "gan_ext.models.networks"),
    ("gan_ext.nn", "ActDropout", "gan_ext.nn.act_dropout"),
])
def test_old_import_paths_give_the_same_objects(old, name, new):
    old_module = importlib.import_module(old)
    assert name in old_module.__all__
    assert getattr(old_module, name) is getattr(importlib.import_module(new), name)


def test_nn_layers_reachable_as_attribute():
    assert gan_ext.nn.layers.BatchNormAct2d is gan_ext.nn.BatchNormAct2d
