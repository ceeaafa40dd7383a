"""The package root: every public name resolves to the object its room defines, and importing the root (or
a light module such as mumo.errors) does not import torch."""

import subprocess
import sys

import pytest

import mumo


def test_importing_the_root_and_its_errors_does_not_import_torch():
    code = (
        "import sys, mumo, mumo.errors, mumo.version\n"
        "assert mumo.__version__ == mumo.version.__version__\n"
        "assert mumo.MumoError is mumo.errors.MumoError\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'mumo.models') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("name", mumo.__all__)
def test_every_public_name_resolves_to_its_defining_module(name):
    value = getattr(mumo, name)
    if name == "__version__":
        assert isinstance(value, str)
        return
    module = sys.modules[mumo._EXPORTS[name]]
    assert value is getattr(module, name)
    assert name in dir(mumo)


def test_load_is_the_inference_loader_and_star_import_gives_the_public_api():
    import mumo.inference
    import mumo.models

    assert mumo.load is mumo.inference.load and mumo.create_model is mumo.models.create_model
    namespace: dict = {}
    exec("from mumo import *", namespace)
    assert set(mumo.__all__) <= set(namespace)


def test_subpackages_are_reachable_as_attributes_and_a_typo_is_an_attribute_error():
    assert mumo.train.load_recipe is not None  # `import mumo` alone used to make mumo.<room> reachable
    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        mumo.create_modle  # noqa: B018
    with pytest.raises(AttributeError):
        mumo._private  # noqa: B018


def test_all_lists_exactly_the_lazy_names_and_the_version():
    assert set(mumo.__all__) == {*mumo._EXPORTS, "__version__"}
    assert len(mumo.__all__) == len(set(mumo.__all__))
