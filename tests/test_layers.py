"""The layers of ARCHITECTURE.rst hold: import-linter keeps setup.cfg's contract, and the page
names the same modules in the same layers as the contract."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def contract_layers() -> list[set[str]]:
    """setup.cfg's layers, bottom up, each as a set of module names."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["importlinter:contract:layers"]["layers"].splitlines() if line.strip()]
    return [set(re.split(r"\s*[|:]\s*", line)) for line in reversed(lines)]


def architecture_layers() -> list[set[str]]:
    """ARCHITECTURE.rst's numbered layers, each as the set of modules its entries name."""
    text = (ROOT / "ARCHITECTURE.rst").read_text()
    sections = re.split(r"^(\d+)\. .*$", text, flags=re.MULTILINE)
    layers = []
    for number, body in zip(sections[1::2], sections[2::2]):
        assert int(number) == len(layers), "layers are numbered from 0 in order"
        layers.append(set(re.findall(r"^   ``(\w+)(?:\.py|/)``$", body, flags=re.MULTILINE)))
    return layers


def test_import_linter_keeps_the_contract() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--no-cache", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ kept, 0 broken", result.stdout)


def test_the_architecture_page_names_the_contract_s_layers() -> None:
    assert architecture_layers() == contract_layers()


def test_every_module_is_in_a_layer() -> None:
    package = ROOT / "flask_rtbroker"
    modules = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {path.parent.name for path in package.glob("*/__init__.py")}
    assert set().union(*contract_layers()) == modules


def subpackage_contracts() -> dict[str, list[str]]:
    """setup.cfg's contract of each subpackage: its name -> its modules, bottom layer first."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    contracts = {}
    for section in config.sections():
        container = config[section].get("containers", "")
        if section.startswith("importlinter:contract:") and container.startswith("flask_rtbroker."):
            lines = [line.strip() for line in config[section]["layers"].splitlines() if line.strip()]
            contracts[container.split(".", 1)[1]] = [
                name for line in reversed(lines) for name in re.split(r"\s*[|:]\s*", line)]
    return contracts


def architecture_subpackage_modules(subpackage: str) -> list[str]:
    """The modules ARCHITECTURE.rst lists under ``subpackage/``, in order."""
    text = (ROOT / "ARCHITECTURE.rst").read_text()
    body = re.search(rf"^   ``{subpackage}/``\n((?:(?:       .*)?\n)+)", text, flags=re.MULTILINE)
    assert body is not None, f"ARCHITECTURE.rst has no entry for {subpackage}/"
    return re.findall(r"^       ``(\w+)\.py``$", body.group(1), flags=re.MULTILINE)


def test_the_architecture_page_lists_each_contracted_subpackage() -> None:
    contracts = subpackage_contracts()
    assert {"protocol", "runtime", "testing"} <= set(contracts)
    for subpackage, modules in contracts.items():
        assert architecture_subpackage_modules(subpackage) == modules
        files = {path.stem for path in (ROOT / "flask_rtbroker" / subpackage).glob("*.py") if path.stem != "__init__"}
        assert set(modules) == files
